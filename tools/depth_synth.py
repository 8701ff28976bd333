"""Synthetic depth for FLAT_FACE (no depth camera here): faces from the face mesh of real photos,
and crafted prints, as a RealSense D4xx would measure them.

Shared by ``tests/device/test_liveness_depth.py`` and ``tools/eval_depth_liveness.py``. Prints are
drawn on a SIZE x SIZE depth image around the face box BOX, with u, v from -1 to 1 across the box;
a print's tilt is in mm over a face box ~140 mm wide and ~170 mm tall. Everything here is
**simulated**: README says so wherever its figures are used.
"""

from __future__ import annotations

import numpy as np

SIZE = 240
BOX = np.array([60.0, 50.0, 120.0, 150.0])
HALF_W_MM, HALF_H_MM = 70.0, 85.0  # half the face box in mm


def box_landmarks(nose=(0.0, 0.15)) -> np.ndarray:
    """YuNet's five points for a face in BOX (eyes, nose tip, mouth corners; u, v -1..1 across the
    box): the nose where YuNet puts it on people's photos (mean v 0.15) unless moved."""
    uv = np.array([(-0.35, -0.3), (0.35, -0.3), nose, (-0.3, 0.5), (0.3, 0.5)])
    return BOX[:2] + BOX[2:] / 2 * (1.0 + uv)


LANDMARKS = box_landmarks()


def grid() -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(SIZE, dtype=np.float64), np.arange(SIZE, dtype=np.float64))


def box_uv() -> tuple[np.ndarray, np.ndarray]:
    x, y = grid()
    return (x - BOX[0] - BOX[2] / 2) / (BOX[2] / 2), (y - BOX[1] - BOX[3] / 2) / (BOX[3] / 2)


def tilt_mm(u: np.ndarray, v: np.ndarray, yaw: float, pitch: float) -> np.ndarray:
    return np.tan(np.radians(yaw)) * HALF_W_MM * u + np.tan(np.radians(pitch)) * HALF_H_MM * v


def realsense(depth: np.ndarray, rng, sigma_mm: float = 2.0) -> np.ndarray:
    """Depth as a RealSense D4xx gives it: noise growing with the square of the distance
    (``sigma_mm`` at 0.5 m), whole millimetres, 1% of the pixels without depth (0)."""
    sigma = sigma_mm * (depth / 500.0) ** 2
    measured = np.round(depth + rng.normal(0, 1, depth.shape) * sigma)
    return np.where((depth > 0) & (rng.random(depth.shape) >= 0.01), measured, 0).astype(np.float32)


def no_depth_patch(measured: np.ndarray, patch: tuple[float, float, float, float] | None) -> np.ndarray:
    """``measured`` with an elliptic patch (u, v, half-axes) that returns no depth (IR-black tape)."""
    if patch is not None:
        u, v = box_uv()
        measured[np.hypot((u - patch[0]) / patch[2], (v - patch[1]) / patch[3]) <= 1.0] = 0.0
    return measured


def holed_print(rng, behind_mm: float, at=(0.45, 0.15), size=(0.25, 0.25), tilt=(0.0, 0.0),
                no_depth_edge: float = 0.0, more: tuple = (), distance_mm: float = 500.0) -> np.ndarray:
    """A flat print (tilted by yaw, pitch degrees) with elliptic holes at (+-u, v), of half-axes
    ``size``, and ``more`` round ones (u, v, radius); the body ``behind_mm`` further back shows
    through. ``no_depth_edge``: a band that wide (box units) around each hole has no depth (an
    IR-black edge)."""
    u, v = box_uv()
    reach = np.full(u.shape, np.inf)  # elliptic distance to the nearest hole's centre (1 at its edge)
    for hu, hv, ru, rv in [(at[0], at[1], *size), (-at[0], at[1], *size), *((m[0], m[1], m[2], m[2]) for m in more)]:
        reach = np.minimum(reach, np.hypot((u - hu) / ru, (v - hv) / rv))
    depth = distance_mm + tilt_mm(u, v, *tilt) + np.where(reach <= 1.0, behind_mm, 0.0)
    measured = realsense(depth, rng)
    if no_depth_edge:
        measured[np.abs(reach - 1.0) * min(size) <= no_depth_edge / 2] = 0.0
    return measured


def fold_profile(depth_mm: float, angle: float = 0.0, offset: float = 0.0, crease_mm: float = 0.0,
                 pleat: float = 0.0) -> np.ndarray:
    """Depth (mm behind the crease) of a print folded along a line through (offset, 0) ``angle``
    degrees off the vertical, its sides (the box's edges) ``depth_mm`` behind the crease;
    ``crease_mm``: a rounded crease of that radius; ``pleat``: a tent of that half-width (box units)
    along the crease, flat beyond it."""
    u, v = box_uv()
    a = np.radians(angle)
    across = np.abs((u - offset) * np.cos(a) - v * np.sin(a) * BOX[3] / BOX[2])  # box half-widths
    if crease_mm:
        r = crease_mm / HALF_W_MM
        across = np.sqrt(across ** 2 + r * r) - r
    return depth_mm * (np.minimum(across / pleat, 1.0) if pleat else across)


def folded_print(rng, depth_mm: float, angle: float = 0.0, offset: float = 0.0, tilt=(0.0, 0.0),
                 crease_mm: float = 0.0, pleat: float = 0.0, distance_mm: float = 500.0) -> np.ndarray:
    """A folded print (``fold_profile``), tilted by yaw, pitch degrees."""
    u, v = box_uv()
    return realsense(distance_mm + fold_profile(depth_mm, angle, offset, crease_mm, pleat) + tilt_mm(u, v, *tilt), rng)


def trimmed_fold(rng, depth_mm: float, body_mm: float, side: float = 0.8, top: float = -0.5, bottom: float = 0.9,
                 patch: tuple[float, float, float, float] | None = None, distance_mm: float = 500.0,
                 tilt=(0.0, 0.0), **fold) -> np.ndarray:
    """A folded print (``fold_profile``) trimmed to |u| <= side, top <= v <= bottom and held with
    its crease ``body_mm`` in front of a body; ``patch``: a place without depth (``no_depth_patch``)."""
    u, v = box_uv()
    inside = (np.abs(u) <= side) & (v >= top) & (v <= bottom)
    depth = distance_mm + np.where(inside, fold_profile(depth_mm, **fold) + tilt_mm(u, v, *tilt), body_mm)
    return no_depth_patch(realsense(depth, rng), patch)


def taped_fold(rng, depth_mm: float, gap: float = 0.1, tape=(0.15, 0.2), nose=(0.0, 0.15),
               distance_mm: float = 500.0, tilt=(0.0, 0.0), **fold) -> np.ndarray:
    """A folded print (``fold_profile``) with IR-black tape (no depth) on its crease above and below
    the printed nose at ``nose``: two ellipses of half-axes ``tape`` (u, v), ``gap`` (box units)
    from the nose."""
    u, v = box_uv()
    measured = realsense(distance_mm + fold_profile(depth_mm, **fold) + tilt_mm(u, v, *tilt), rng)
    for sign in (-1, 1):
        measured = no_depth_patch(measured, (nose[0], nose[1] + sign * (gap + tape[1]), *tape))
    return measured


def bowl_print(rng, bowl_mm: float, behind_mm: float, holes_at: float = 0.65, hole_size=(0.2, 0.25),
               distance_mm: float = 500.0) -> np.ndarray:
    """A print pressed into a bowl at the nose (``bowl_mm`` deep, 40 mm in radius: a sculpted
    print) with holes at the cheeks (+-holes_at, 0.15), a body ``behind_mm`` behind them."""
    u, v = box_uv()
    r = np.hypot(u * HALF_W_MM, (v - 0.15) * HALF_H_MM)
    hole = np.hypot((np.abs(u) - holes_at) / hole_size[0], (v - 0.15) / hole_size[1]) <= 1.0
    depth = distance_mm - bowl_mm * np.clip(1.0 - (r / 40.0) ** 2, 0.0, None) + np.where(hole, behind_mm, 0.0)
    return realsense(depth, rng)


def photo_face(face_mesh, engine, photo: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The face mesh (468 points, crop pixels) of a photo's first face and YuNet's five points in
    that crop (where ``posed_face`` draws the depth); None without a face."""
    faces = engine.detect(photo) if photo is not None else []
    if not faces:
        return None
    det = faces[0].detection
    points, _ = face_mesh.points(face_mesh.crop(photo, det.box, det.landmarks))
    m = face_mesh.roi(det.box, det.landmarks)
    return points, np.asarray(det.landmarks, np.float64).reshape(5, 2) @ m[:, :2].T + m[:, 2]


def posed_face(points: np.ndarray, landmarks: np.ndarray, yaw: float,
               pitch: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depth (mm at 0.5 m, no noise) of the face mesh's surface turned by yaw and pitch degrees:
    the frontal surface sampled densely, turned, and the nearest point kept per pixel; its box and
    YuNet's ``landmarks`` (crop pixels) on the surface, turned with it."""
    import matplotlib.tri as mtri

    mm_per_px = 140.0 / float(np.ptp(points[:, 0]))  # the mesh spans a ~14 cm wide face
    interp = mtri.LinearTriInterpolator(mtri.Triangulation(points[:, 0], points[:, 1]), points[:, 2])
    x, y = np.meshgrid(np.arange(0, 192, 0.34), np.arange(0, 192, 0.34))
    z = np.ma.filled(interp(x, y), np.nan)
    a, b = np.radians(yaw), np.radians(pitch)
    turn = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]]) @ \
        np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    centre = np.array([96.0, 96.0, 0.0])
    surface = (np.stack([x, y, z], axis=-1)[np.isfinite(z)] - centre) @ turn.T + centre
    col, row = np.round(surface[:, 0]).astype(int), np.round(surface[:, 1]).astype(int)
    inside = (col >= 0) & (col < 192) & (row >= 0) & (row < 192)
    nearest = np.full(192 * 192, np.inf)
    np.minimum.at(nearest, row[inside] * 192 + col[inside], surface[inside, 2] * mm_per_px)
    depth = np.where(np.isfinite(nearest), 500.0 + nearest, 0.0).reshape(192, 192)
    corners = ((points - centre) @ turn.T + centre)[:, :2]
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    on_face = np.column_stack([landmarks, np.nan_to_num(np.ma.filled(interp(landmarks[:, 0], landmarks[:, 1]), np.nan))])
    turned = ((on_face - centre) @ turn.T + centre)[:, :2]
    return depth, np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]]), turned
