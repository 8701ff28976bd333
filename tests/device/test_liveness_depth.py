"""FLAT_FACE on synthetic depth maps (no depth camera here) and the IR path with grey frames."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from facelink.device.camera import is_finite_source, open_frames
from facelink.device.camera_realsense import RGBDPixels
from facelink.device.liveness import LivenessChecker
from facelink.device.liveness_depth import FLAT_FACE, NO_DEPTH, DepthRelief, face_relief
from facelink.device.liveness_frozen import LIVE, PENDING, SPOOF

SIZE = 240
BOX = np.array([60.0, 50.0, 120.0, 150.0])


def grid():
    return np.meshgrid(np.arange(SIZE, dtype=np.float64), np.arange(SIZE, dtype=np.float64))


def noisy(depth: np.ndarray, rng, sigma_mm: float = 1.5) -> np.ndarray:
    return (depth + rng.normal(0, sigma_mm, depth.shape)).astype(np.float32)


def plane(rng) -> np.ndarray:
    return noisy(np.full((SIZE, SIZE), 500.0), rng)


def tilted_plane(rng) -> np.ndarray:
    x, y = grid()
    return noisy(500.0 + 0.6 * (x - SIZE / 2) + 0.3 * (y - SIZE / 2), rng)  # ~30 deg yaw


def bent_sheet(rng) -> np.ndarray:
    """A print bent around a vertical axis in the hand: 25 mm sag across the face."""
    x, _ = grid()
    return noisy(500.0 - 25.0 * (1 - ((x - SIZE / 2) / 60.0) ** 2).clip(-3, 1), rng)


def mesh_face(face_mesh, engine, photo: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """A face-shaped depth map from the face mesh's z on a real photo (real proportions)."""
    import matplotlib.tri as mtri

    det = engine.detect(photo)[0].detection
    crop = face_mesh.crop(photo, det.box, det.landmarks)
    pts, _ = face_mesh.points(crop)
    mm_per_px = 140.0 / float(np.ptp(pts[:, 0]))  # the mesh spans a ~14 cm wide face
    interp = mtri.LinearTriInterpolator(mtri.Triangulation(pts[:, 0], pts[:, 1]), pts[:, 2] * mm_per_px)
    x, y = np.meshgrid(np.arange(192.0), np.arange(192.0))
    z = np.ma.filled(interp(x, y), np.nan)
    depth = np.where(np.isfinite(z), 500.0 + z, 0.0)
    lo, hi = pts[:, :2].min(axis=0), pts[:, :2].max(axis=0)
    box = np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]])
    return noisy(depth, rng).clip(0, None), box


@pytest.mark.parametrize("surface", [plane, tilted_plane, bent_sheet])
def test_flat_and_bent_surfaces_are_flat_face(surface):
    rng = np.random.default_rng(1)
    relief, _ = face_relief(surface(rng), BOX)
    assert relief < 20.0
    check = DepthRelief()
    state = check.new_state()
    assert [check.observe(state, surface(rng), BOX) for _ in range(3)][-1] == (SPOOF, FLAT_FACE)


def cut_out_print(rng, behind_mm: float, size: float) -> np.ndarray:
    """A flat print at 500 mm cut out along the face's outline (an oval ``size`` times the face
    box), with whatever is ``behind_mm`` further back around it."""
    x, y = grid()
    cx, cy, w, h = BOX[0] + BOX[2] / 2, BOX[1] + BOX[3] / 2, BOX[2], BOX[3]
    oval = ((x - cx) / (0.5 * size * w)) ** 2 + ((y - cy) / (0.55 * size * h)) ** 2 <= 1.0
    return noisy(np.where(oval, 500.0, 500.0 + behind_mm), rng)


@pytest.mark.parametrize("behind_mm,size", [(1000.0, 1.0), (80.0, 0.7)])
def test_a_print_cut_out_along_the_face_is_flat_face(behind_mm, size):
    """With a wall 1 m behind, the box's corners fell on the wall and measured 172 mm of
    "relief" (GRANTED); now only the face's depth band counts. A smaller cut-out held 80 mm in
    front of something (a body, another face): the step is relief (over 20 mm), but the nose
    does not stand out of the cheeks (both on the print)."""
    rng = np.random.default_rng(4)
    relief, nose = face_relief(cut_out_print(rng, behind_mm, size), BOX)
    assert abs(nose) < 2.0, nose
    check = DepthRelief()
    state = check.new_state()
    frames = [cut_out_print(rng, behind_mm, size) for _ in range(3)]
    assert [check.observe(state, f, BOX) for f in frames][-1] == (SPOOF, FLAT_FACE)


@pytest.fixture(scope="module")
def face_mesh(models_dir):
    pytest.importorskip("ai_edge_litert", reason="TFLite runtime not installed")
    from facelink.device.liveness import load_face_mesh
    from facelink.models.provision import provision

    provision(models_dir, tflite=True)
    return load_face_mesh(models_dir, threads=2)


@pytest.mark.parametrize("name", ["obama/1.jpg", "feat_man/photo.jpg", "biden/1.jpg"])
def test_face_shaped_relief_is_live(engine, face_mesh, faces_dir, name):
    rng = np.random.default_rng(2)
    depth, box = mesh_face(face_mesh, engine, cv2.imread(str(faces_dir / "people" / name)), rng)
    relief, nose = face_relief(depth, box)
    assert relief >= 15.0 and nose > 5.0, (relief, nose)
    check = DepthRelief()
    state = check.new_state()
    assert check.observe(state, depth, box) == (LIVE, None)
    assert check.report(state)["relief_mm"] >= 15.0
    walled = np.where(depth > 0, depth, np.float32(1500.0))  # a wall 1 m behind the face: still live
    state = check.new_state()
    assert check.observe(state, walled, box) == (LIVE, None)


def test_no_depth_is_never_live():
    check = DepthRelief()
    state = check.new_state()
    assert check.observe(state, None, BOX) == (PENDING, NO_DEPTH)
    assert check.observe(state, np.zeros((SIZE, SIZE), np.float32), BOX) == (PENDING, NO_DEPTH)
    assert check.report(state)["no_depth"] == 2


def test_depth_travels_with_the_frame_into_the_checker(engine, faces_dir):
    """An RGB-D frame (as camera_realsense yields) reaches the FLAT_FACE check."""
    photo = cv2.imread(str(faces_dir / "people/obama/1.jpg"))
    face = engine.detect(photo)[0]
    pixels = RGBDPixels(photo, np.full(photo.shape[:2], 600.0, np.float32))  # a print on a plane
    checker = LivenessChecker(depth=DepthRelief())
    verdicts = [checker.check(1, face, SimpleNamespace(pixels=pixels), t) for t in range(3)]
    assert verdicts[-1].state == SPOOF and verdicts[-1].reason == FLAT_FACE
    assert checker.report(1)["depth"]["relief_mm"] < 20 and checker.counters()["spoof_frames"][FLAT_FACE] == 3


def test_realsense_source_is_live_and_explains_a_missing_driver():
    assert not is_finite_source("realsense") and not is_finite_source("realsense-ir")
    try:
        import pyrealsense2  # noqa: F401
    except ImportError:
        with pytest.raises(Exception, match="pip install pyrealsense2"):
            next(iter(open_frames("realsense")))


def test_ir_mode_grey_frames_run_through_the_same_engine(engine, faces_dir):
    """IR frames are grey: made 3-channel they are detected and still match the colour badge."""
    for name in ("obama/1.jpg", "biden/1.jpg"):
        bgr = cv2.imread(str(faces_dir / "people" / name))
        grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        ir_like = np.repeat(grey[:, :, None], 3, axis=2)
        colour, ir = engine.analyze(bgr, 1)[0], engine.analyze(ir_like, 1)
        assert ir, name
        assert float(colour.embedding @ ir[0].embedding) > 0.52  # Similarity 99 at the door
