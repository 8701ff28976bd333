"""Check a raw Rekognition JSON response against botocore's output shape: types, enums,
patterns, lengths, required members, and no member the model does not define."""

from __future__ import annotations

import re
from typing import Any


def shape_errors(shape: Any, value: Any, path: str = "$") -> list[str]:
    t, meta, errs = shape.type_name, shape.metadata, []
    if t == "structure":
        if not isinstance(value, dict):
            return [f"{path}: expected an object"]
        errs += [f"{path}.{k}: not in the model's {shape.name}" for k in value if k not in shape.members]
        errs += [f"{path}.{k}: required by {shape.name}" for k in shape.required_members if k not in value]
        for k, v in value.items():
            if k in shape.members:
                errs += shape_errors(shape.members[k], v, f"{path}.{k}")
    elif t == "list":
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        for i, v in enumerate(value):
            errs += shape_errors(shape.member, v, f"{path}[{i}]")
    elif t == "map":
        if not isinstance(value, dict):
            return [f"{path}: expected a map"]
        for k, v in value.items():
            errs += shape_errors(shape.value, v, f"{path}[{k}]")
    elif t == "string":
        if not isinstance(value, str):
            return [f"{path}: expected a string, got {value!r}"]
        if "enum" in meta and value not in meta["enum"]:
            errs.append(f"{path}: {value!r} is not one of {shape.name}'s values")
        if "pattern" in meta and not re.fullmatch(meta["pattern"].strip("^$"), value):
            errs.append(f"{path}: {value!r} does not match {meta['pattern']}")
        if len(value) < meta.get("min", 0) or len(value) > meta.get("max", 1 << 30):
            errs.append(f"{path}: length {len(value)} outside {shape.name}'s limits")
    elif t in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            return [f"{path}: expected an integer, got {value!r}"]
        if value < meta.get("min", -(1 << 63)) or value > meta.get("max", 1 << 63):
            errs.append(f"{path}: {value} outside {shape.name}'s limits")
    elif t in ("float", "double"):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return [f"{path}: expected a number, got {value!r}"]
        if value < meta.get("min", float("-inf")) or value > meta.get("max", float("inf")):
            errs.append(f"{path}: {value} outside {shape.name}'s limits")
    elif t == "boolean":
        if not isinstance(value, bool):
            errs.append(f"{path}: expected a boolean")
    elif t == "timestamp":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            errs.append(f"{path}: a JSON 1.1 timestamp is epoch seconds, got {value!r}")
    elif t == "blob":
        if not isinstance(value, str):
            errs.append(f"{path}: a blob is base64 text")
    return errs
