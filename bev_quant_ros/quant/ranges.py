"""Calibration methods: a symmetric clip threshold per tensor from its |x| histogram.

All four work on `TensorStats` (no second pass over the data):

* ``minmax``: the largest |x| seen (no clipping; one outlier sets the step).
* ``percentile``: the given percentile of |x| (e.g. 99.99).
* ``entropy``: TensorRT's KL-divergence method, implemented here because
  ONNX Runtime's `quantize_static` silently degrades Entropy to MinMax
  (docs/architecture.md §3): the threshold whose 128-level quantized histogram stays
  closest (KL) to the clipped reference histogram.
* ``mse``: the threshold minimising the expected squared error, clipping error
  (|x| - T)^2 above T plus uniform rounding error step^2/12 below.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from bev_quant_ros.errors import CalibrationError, ConfigError
from bev_quant_ros.quant.histogram import TensorStats

METHODS = ("minmax", "entropy", "percentile", "mse")
GROUP_RANGES = ("merged", "max")  # clip points from the pooled statistics, or the largest of each group's own
LEVELS = 127  # symmetric signed int8: q in [-127, 127]
_QUANTIZED_BINS = LEVELS + 1  # |x| levels 0..127
_MIN_THRESHOLD = 1e-6


def minmax_threshold(stats: TensorStats) -> float:
    return stats.absmax


def percentile_threshold(stats: TensorStats, percentile: float = 99.99) -> float:
    return stats.abs_percentile(percentile)


def _used_bins(stats: TensorStats) -> np.ndarray:
    hist = stats.hist
    assert hist is not None
    nonzero = np.flatnonzero(hist)
    return hist[: (nonzero[-1] + 1) if nonzero.size else 1].astype(np.float64)


def entropy_threshold(stats: TensorStats) -> float:
    """KL calibration (TensorRT's method) on the |x| histogram."""
    hist = _used_bins(stats)
    # The bin at 0 holds ReLU's zeros (often half the values). Zero is exact in int8, but
    # smearing that spike over a quantized level dominates the KL and drives the threshold
    # to the smallest candidate; like NVIDIA's pytorch-quantization, flatten it first.
    if hist.size > 1:
        hist[0] = hist[1]
    width = stats.top / stats.bins
    if hist.size <= _QUANTIZED_BINS:
        return hist.size * width
    best_kl, best_i = np.inf, hist.size
    tail = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])  # tail[i] = mass at bins >= i
    for i in range(_QUANTIZED_BINS, hist.size + 1):
        reference = hist[:i].copy()
        reference[-1] += tail[i]  # clipped values land in the last kept bin
        # quantize the first i bins into 128 levels, spreading each level's mass over its non-empty bins
        chunk = np.minimum((np.arange(i) * _QUANTIZED_BINS) // i, _QUANTIZED_BINS - 1)
        source = hist[:i]
        nonempty = (source > 0).astype(np.float64)
        level_mass = np.bincount(chunk, weights=source, minlength=_QUANTIZED_BINS)
        level_count = np.bincount(chunk, weights=nonempty, minlength=_QUANTIZED_BINS)
        spread = np.divide(level_mass, level_count, out=np.zeros_like(level_mass), where=level_count > 0)
        candidate = spread[chunk] * nonempty
        p = reference / reference.sum()
        q_sum = candidate.sum()
        if q_sum <= 0:
            continue
        q = candidate / q_sum
        mask = p > 0
        # a reference bin that the candidate leaves empty gets a tiny mass (TensorRT does the same smoothing)
        kl = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return best_i * width


def mse_threshold(stats: TensorStats) -> float:
    """Threshold minimising E[(x - dequant(quant(x)))^2] over candidate bin edges."""
    hist = _used_bins(stats)
    width = stats.top / stats.bins
    centres = (np.arange(hist.size) + 0.5) * width
    candidates = np.arange(max(hist.size // 64, 1), hist.size + 1) * width  # from 1/64 of the range up
    step = candidates[:, None] / LEVELS
    clip_error = np.clip(centres[None, :] - candidates[:, None], 0.0, None) ** 2
    error = (clip_error + step * step / 12.0) @ hist
    return float(candidates[int(np.argmin(error))])


def threshold(stats: TensorStats, method: str, percentile: float = 99.99) -> float:
    """The symmetric clip point of one tensor under `method` (never zero: a zero scale is invalid)."""
    functions: Mapping[str, Callable[[TensorStats], float]] = {
        "minmax": minmax_threshold, "entropy": entropy_threshold, "mse": mse_threshold,
        "percentile": lambda s: percentile_threshold(s, percentile)}
    if method not in functions:
        raise ConfigError(f"calibration method must be one of {METHODS}, got '{method}'")
    if not stats.count:
        raise CalibrationError("a tensor saw no values during calibration")
    return max(float(functions[method](stats)), stats.absmax * 1e-3, _MIN_THRESHOLD)


def compute_thresholds(stats: Mapping[str, TensorStats], method: str,
                       percentile: float = 99.99) -> dict[str, float]:
    """Clip point per tensor name; names the tensor when one has no data."""
    result = {}
    for name, tensor_stats in stats.items():
        try:
            result[name] = threshold(tensor_stats, method, percentile)
        except CalibrationError as exc:
            raise CalibrationError(f"tensor '{name}': {exc}") from None
    return result


def group_max_thresholds(groups: Mapping[str, Mapping[str, TensorStats]], method: str,
                         percentile: float = 99.99) -> dict[str, float]:
    """Per tensor, the largest of the clip points each calibration group (condition[/mode]) gets from
    its own statistics. Why: on pooled statistics the many small night activations pull an mse clip
    point below what daylight frames need (v3's image encoder: 12.5 balanced vs 14.1 day-only), so
    a balanced calibration lost to a day-only one on day; with the group maximum no condition is
    clipped below its own optimum."""
    per_group = [compute_thresholds(stats, method, percentile) for stats in groups.values()]
    if not per_group:
        raise CalibrationError("no calibration group has statistics")
    return {name: max(t[name] for t in per_group) for name in per_group[0]}
