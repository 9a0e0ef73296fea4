"""Report plots from real statistics objects; a report without calibration results is a clear error."""

import numpy as np
import pytest

from bev_quant_ros.errors import ConfigError
from bev_quant_ros.quant.drift import DriftCurve
from bev_quant_ros.quant.histogram import TensorStats
from bev_quant_ros.quant.outliers import condition_shift
from bev_quant_ros.quant.ranges import METHODS, compute_thresholds
from bev_quant_ros.quant.report import _load, plot_drift, plot_histograms, plot_sensitivity
from bev_quant_ros.quant.sensitivity import NodeSensitivity


def _stats(scale: float, seed: int) -> TensorStats:
    stats = TensorStats()
    stats.update(np.random.default_rng(seed).standard_normal(50_000) * scale)
    return stats


def test_plots_are_written(tmp_path):
    stats = {"day": {"a": _stats(1.0, 0), "b": _stats(3.0, 1)}, "night": {"a": _stats(0.25, 2), "b": _stats(3.0, 3)}}
    merged = {name: stats["day"][name].merged(stats["night"][name]) for name in ("a", "b")}
    thresholds = {m: compute_thresholds(merged, m) for m in METHODS}
    paths = [plot_histograms(stats, thresholds, ["a", "b"], tmp_path / "h.png"),
             plot_sensitivity([NodeSensitivity("/n1", "Conv", 0.1, 0.05, 0.2)], tmp_path / "s.png"),
             plot_drift({"plan": DriftCurve([1.0, 0.99], [0.0, 0.1], [1.0, 0.9])}, tmp_path / "d.png")]
    for path in paths:
        assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 5_000
    shift = condition_shift(stats)
    assert shift["a"] == pytest.approx(4.0, rel=0.05) and shift["b"] == pytest.approx(1.0, rel=0.05)


def test_report_without_calibration_results_names_the_command(tmp_path):
    with pytest.raises(ConfigError, match="bev-quant calibrate"):
        _load(tmp_path)


def test_held_out_sets_take_several_drives_per_condition_and_keep_the_first(tiny_model_path):
    from bev_quant_ros.quant.report import HELD_OUT_SEED, held_out_sequences

    one = held_out_sequences(tiny_model_path, ["day", "night"], 2)
    three = held_out_sequences(tiny_model_path, ["day", "night"], 2, ("fused", "camera_only"), drives=3)
    assert [s.name for s in one] == [f"synth:day:{HELD_OUT_SEED}:2@0", f"synth:night:{HELD_OUT_SEED + 1000}:2@0"]
    assert len(three) == 12 and [s.group for s in three[:6]] == ["day", "day/camera_only"] * 3
    assert three[0].name == one[0].name and three[2].name == f"synth:day:{HELD_OUT_SEED + 1}:2@0"
    np.testing.assert_array_equal(three[0].feeds[1]["images"], one[0].feeds[1]["images"])
    with pytest.raises(ConfigError, match="held-out drives per condition"):
        held_out_sequences(tiny_model_path, ["day"], 2, drives=0)
