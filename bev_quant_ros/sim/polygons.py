"""Box faces and polygon clipping for the painter's-algorithm camera renderer."""

from __future__ import annotations

import numpy as np

# corner signs (x, y, z) of a unit box, and the 4 corners of each face, counter-clockwise seen from outside
_CORNER_SIGNS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
_FACE_CORNERS = np.array([
    [4, 6, 7, 5],  # +x
    [0, 1, 3, 2],  # -x
    [2, 3, 7, 6],  # +y
    [0, 4, 5, 1],  # -y
    [1, 5, 7, 3],  # +z
    [0, 2, 6, 4],  # -z
])
_FACE_NORMALS_LOCAL = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float64)


def box_faces(centers: np.ndarray, yaws: np.ndarray, halves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Faces [B, 6, 4, 3] and outward normals [B, 6, 3] of yawed boxes."""
    c, s = np.cos(yaws), np.sin(yaws)
    R = np.zeros((len(yaws), 3, 3))
    R[:, 0, 0], R[:, 0, 1], R[:, 1, 0], R[:, 1, 1], R[:, 2, 2] = c, -s, s, c, 1.0
    corners = np.einsum("bij,bkj->bki", R, _CORNER_SIGNS[None] * halves[:, None, :]) + centers[:, None, :]
    normals = np.einsum("bij,fj->bfi", R, _FACE_NORMALS_LOCAL)
    return corners[:, _FACE_CORNERS], normals


def clip_near(poly_cam: np.ndarray, near: float) -> np.ndarray:
    """Clip one polygon [N, 3] (camera frame) to z >= near (Sutherland-Hodgman, one plane, vectorised).

    Works for non-convex polygons too (the result may have degenerate edges along
    the clip line, which fill correctly).
    """
    z = poly_cam[:, 2]
    inside = z >= near
    if inside.all():
        return poly_cam
    nxt = np.roll(poly_cam, -1, axis=0)
    z_next = nxt[:, 2]
    crossing = inside != (z_next >= near)
    denom = np.where(crossing, z_next - z, 1.0)
    cut = poly_cam + ((near - z) / denom)[:, None] * (nxt - poly_cam)
    out = np.stack([poly_cam, cut], axis=1)  # [N, 2, 3]: each vertex, then the crossing of its edge
    keep = np.stack([inside, crossing], axis=1)
    return out[keep]
