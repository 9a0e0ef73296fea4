"""Sensor modes in calibration and validation sets: camera-only windows recorded through the real pipeline
with the lidar withheld, grouped per (condition, mode) wherever results are grouped."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bev_quant_ros.drives.remap import remap_bag
from bev_quant_ros.drives.settings import ReaderSettings
from bev_quant_ros.drives.spec import open_drives
from bev_quant_ros.drives.synth import SynthDrive, SynthSpec
from bev_quant_ros.perception.geometry import load_rig
from bev_quant_ros.quant import assess
from bev_quant_ros.quant.calib_data import (
    MODES,
    SequenceSetSpec,
    collect_activation_stats,
    group_key,
    merge_conditions,
    mode_of,
    record_drive,
    record_set,
)
from bev_quant_ros.quant.plan import search_plan, worst_group
from bev_quant_ros.quant.qdq import calibration_tensors, load_checked
from bev_quant_ros.quant.ranges import compute_thresholds
from bev_quant_ros.quant.sensitivity import measure_sensitivity
from bev_quant_ros.sim import generate_frames
from bev_quant_ros.sim.bag_writer import write_bag
from tiny_model import write_contract_model

SEED = 50_000
PAIRED = ("images", "camera_valid", "cam_grid", "ego_motion", "dt")  # what the lidar does not change
GROUPS = {"day", "day/camera_only", "night", "night/camera_only", "all"}


@pytest.fixture(scope="module")
def v3_model_path(tiny_model_config, tmp_path_factory):
    """The torch-free contract graph declaring v3's optional inputs dt and lidar_valid."""
    cfg = dataclasses.replace(tiny_model_config, network=dataclasses.replace(tiny_model_config.network, version=3),
                              optional_inputs=("dt", "lidar_valid"))
    return write_contract_model(cfg, tmp_path_factory.mktemp("v3_contract") / "v3.onnx")


def _set(seed_base: int, modes: tuple[str, ...] = MODES, frames: int = 4) -> SequenceSetSpec:
    return SequenceSetSpec(("day", "night"), 1, frames, seed_base, modes)


def _without_ground_truth(sequences):
    """Scored against the FP32 detections: an untrained graph scores ~0 against ground truth in every group."""
    return [dataclasses.replace(s, ground_truth=[], gt_num_lidar_points=[]) for s in sequences]


def test_group_key_is_the_condition_for_fused_and_names_any_other_mode():
    assert group_key("night", "fused") == "night" and group_key("night", "camera_only") == "night/camera_only"
    assert [mode_of(group_key("night", m)) for m in MODES] == list(MODES)


def test_camera_only_windows_feed_lidar_valid_0_and_a_zero_raster_paired_with_the_fused_ones(v3_model_path):
    sequences = record_set(v3_model_path, _set(SEED))
    assert [(s.condition, s.mode, s.group) for s in sequences] == [
        ("day", "fused", "day"), ("day", "camera_only", "day/camera_only"),
        ("night", "fused", "night"), ("night", "camera_only", "night/camera_only")]
    assert [s.name for s in sequences] == ["synth:day:50000:4@0", "synth:day:50000:4@0/camera_only",
                                           "synth:night:51000:4@0", "synth:night:51000:4@0/camera_only"]
    for fused, camera_only in (sequences[:2], sequences[2:]):
        assert fused.resets == camera_only.resets == [True, False, False, False]
        for f, c in zip(fused.ground_truth, camera_only.ground_truth, strict=True):  # same frames, same boxes
            np.testing.assert_array_equal(f.centers, c.centers)
        for f, c in zip(fused.feeds, camera_only.feeds):
            assert f.keys() == c.keys()
            assert f["lidar_valid"].tolist() == [1.0] and f["lidar_bev"].any()
            assert c["lidar_valid"].tolist() == [0.0] and not c["lidar_bev"].any()
            assert c["lidar_bev"].shape == f["lidar_bev"].shape and c["lidar_bev"].dtype == np.float32
            for name in PAIRED:
                np.testing.assert_array_equal(f[name], c[name], err_msg=name)


def test_fused_windows_are_bit_identical_with_or_without_camera_only_windows(v3_model_path):
    mixed = [s for s in record_set(v3_model_path, _set(SEED)) if s.mode == "fused"]
    default = record_set(v3_model_path, dataclasses.replace(_set(SEED), modes=("fused",)))
    assert [s.name for s in mixed] == [s.name for s in default]
    for a, b in zip(mixed, default):
        assert a.resets == b.resets and len(a) == len(b) == 4
        for fa, fb in zip(a.feeds, b.feeds):
            assert fa.keys() == fb.keys()
            for name in fa:
                assert fa[name].dtype == fb[name].dtype and fa[name].tobytes() == fb[name].tobytes(), name


def test_a_camera_only_window_is_what_the_node_reader_makes_of_a_bag_without_its_lidar_topic(tmp_path,
                                                                                               v3_model_path):
    settings = ReaderSettings.from_params()  # the node's defaults: the bag is written under its topic names
    source = write_bag(tmp_path / "drive", generate_frames(SEED, "day", 4), load_rig(), compressed=False).path
    lidar_fault = remap_bag(source, tmp_path / "no_lidar", {}, drop=frozenset({settings.lidar_topic}))
    [from_bag] = record_drive(v3_model_path, open_drives(lidar_fault, settings)[0])
    [camera_only] = record_drive(v3_model_path, SynthDrive(SynthSpec("day", SEED, 4)), mode="camera_only")
    assert from_bag.mode == "fused" and camera_only.mode == "camera_only"  # the bag is read as recorded
    assert from_bag.resets == camera_only.resets and len(from_bag) == len(camera_only) == 4
    for a, b in zip(from_bag.feeds, camera_only.feeds):
        assert a.keys() == b.keys()
        for name in ("images", "camera_valid", "lidar_bev", "lidar_valid", "ego_motion", "dt"):
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        np.testing.assert_allclose(a["cam_grid"], b["cam_grid"], atol=1e-5)  # rig from the bag's CameraInfo


def test_statistics_and_nds_are_grouped_per_condition_and_mode(v3_model_path):
    sequences = record_set(v3_model_path, _set(SEED))
    model = load_checked(v3_model_path)
    stats = collect_activation_stats(model, sequences, ["lidar_bev", "images"])
    assert set(stats) == GROUPS - {"all"}
    assert stats["night/camera_only"]["lidar_bev"].absmax == 0.0 < stats["night"]["lidar_bev"].absmax
    run = assess.run_model(v3_model_path, sequences)
    assert set(assess.nds_by_condition(run, assess.reference_for(sequences, run))) == GROUPS


def test_worst_group_is_the_largest_loss_over_every_group_but_all():
    fp32 = {"day": {"NDS": 0.60}, "day/camera_only": {"NDS": 0.40}, "all": {"NDS": 0.9}}
    int8 = {"day": {"NDS": 0.59}, "day/camera_only": {"NDS": 0.35}, "all": {"NDS": 0.2}}
    group, drop = worst_group(fp32, int8)
    assert group == "day/camera_only" and drop == pytest.approx(0.05)


def test_worst_group_judges_each_mode_by_its_own_budget_scale():
    """Camera-only's 5-point loss at scale 2 counts as 2.5 fused points, below the fused 3-point loss."""
    fp32 = {"day": {"NDS": 0.60}, "day/camera_only": {"NDS": 0.40}, "all": {"NDS": 0.9}}
    int8 = {"day": {"NDS": 0.57}, "day/camera_only": {"NDS": 0.35}, "all": {"NDS": 0.2}}
    assert worst_group(fp32, int8)[0] == "day/camera_only"
    group, drop = worst_group(fp32, int8, {"camera_only": 2.0})
    assert group == "day" and drop == pytest.approx(0.03)
    int8["day"]["NDS"] = 0.59
    assert worst_group(fp32, int8, {"camera_only": 2.0}) == ("day/camera_only", pytest.approx(0.025))


def test_the_plan_search_keeps_nodes_float_for_a_camera_only_group_a_fused_only_set_never_sees(v3_model_path):
    """All-INT8 loses ~0.1 NDS on the fused groups and far more at night camera-only (ranges fitted to
    fused frames, measured, not assumed): under a 0.3 budget only the set with camera-only windows
    makes the search keep nodes float, and its log names the camera-only group."""
    model = load_checked(v3_model_path)
    calibration = [s for s in record_set(v3_model_path, _set(SEED)) if s.mode == "fused"]
    stats = collect_activation_stats(model, calibration, calibration_tensors(model))
    thresholds = compute_thresholds(merge_conditions(stats), "percentile")
    mixed = _without_ground_truth(record_set(v3_model_path, _set(60_000)))
    fused_only = [s for s in mixed if s.mode == "fused"]
    budget = 0.3
    results = {}
    for label, validation in (("mixed", mixed), ("fused", fused_only)):
        sensitivity = measure_sensitivity(v3_model_path, thresholds, validation)
        results[label] = search_plan(v3_model_path, thresholds, sensitivity, validation, budget)
    chosen, steps, fp32, _ = results["mixed"]
    assert set(fp32) == GROUPS and set(steps[0].nds) == GROUPS
    assert steps[0].float_nodes == [] and steps[0].worst_group == "night/camera_only"
    assert steps[0].worst_drop > budget >= max(fp32[g]["NDS"] - steps[0].nds[g]["NDS"] for g in ("day", "night"))
    plan = next(st for st in steps if sorted(st.float_nodes) == sorted(chosen))
    assert chosen and plan.worst_drop <= budget
    fused_chosen, fused_steps, fused_fp32, _ = results["fused"]
    assert set(fused_fp32) == {"day", "night", "all"} and fused_chosen == [] and len(fused_steps) == 1
