"""Range and outlier report: per tensor and condition, how heavy the tails are and how each method clips.

A tensor is flagged outlier-dominated when its max |x| is far above its 99.99th
percentile: with a max-based (minmax) scale, almost every value then lands in a
few int8 levels (MISSION problem 6). Tensors whose range moves between conditions
are what night-only calibration gets wrong (problem 5).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping

from bev_quant_ros.quant.calib_data import ConditionStats, merge_conditions
from bev_quant_ros.quant.histogram import TensorStats
from bev_quant_ros.quant.ranges import LEVELS

OUTLIER_RATIO = 4.0  # max/p99.99 above this: the minmax step is 4x coarser than the bulk needs
OUTLIER_KURTOSIS = 50.0


@dataclass(frozen=True)
class RangeRow:
    tensor: str
    condition: str  # a condition name or "all"
    minimum: float
    maximum: float
    p99_9: float
    p99_99: float
    kurtosis: float
    max_to_p9999: float
    outlier_dominated: bool
    bulk_levels_minmax: float  # int8 levels covering the p99.99 range under a minmax scale

    def to_dict(self) -> dict[str, float | str | bool | None]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def range_row(tensor: str, condition: str, stats: TensorStats) -> RangeRow:
    p999, p9999 = stats.abs_percentile(99.9), stats.abs_percentile(99.99)
    ratio = stats.absmax / p9999 if p9999 > 0 else math.inf
    kurtosis = stats.kurtosis
    flagged = ratio > OUTLIER_RATIO or (math.isfinite(kurtosis) and kurtosis > OUTLIER_KURTOSIS)
    return RangeRow(tensor, condition, stats.minimum, stats.maximum, p999, p9999, kurtosis, ratio, flagged,
                    LEVELS * p9999 / stats.absmax if stats.absmax > 0 else 0.0)


def range_table(stats: ConditionStats) -> list[RangeRow]:
    """Rows per tensor: one per condition, then "all" (the calibration set)."""
    merged = merge_conditions(stats)
    rows = []
    for tensor in merged:
        rows += [range_row(tensor, condition, per_tensor[tensor]) for condition, per_tensor in stats.items()]
        rows.append(range_row(tensor, "all", merged[tensor]))
    return rows


def condition_shift(stats: ConditionStats) -> dict[str, float]:
    """Per tensor: largest / smallest per-condition p99.99 (1 = same range under every condition)."""
    merged = merge_conditions(stats)
    result = {}
    for tensor in merged:
        values = [per_tensor[tensor].abs_percentile(99.99) for per_tensor in stats.values()]
        low = min(values)
        result[tensor] = max(values) / low if low > 0 else math.inf
    return result


def clip_points(thresholds: Mapping[str, Mapping[str, float]], tensor: str) -> dict[str, float]:
    """Each method's clip point of one tensor (for the report's histograms)."""
    return {method: values[tensor] for method, values in thresholds.items() if tensor in values}
