"""Range and outlier report: per tensor and condition, how heavy the tails are and how each method clips.

A tensor is flagged outlier-dominated when its max |x| is far above its 99.99th
percentile: with a max-based (minmax) scale, almost every value then lands in a
few int8 levels (MISSION problem 6). Tensors whose range moves between conditions
are what a calibration on one condition gets wrong (problem 5): `image_path_ranges` shows
it where it matters, on the camera path, per condition against each calibration's clip point.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping, Sequence

import onnx

from bev_quant_ros.quant.calib_data import ConditionStats, merge_conditions
from bev_quant_ros.quant.histogram import TensorStats
from bev_quant_ros.quant.ranges import LEVELS

OUTLIER_RATIO = 4.0  # max/p99.99 above this: the minmax step is 4x coarser than the bulk needs
OUTLIER_KURTOSIS = 50.0
# the camera path by node name (model/network.py modules, as exported): each image-encoder stage's ReLU,
# the encoder's output conv (what the lift samples) and the camera BEV conv's ReLU after the lift
IMAGE_PATH_NODES = re.compile(r"/image_encoder/stages/.*/Relu$|/image_encoder/out/Conv$|/camera_bev/.*/Relu$")


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


def image_path_tensors(model: onnx.ModelProto, with_stats: Iterable[str]) -> list[str]:
    """Outputs of the `IMAGE_PATH_NODES` in graph order, among the tensors that have statistics."""
    available = set(with_stats)
    return [name for node in model.graph.node if IMAGE_PATH_NODES.search(node.name)
            for name in node.output if name in available]


def image_path_ranges(stats: ConditionStats, tensors: Sequence[str],
                      clips: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per tensor and group: min, max, p99.99 |x|, and per calibration (``clips``: label -> tensor -> clip
    point) ``p99_99_over_clip_<label>``: the share of the int8 range the group's bulk spans; far below 1
    its values fall on few levels (low light collapsing to zero), above 1 they are clipped."""
    result: dict[str, dict[str, dict[str, float]]] = {}
    for tensor in tensors:
        result[tensor] = {}
        for group, per_tensor in stats.items():
            s = per_tensor[tensor]
            p9999 = s.abs_percentile(99.99)
            row = {"min": s.minimum, "max": s.maximum, "p99_99": p9999}
            row.update({f"p99_99_over_clip_{label}": p9999 / clip[tensor] if clip[tensor] > 0 else math.inf
                        for label, clip in clips.items()})
            result[tensor][group] = row
    return result
