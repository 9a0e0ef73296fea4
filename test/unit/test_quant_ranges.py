"""Streaming |x| histograms and the four calibration methods, on data with known answers."""

import numpy as np
import pytest

from bev_quant_ros.errors import CalibrationError, ConfigError
from bev_quant_ros.quant.histogram import TensorStats
from bev_quant_ros.quant.outliers import range_row
from bev_quant_ros.quant.ranges import METHODS, compute_thresholds, group_max_thresholds, threshold


def gaussian_with_outliers(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(400_000)
    values[:20] = 40.0 * np.sign(rng.standard_normal(20))  # 0.005 % outliers at 40 sigma
    return values


def test_streaming_histogram_equals_one_shot_and_merges_exactly():
    values = gaussian_with_outliers()
    one = TensorStats()
    one.update(values)
    streamed = TensorStats()
    for chunk in (values[100:300_000] * 0.01, values[300_000:], values[:100]):  # range grows twice
        streamed.update(chunk)
    streamed_all = TensorStats()
    streamed_all.update(values[100:300_000] * 0.01)
    merged = streamed_all.merged(_stats(values[300_000:])).merged(_stats(values[:100]))
    assert merged.count == streamed.count == values.size
    assert merged.top == streamed.top
    np.testing.assert_array_equal(merged.hist, streamed.hist)
    assert one.absmax == pytest.approx(40.0)
    assert one.top == 64.0 and int(one.hist.sum()) == values.size


def test_values_at_a_power_of_two_merge_as_they_stream() -> None:
    # 1.0 is the first range's top; after the range doubles it starts the upper half of the bins
    first, second = np.array([1.0, -0.5, 0.25], np.float32), np.array([1.5, -1.0, 0.75], np.float32)
    streamed = TensorStats()
    streamed.update(first)
    streamed.update(second)
    merged = _stats(first).merged(_stats(second))
    assert streamed.top == merged.top == 2.0
    np.testing.assert_array_equal(merged.hist, streamed.hist)
    width = streamed.top / streamed.bins
    assert int(streamed.hist[int(1.0 / width)]) == 2  # both 1.0s in the bin [1.0, 1.0 + width)
    alone = _stats(first)
    assert alone.top == 1.0 and int(alone.hist[-1]) == 1 and alone.abs_percentile(100.0) == 1.0


def _stats(values: np.ndarray) -> TensorStats:
    stats = TensorStats()
    stats.update(values)
    return stats


def test_moments_and_percentiles_match_numpy():
    rng = np.random.default_rng(1)
    values = rng.standard_normal(200_000)
    stats = _stats(values)
    assert stats.kurtosis == pytest.approx(3.0, abs=0.05)  # Gaussian
    assert stats.mean == pytest.approx(values.mean(), abs=1e-9)
    for q in (99.0, 99.9, 99.99):
        assert stats.abs_percentile(q) == pytest.approx(np.percentile(np.abs(values), q), rel=0.01)
    assert _stats(gaussian_with_outliers()).kurtosis > 50  # outliers show in the fourth moment


def test_methods_clip_outliers_except_minmax():
    stats = _stats(gaussian_with_outliers())
    t = {m: threshold(stats, m) for m in METHODS}
    assert t["minmax"] == pytest.approx(40.0)
    for method in ("entropy", "percentile"):
        assert 3.0 < t[method] < 10.0, (method, t[method])  # bulk kept (|x| < 3 is 99.7 %), outliers clipped
    assert t["mse"] < t["minmax"]


def _quantization_mse(values: np.ndarray, clip: float) -> float:
    step = clip / 127
    return float(np.mean((np.clip(np.round(values / step), -127, 127) * step - values) ** 2))


@pytest.mark.parametrize("outlier", [8.0, 40.0])
def test_mse_threshold_minimises_the_real_quantization_error(outlier):
    values = gaussian_with_outliers()
    values[:20] = np.sign(values[:20]) * outlier
    best = threshold(_stats(values), "mse")
    best_error = _quantization_mse(values, best)
    for other in (0.7 * best, 0.85 * best, min(1.2 * best, outlier), threshold(_stats(values), "percentile")):
        assert best_error <= _quantization_mse(values, other) * 1.02, other


def test_entropy_is_not_fooled_by_relu_zeros():
    rng = np.random.default_rng(2)
    relu = np.maximum(rng.standard_normal(300_000) * 2.0, 0.0)  # half exact zeros
    t = threshold(_stats(relu), "entropy")
    assert 5.0 < t <= relu.max() + 1e-6  # without the zero-bin fix KL picks the smallest candidate (~0.07)


def test_percentile_option_and_bad_inputs():
    stats = _stats(gaussian_with_outliers())
    assert threshold(stats, "percentile", 99.0) < threshold(stats, "percentile", 99.99)
    with pytest.raises(ConfigError, match="method"):
        threshold(stats, "kl")
    with pytest.raises(CalibrationError, match="'x'"):
        compute_thresholds({"x": TensorStats()}, "minmax")


def test_outlier_row_flags_heavy_tails():
    row = range_row("t", "all", _stats(gaussian_with_outliers()))
    assert row.outlier_dominated and row.max_to_p9999 > 4
    assert row.bulk_levels_minmax < 127 / 4
    clean = range_row("t", "all", _stats(np.random.default_rng(3).uniform(-1, 1, 100_000)))
    assert not clean.outlier_dominated


def test_group_max_keeps_each_groups_own_clip_point_where_pooling_lowers_it():
    """Many small "night" values pull the pooled mse clip point below the "day" group's own one."""
    rng = np.random.default_rng(1)
    day, night = _stats(rng.standard_normal(20_000) * 4.0), _stats(rng.standard_normal(200_000) * 0.5)
    groups = {"day": {"t": day}, "night": {"t": night}}
    own = {g: threshold(s["t"], "mse") for g, s in groups.items()}
    pooled = threshold(day.merged(night), "mse")
    assert pooled < own["day"]  # the scenario-shift case
    assert group_max_thresholds(groups, "mse") == {"t": max(own.values())} == {"t": own["day"]}
    with pytest.raises(CalibrationError, match="no calibration group"):
        group_max_thresholds({}, "mse")
