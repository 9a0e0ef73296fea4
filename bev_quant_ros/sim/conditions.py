"""Weather and lighting conditions: how each one changes the cameras and the lidar.

The conditions reproduce the scenario shift that breaks INT8 calibration: night
collapses camera activations (low light, sensor noise, a few bright lamps), rain
and fog remove contrast and corrupt the lidar (drop-outs, spurious near returns),
glare saturates parts of the image. The lidar is an active sensor: night leaves it
unchanged. Per-sequence values (sun position, fog density) are drawn from the
sequence seed so every sequence of a condition differs a little.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONDITIONS: tuple[str, ...] = ("day", "night", "rain", "fog", "glare")


@dataclass(frozen=True)
class ConditionParams:
    """Everything the renderer and the lidar need to know about one condition."""

    name: str
    sky_top: tuple[float, float, float]  # RGB in [0, 1]
    sky_horizon: tuple[float, float, float]
    ambient: float  # light on every surface
    sun: float  # extra light on surfaces facing the sun
    sun_azimuth_rad: float  # world frame
    sun_elevation_rad: float
    fog_visibility_m: float  # camera meteorological visibility; inf = clear
    fog_colour: tuple[float, float, float]
    contrast: float  # 1 = full contrast; lower blends towards mid grey
    noise_sigma: float  # sensor noise, 8-bit levels
    headlights: bool  # ego headlights and other lamps light up
    rain_streaks: bool
    glare: bool  # low sun in view: bloom and saturation
    lidar_dropout: float  # probability a return is lost
    lidar_spurious: float  # fraction of rays returning from rain drops / fog
    lidar_spurious_range_m: tuple[float, float]
    lidar_visibility_m: float  # two-way attenuation of returns; inf = clear
    lidar_range_noise_m: float


def condition_params(condition: str, seed: int) -> ConditionParams:
    """The parameters of ``condition`` for the sequence ``seed`` (deterministic)."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; expected one of {', '.join(CONDITIONS)}")
    rng = np.random.default_rng([seed, 7, CONDITIONS.index(condition)])
    azimuth = float(rng.uniform(-np.pi, np.pi))
    common = dict(name=condition, sun_azimuth_rad=azimuth, fog_colour=(0.7, 0.72, 0.75), contrast=1.0,
                  headlights=False, rain_streaks=False, glare=False, lidar_dropout=0.01, lidar_spurious=0.0,
                  lidar_spurious_range_m=(1.0, 8.0), lidar_visibility_m=np.inf, lidar_range_noise_m=0.02,
                  fog_visibility_m=float(rng.uniform(600.0, 1500.0)))
    if condition == "day":
        return ConditionParams(sky_top=(0.30, 0.50, 0.85), sky_horizon=(0.70, 0.80, 0.92), ambient=0.55,
                               sun=0.5, sun_elevation_rad=float(np.radians(rng.uniform(25, 60))),
                               noise_sigma=2.0, **common)
    if condition == "night":
        common.update(headlights=True, fog_colour=(0.02, 0.02, 0.03), fog_visibility_m=float(rng.uniform(250, 500)))
        return ConditionParams(sky_top=(0.0, 0.0, 0.02), sky_horizon=(0.04, 0.04, 0.07),
                               ambient=float(rng.uniform(0.05, 0.09)), sun=0.0, sun_elevation_rad=-0.5,
                               noise_sigma=7.0, **common)
    if condition == "rain":
        common.update(contrast=0.7, rain_streaks=True, fog_colour=(0.45, 0.47, 0.5),
                      fog_visibility_m=float(rng.uniform(120, 250)), lidar_dropout=0.12, lidar_spurious=0.02,
                      lidar_spurious_range_m=(0.8, 6.0), lidar_visibility_m=float(rng.uniform(300, 600)),
                      lidar_range_noise_m=0.04)
        return ConditionParams(sky_top=(0.35, 0.37, 0.40), sky_horizon=(0.50, 0.52, 0.55), ambient=0.5,
                               sun=0.05, sun_elevation_rad=0.8, noise_sigma=4.0, **common)
    if condition == "fog":
        common.update(contrast=0.8, fog_colour=(0.72, 0.73, 0.75), fog_visibility_m=float(rng.uniform(30, 70)),
                      lidar_dropout=0.05, lidar_spurious=0.03, lidar_spurious_range_m=(0.5, 12.0),
                      lidar_visibility_m=float(rng.uniform(60, 140)), lidar_range_noise_m=0.03)
        return ConditionParams(sky_top=(0.72, 0.73, 0.75), sky_horizon=(0.72, 0.73, 0.75), ambient=0.6,
                               sun=0.05, sun_elevation_rad=0.8, noise_sigma=3.0, **common)
    # glare: a low sun; its azimuth is set relative to the road by the frame generator
    common.update(glare=True)
    return ConditionParams(sky_top=(0.45, 0.60, 0.90), sky_horizon=(0.95, 0.90, 0.80), ambient=0.45, sun=0.7,
                           sun_elevation_rad=float(np.radians(rng.uniform(2, 8))), noise_sigma=2.0, **common)
