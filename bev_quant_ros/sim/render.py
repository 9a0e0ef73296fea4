"""Six-camera renderer: painter's algorithm with opencv polygon fills.

Per camera, per frame: copy a precomputed background (sky + terrain), fill the
road surfaces and markings in albedo, light them per pixel with a precomputed
ground light map (sun, ego headlights, fog — the ground is fixed relative to the
camera, so the map is too), then fill the visible faces of every object part far
to near with per-face lighting and fog, then apply image-space effects (glare
bloom, rain streaks, contrast loss, sensor noise). An object-id buffer at quarter
resolution is filled with the same polygons, so occlusion-aware visibility comes
for free.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from bev_quant_ros.perception.geometry import Rig, invert_transform
from bev_quant_ros.sim.conditions import ConditionParams
from bev_quant_ros.sim.polygons import box_faces, clip_near

NEAR_M = 0.2
ID_SCALE_BITS = 2
ID_SCALE = 1 << ID_SCALE_BITS  # id buffer is 1/ID_SCALE of the image resolution
ID_CLUTTER = 65535
_SHIFT = 4  # fixed-point bits for sub-pixel polygon vertices
_TERRAIN = np.array([0.30, 0.34, 0.22])
_MAX_DRAW_M = 90.0


@dataclass
class GroundLayer:
    """Road-surface polygons (ego frame) of one albedo colour: one or more polygons each [N, 3]."""

    colour: np.ndarray  # RGB albedo in [0, 1]
    polygons: list[np.ndarray]


@dataclass
class DrawParts:
    """Object parts to draw, ego frame."""

    centers: np.ndarray  # [P, 3]
    yaws: np.ndarray  # [P]
    halves: np.ndarray  # [P, 3]
    colours: np.ndarray  # [P, 3] albedo
    emissive: np.ndarray  # [P] bool
    stack: np.ndarray  # [P] int
    object_center: np.ndarray  # [P, 3] centre of the owning object (painter's order)
    draw_id: np.ndarray  # [P] uint16 id written to the id buffer


class CameraRenderer:
    """Renders one condition for one rig; construct once per sequence (precomputes the backgrounds)."""

    def __init__(self, rig: Rig, params: ConditionParams, seed: int) -> None:
        self.rig, self.params = rig, params
        self.T_cam_ego = [invert_transform(cam.T_ego_cam) for cam in rig.cameras]
        self._rng_static = np.random.default_rng([seed, 11])
        self._background, self._ground_mult, self._ground_add = [], [], []
        for cam in rig.cameras:
            bg, mult, add = self._precompute(cam)
            self._background.append(bg)
            self._ground_mult.append(mult)
            self._ground_add.append(add)
        h, w = rig.cameras[0].height, rig.cameras[0].width
        pad = 64
        self._noise_bank = np.clip(self._rng_static.normal(128.0, params.noise_sigma, (h + pad, w + pad, 3)),
                                   0, 255).astype(np.uint8)
        self._rain_bank = _rain_layer(self._rng_static, h + pad, w + pad) if params.rain_streaks else None
        self._bloom = _bloom_sprite(220) if params.glare else None

    # ---- precomputation --------------------------------------------------------------
    def _pixel_rays(self, cam) -> tuple[np.ndarray, np.ndarray]:
        """Unit ray directions [H, W, 3] in the ego frame and the camera centre [3]."""
        u, v = np.meshgrid(np.arange(cam.width) + 0.5, np.arange(cam.height) + 0.5)
        pix = np.stack([u, v, np.ones_like(u)], axis=-1)
        rays_cam = pix @ np.linalg.inv(cam.K).T
        rays = rays_cam @ cam.T_ego_cam[:3, :3].T
        return rays / np.linalg.norm(rays, axis=-1, keepdims=True), cam.T_ego_cam[:3, 3]

    def _precompute(self, cam) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = self.params
        rays, origin = self._pixel_rays(cam)
        elevation = rays[..., 2]
        sky = elevation > -1e-3
        t_sky = np.clip(elevation / 0.5, 0.0, 1.0)[..., None] ** 0.6
        sky_rgb = np.array(p.sky_horizon) * (1 - t_sky) + np.array(p.sky_top) * t_sky
        dist = np.where(sky, np.inf, origin[2] / np.maximum(-elevation, 1e-6))
        ground_xy = origin[:2] + rays[..., :2] * np.where(sky, 0.0, dist)[..., None]
        light = p.ambient + p.sun * max(np.sin(p.sun_elevation_rad), 0.0) + _headlight(ground_xy, p) * (~sky)
        fog = 1.0 - np.exp(-3.0 * np.where(sky, 0.0, dist) / p.fog_visibility_m)
        mult = np.where(sky, 1.0, light * (1 - fog))[..., None] * np.ones(3)
        add = np.where(sky, 0.0, fog)[..., None] * np.array(p.fog_colour) * 255.0
        texture = 1.0 + 0.08 * self._rng_static.standard_normal(sky.shape)[..., None]
        terrain = _TERRAIN * 255.0 * texture * light[..., None] * (1 - fog)[..., None] + add
        background = np.where(sky[..., None], sky_rgb * 255.0, terrain * np.ones(3))
        # the terrain is already lit; the ground map then only lights road polygons drawn over it
        return (np.clip(background, 0, 255).astype(np.uint8), np.clip(mult * 64.0, 0, 255).astype(np.uint8),
                np.clip(add, 0, 255).astype(np.uint8))

    # ---- per frame -------------------------------------------------------------------
    def render(self, ground: list[GroundLayer], parts: DrawParts, frame_rng: np.random.Generator,
               sun_dir_ego: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Images [C, H, W, 3] uint8 and id buffers [C, H/4, W/4] uint16."""
        cams = self.rig.cameras
        h, w = cams[0].height, cams[0].width
        images = np.empty((len(cams), h, w, 3), np.uint8)
        ids = np.zeros((len(cams), h // ID_SCALE, w // ID_SCALE), np.uint16)
        faces, normals = box_faces(parts.centers, parts.yaws, parts.halves)
        face_rgb = self._shade_faces(parts, faces, normals, sun_dir_ego)
        for ci, cam in enumerate(cams):
            img = images[ci]
            img[:] = self._background[ci]
            road = np.zeros_like(img)
            mask = np.zeros((h, w), np.uint8)
            for layer in ground:
                polys = [pp for pp in (self._project_poly(ci, poly) for poly in layer.polygons) if pp is not None]
                if polys:
                    colour = tuple(float(c) for c in np.clip(layer.colour * 255.0, 0, 255))
                    cv2.fillPoly(road, polys, colour, cv2.LINE_8, _SHIFT)
                    cv2.fillPoly(mask, polys, 255, cv2.LINE_8, _SHIFT)
            lit = cv2.add(cv2.multiply(road, self._ground_mult[ci], scale=1.0 / 64.0), self._ground_add[ci])
            cv2.copyTo(lit, mask, img)
            self._draw_parts(ci, img, ids[ci], parts, faces, normals, face_rgb)
            self._finish(ci, img, frame_rng, sun_dir_ego)
        return images, ids

    def _project_poly(self, ci: int, poly_ego: np.ndarray) -> np.ndarray | None:
        T = self.T_cam_ego[ci]
        pc = poly_ego @ T[:3, :3].T + T[:3, 3]
        if (pc[:, 2] < NEAR_M).all():
            return None
        pc = clip_near(pc, NEAR_M)
        K = self.rig.cameras[ci].K
        uv = pc[:, :2] / pc[:, 2:3] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
        return np.round(np.clip(uv, -1e5, 1e5) * (1 << _SHIFT)).astype(np.int32)

    def _shade_faces(self, parts: DrawParts, faces: np.ndarray, normals: np.ndarray,
                     sun_dir_ego: np.ndarray) -> np.ndarray:
        """Lit colour [P, 6, 3] in 0..255 of every face before fog."""
        p = self.params
        light = p.ambient + p.sun * np.clip(normals @ sun_dir_ego, 0.0, None)
        if p.headlights:
            centre = faces.mean(axis=2)
            facing = np.clip(-normals[..., 0], 0.0, None)
            light = light + _headlight(centre[..., :2], p) * facing
        rgb = parts.colours[:, None, :] * light[..., None]
        lamp = np.where(p.headlights, 1.6, 0.9)
        rgb = np.where(parts.emissive[:, None, None], parts.colours[:, None, :] * lamp, rgb)
        return np.clip(rgb * 255.0, 0, 255)

    def _draw_parts(self, ci: int, img: np.ndarray, ids: np.ndarray, parts: DrawParts, faces: np.ndarray,
                    normals: np.ndarray, face_rgb: np.ndarray) -> None:
        if not len(parts.yaws):
            return
        p = self.params
        T = self.T_cam_ego[ci]
        cam_pos = self.rig.cameras[ci].T_ego_cam[:3, 3]
        K = self.rig.cameras[ci].K
        obj_cam = parts.object_center @ T[:3, :3].T + T[:3, 3]
        obj_dist = np.linalg.norm(obj_cam, axis=1)
        candidate = (obj_cam[:, 2] > -8.0) & (obj_dist < _MAX_DRAW_M)
        fc = faces[candidate] @ T[:3, :3].T + T[:3, 3]  # [Pc, 6, 4, 3]
        front = np.einsum("pfk,pfk->pf", normals[candidate], faces[candidate].mean(axis=2) - cam_pos) < 0
        idx = np.nonzero(candidate)[0]
        face_dist = np.linalg.norm(fc.mean(axis=2), axis=-1)
        part_dist = face_dist.mean(axis=1)
        order = np.lexsort((-part_dist, parts.stack[candidate], -obj_dist[candidate]))
        fog = 1.0 - np.exp(-3.0 * face_dist / p.fog_visibility_m)
        fog = np.where(parts.emissive[idx][:, None], fog * 0.5, fog)
        colour = face_rgb[idx] * (1 - fog[..., None]) + np.array(p.fog_colour) * 255.0 * fog[..., None]
        # faces in painter's order: parts far to near (lower stack first), front faces only
        rows, face = np.nonzero(front[order])
        part = order[rows]
        polys = fc[part, face]  # [F, 4, 3]
        behind = polys[..., 2] < NEAR_M
        keep = ~behind.all(axis=1)
        part, face, polys, crossing = part[keep], face[keep], polys[keep], behind[keep].any(axis=1)
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        z = np.maximum(polys[..., 2], NEAR_M)
        uv = np.stack([polys[..., 0] / z * fx + cx, polys[..., 1] / z * fy + cy], axis=-1)
        h, w = img.shape[:2]
        inside = ~((uv[..., 0].max(1) < 0) | (uv[..., 0].min(1) >= w) | (uv[..., 1].max(1) < 0)
                   | (uv[..., 1].min(1) >= h))
        inside |= crossing  # the projection of a clipped face is only known after clipping
        pts_all = np.round(np.clip(uv, -1e5, 1e5) * (1 << _SHIFT)).astype(np.int32)
        colours = colour[part, face].tolist()
        draw_ids = parts.draw_id[idx[part]].tolist()
        for i in np.nonzero(inside)[0].tolist():
            pts = pts_all[i]
            if crossing[i]:
                clipped = clip_near(polys[i], NEAR_M)
                uv_c = clipped[:, :2] / clipped[:, 2:3] * [fx, fy] + [cx, cy]
                pts = np.round(np.clip(uv_c, -1e5, 1e5) * (1 << _SHIFT)).astype(np.int32)
            cv2.fillConvexPoly(img, pts, colours[i], cv2.LINE_8, _SHIFT)
            cv2.fillConvexPoly(ids, pts, draw_ids[i], cv2.LINE_8, _SHIFT + ID_SCALE_BITS)

    def _finish(self, ci: int, img: np.ndarray, rng: np.random.Generator, sun_dir_ego: np.ndarray) -> None:
        """Image-space effects, in place: glare, rain streaks, contrast loss and sensor noise."""
        p = self.params
        h, w = img.shape[:2]
        if self._bloom is not None:
            self._add_glare(ci, img, sun_dir_ego)
        if self._rain_bank is not None:
            oy, ox = rng.integers(0, 64, size=2)
            cv2.add(img, self._rain_bank[oy:oy + h, ox:ox + w], dst=img)
        oy, ox = rng.integers(0, 64, size=2)
        noise = self._noise_bank[oy:oy + h, ox:ox + w]
        cv2.addWeighted(img, p.contrast, noise, 1.0, 128.0 * (1.0 - p.contrast) - 128.0, dst=img)

    def _add_glare(self, ci: int, img: np.ndarray, sun_dir_ego: np.ndarray) -> None:
        T = self.T_cam_ego[ci]
        d = T[:3, :3] @ sun_dir_ego
        if d[2] <= 0.05:
            return
        K = self.rig.cameras[ci].K
        u, v = K[0, 0] * d[0] / d[2] + K[0, 2], K[1, 1] * d[1] / d[2] + K[1, 2]
        h, w = img.shape[:2]
        # veiling glare: the closer the sun to the view axis, the more the whole image washes out
        veil = int(70.0 * max(d[2], 0.0) ** 4)
        if veil:
            cv2.add(img, (veil, veil, int(veil * 0.9), 0), dst=img)
        r = self._bloom.shape[0] // 2
        x0, y0, x1, y1 = int(u) - r, int(v) - r, int(u) + r, int(v) + r
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if cx0 < cx1 and cy0 < cy1:
            roi = img[cy0:cy1, cx0:cx1]
            cv2.add(roi, self._bloom[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0], dst=roi)
            cv2.line(img, (0, int(v)), (w - 1, int(v)), (255, 250, 235), 3, cv2.LINE_AA)


def _headlight(xy_ego: np.ndarray, p: ConditionParams) -> np.ndarray:
    """Ego headlight illumination of ground points / faces (ego frame), 0 when headlights are off."""
    if not p.headlights:
        return np.zeros(xy_ego.shape[:-1])
    x, y = xy_ego[..., 0] - 3.5, xy_ego[..., 1]
    angle = np.arctan2(np.abs(y), np.maximum(x, 1e-3))
    beam = np.exp(-(angle / 0.28) ** 2) * np.minimum(1.0, (18.0 / np.maximum(x, 1.0)) ** 2)
    return np.where(x > 0.5, 1.4 * beam, 0.0)


def _rain_layer(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Slanted bright streaks, added over the image (shifted randomly each frame)."""
    layer = np.zeros((h, w, 3), np.uint8)
    for _ in range(700):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        length = int(rng.integers(8, 30))
        level = int(rng.integers(25, 70))
        cv2.line(layer, (x, y), (x + length // 5, y + length), (level, level, level), 1, cv2.LINE_AA)
    return layer


def _bloom_sprite(radius: int) -> np.ndarray:
    """Radial glow that saturates at its core."""
    yy, xx = np.mgrid[-radius:radius, -radius:radius]
    r = np.sqrt(xx ** 2 + yy ** 2) / radius
    glow = 255.0 * np.clip(1.6 * np.exp(-(r / 0.25) ** 2) + 0.5 * np.exp(-(r / 0.7) ** 2), 0, 1)
    return (glow[..., None] * np.array([1.0, 0.97, 0.9])).astype(np.uint8)
