"""A small batched ray caster in torch for the toy worlds.

World frame: y up, metres. Cameras are camera-to-world 4x4 poses with OpenCV axes (x right, y down,
z forward). A scene is a textured ground plane (checker, optional road), a sky gradient, spheres and
axis-aligned boxes; shading is ambient + Lambert from a fixed sun, with distance fog. Everything is a
pure function of the scene and the poses, so the same poses always give the same pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

SUN = torch.tensor([0.4, 0.8, -0.45])
SUN = SUN / SUN.norm()


@dataclass
class Scene:
    sphere_centers: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 3))
    sphere_radii: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    sphere_colors: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 3))
    box_min: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 3))
    box_max: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 3))
    box_colors: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 3))
    ground_colors: tuple = ((0.35, 0.55, 0.3), (0.3, 0.48, 0.26))
    checker_size: float = 1.0
    road_half_width: float = 0.0  # > 0: a road along the z axis, centred on x = 0
    sky_top: tuple = (0.35, 0.55, 0.9)
    sky_horizon: tuple = (0.8, 0.87, 0.95)
    fog_distance: float = 60.0
    fov_degrees: float = 70.0

    def with_objects(self, spheres=None, boxes=None) -> Scene:
        """A copy with extra (centers, radii, colors) spheres and (min, max, colors) boxes."""
        out = Scene(**self.__dict__)
        if spheres is not None:
            c, r, col = spheres
            out.sphere_centers = torch.cat([self.sphere_centers, c])
            out.sphere_radii = torch.cat([self.sphere_radii, r])
            out.sphere_colors = torch.cat([self.sphere_colors, col])
        if boxes is not None:
            lo, hi, col = boxes
            out.box_min = torch.cat([self.box_min, lo])
            out.box_max = torch.cat([self.box_max, hi])
            out.box_colors = torch.cat([self.box_colors, col])
        return out


def camera_rays(c2w: torch.Tensor, height: int, width: int, fov_degrees: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Origins [N, 3] and unit directions [N, H*W, 3] of the pixel rays of N cameras."""
    focal = 0.5 * width / math.tan(math.radians(fov_degrees) / 2)
    v, u = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    d = torch.stack([(u - width / 2) / focal, (v - height / 2) / focal, torch.ones_like(u)], -1).reshape(-1, 3)
    d = d / d.norm(dim=-1, keepdim=True)
    dirs = torch.einsum("nij,pj->npi", c2w[:, :3, :3].float(), d)
    return c2w[:, :3, 3].float(), dirs


def _hit_spheres(o, d, centers, radii):
    """Nearest positive hit distance [N, P] and sphere index, over S spheres."""
    if len(centers) == 0:
        return torch.full(d.shape[:2], math.inf), torch.zeros(d.shape[:2], dtype=torch.long)
    oc = o[:, None, None, :] - centers[None, None]  # [N, 1, S, 3]
    b = (d[:, :, None, :] * oc).sum(-1)  # [N, P, S]
    c = (oc * oc).sum(-1) - radii**2  # [N, 1, S]
    disc = b * b - c
    sq = disc.clamp_min(0).sqrt()
    t = torch.where((disc > 0) & (-b - sq > 1e-3), -b - sq, torch.full_like(b, math.inf))
    return t.min(-1)


def _hit_boxes(o, d, lo, hi):
    """Slab test: nearest positive hit distance [N, P], box index, and the hit face's axis."""
    if len(lo) == 0:
        inf = torch.full(d.shape[:2], math.inf)
        return inf, torch.zeros(d.shape[:2], dtype=torch.long)
    inv = 1.0 / torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
    t0 = (lo[None, None] - o[:, None, None]) * inv[:, :, None]  # [N, P, K, 3]
    t1 = (hi[None, None] - o[:, None, None]) * inv[:, :, None]
    near = torch.minimum(t0, t1).amax(-1)
    far = torch.maximum(t0, t1).amin(-1)
    t = torch.where((far >= near) & (near > 1e-3), near, torch.full_like(near, math.inf))
    return t.min(-1)


def render(scene: Scene, c2w: torch.Tensor | np.ndarray, height: int = 64, width: int = 64) -> torch.Tensor:
    """Render N camera-to-world poses [N, 4, 4] -> frames [N, 3, H, W] in [-1, 1]."""
    c2w = torch.as_tensor(np.asarray(c2w) if not isinstance(c2w, torch.Tensor) else c2w, dtype=torch.float32)
    o, d = camera_rays(c2w, height, width, scene.fov_degrees)
    n, p = d.shape[:2]

    t_ground = torch.where(d[..., 1] < -1e-6, -o[:, None, 1] / d[..., 1].clamp(max=-1e-6), torch.full((n, p), math.inf))
    t_sphere, i_sphere = _hit_spheres(o, d, scene.sphere_centers, scene.sphere_radii)
    t_box, i_box = _hit_boxes(o, d, scene.box_min, scene.box_max)
    t = torch.stack([t_ground, t_sphere, t_box], -1)
    t_min, kind = t.min(-1)
    hit = o[:, None] + d * t_min.clamp(max=1e4)[..., None]

    color = _sky(scene, d)
    normal = torch.zeros_like(d)
    normal[..., 1] = 1.0
    base = _ground_color(scene, hit)
    if len(scene.sphere_centers):
        on_sphere = kind == 1
        centre = scene.sphere_centers[i_sphere]
        sphere_n = (hit - centre) / scene.sphere_radii[i_sphere][..., None]
        normal = torch.where(on_sphere[..., None], sphere_n, normal)
        base = torch.where(on_sphere[..., None], scene.sphere_colors[i_sphere], base)
    if len(scene.box_min):
        on_box = kind == 2
        lo, hi = scene.box_min[i_box], scene.box_max[i_box]
        rel = (hit - (lo + hi) / 2) / ((hi - lo) / 2).clamp_min(1e-6)
        axis = rel.abs().argmax(-1, keepdim=True)
        box_n = torch.zeros_like(rel).scatter(-1, axis, rel.gather(-1, axis).sign())
        normal = torch.where(on_box[..., None], box_n, normal)
        base = torch.where(on_box[..., None], scene.box_colors[i_box], base)

    light = 0.45 + 0.55 * (normal @ SUN).clamp_min(0)
    shaded = base * light[..., None]
    fog = torch.exp(-t_min / scene.fog_distance)[..., None]
    surface = fog * shaded + (1 - fog) * torch.tensor(scene.sky_horizon)
    color = torch.where(torch.isfinite(t_min)[..., None], surface, color)
    return (color.clamp(0, 1) * 2 - 1).reshape(n, height, width, 3).permute(0, 3, 1, 2).contiguous()


def _sky(scene: Scene, d: torch.Tensor) -> torch.Tensor:
    up = d[..., 1:2].clamp(0, 1) ** 0.6
    return torch.tensor(scene.sky_horizon) * (1 - up) + torch.tensor(scene.sky_top) * up


def _ground_color(scene: Scene, hit: torch.Tensor) -> torch.Tensor:
    cx = torch.floor(hit[..., 0] / scene.checker_size)
    cz = torch.floor(hit[..., 2] / scene.checker_size)
    parity = ((cx + cz) % 2)[..., None]
    a, b = torch.tensor(scene.ground_colors[0]), torch.tensor(scene.ground_colors[1])
    color = a * (1 - parity) + b * parity
    if scene.road_half_width > 0:
        x, z = hit[..., 0], hit[..., 2]
        on_road = (x.abs() < scene.road_half_width)[..., None]
        dashes = ((x.abs() < 0.08) & ((z % 3.0) < 1.5))[..., None]
        road = torch.where(dashes, torch.tensor([0.92, 0.9, 0.75]), torch.tensor([0.28, 0.28, 0.3]))
        color = torch.where(on_road, road, color)
    return color


def look_at(eye, target, up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """Camera-to-world pose (OpenCV axes) at `eye` looking at `target`."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, up)  # right = forward x up, for y-down cameras in a y-up world
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x, y, z, eye
    return pose


def yaw_pitch_pose(position, yaw: float, pitch: float = 0.0) -> np.ndarray:
    """Camera-to-world pose from a position and heading: yaw about world y (0 = looking along +z,
    positive = turning left), pitch up positive."""
    forward = np.array([math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
    return look_at(position, np.asarray(position, dtype=np.float64) + forward)
