"""Calibration and plan search from a user's own drives: bags under Autoware topic names, no ground truth."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import yaml

from bev_quant_ros.cli import main as bev_quant
from bev_quant_ros.drives.remap import autoware_params, autoware_renames, remap_bag
from bev_quant_ros.drives.settings import ReaderSettings
from bev_quant_ros.drives.spec import open_drives
from bev_quant_ros.drives.synth import SynthDrive, SynthSpec
from bev_quant_ros.engine.io_check import onnx_precision
from bev_quant_ros.errors import ConfigError
from bev_quant_ros.perception.geometry import load_rig
from bev_quant_ros.quant import assess
from bev_quant_ros.quant.calib_data import (
    DriveSetSpec,
    collect_activation_stats,
    merge_conditions,
    record_drive,
    record_set,
)
from bev_quant_ros.quant.config import load_quant_config
from bev_quant_ros.quant.plan import read_plan
from bev_quant_ros.quant.qdq import calibration_tensors, load_checked, tensorrt_style, write_qdq
from bev_quant_ros.quant.ranges import compute_thresholds
from bev_quant_ros.sim import generate_frames
from bev_quant_ros.sim.bag_writer import write_bag
from bev_quant_ros.sim.ground_truth import GT_TOPIC

FRAMES = 7  # per bag: two windows of 3 and one frame left over
SEEDS = {"day": 50_000, "night": 51_000}
THRESHOLD = 0.102  # the untrained tiny network scores ~0.10: about half its detections are kept as reference


def _vehicle_bag(root, condition: str, frames: int, compressed: bool):
    source = root / f"synth_{condition}_{compressed}"
    write_bag(source, generate_frames(SEEDS[condition], condition, frames), load_rig(), compressed=compressed)
    return remap_bag(source, root / f"{condition}_{compressed}", autoware_renames(compressed), frozenset({GT_TOPIC}))


@pytest.fixture(scope="module")
def vehicle(tmp_path_factory):
    """(bags per condition, params file): compressed cameras, Autoware names, no ground truth."""
    root = tmp_path_factory.mktemp("vehicle_drives")
    bags = {c: _vehicle_bag(root, c, FRAMES, compressed=True) for c in SEEDS}
    return bags, autoware_params(root / "vehicle.param.yaml", compressed=True)


def _config(tmp_path, model, vehicle, **calibration) -> dict:
    bags, params = vehicle
    drives = {"drives": [{"path": str(bags[c]), "condition": c} for c in SEEDS], "params": str(params),
              "frames_per_sequence": 3, "sequences_per_condition": 2}
    return {"model": str(model), "output": str(tmp_path / "int8.onnx"), "cpu_output": str(tmp_path / "int8_cpu.onnx"),
            "plan": str(tmp_path / "plan.yaml"), "work_dir": str(tmp_path / "work"),
            "calibration": {"method": "percentile", **drives, **calibration},
            "validation": {**drives, "sequences_per_condition": 1, "sensitivity_frames": 3},
            "budget_nds": 0.01, "search_budget_nds": 0.01, "reference_score_threshold": THRESHOLD,
            "op_types": ["MatMul", "Softmax"]}


def _load(tmp_path, doc: dict):
    path = tmp_path / "quant.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_quant_config(path)


def test_drive_lists_give_balanced_windows_each_starting_from_a_reset(tmp_path, tiny_model_path, vehicle):
    config = _load(tmp_path, _config(tmp_path, tiny_model_path, vehicle))
    assert isinstance(config.calibration, DriveSetSpec) and config.calibration.conditions == ("day", "night")
    assert config.reference_score_threshold == THRESHOLD
    sequences = record_set(tiny_model_path, config.calibration)
    assert [s.condition for s in sequences] == ["day", "day", "night", "night"]
    assert [s.name.rsplit("@", 1)[1] for s in sequences] == ["0", "3"] * 2  # consecutive windows, 7th frame dropped
    assert [s.resets for s in sequences] == [[True, False, False]] * 4
    assert not any(s.has_ground_truth for s in sequences)
    # the second window continues the drive: its ego motion is not the identity after the first frame
    assert not np.allclose(sequences[1].feeds[1]["ego_motion"], [[1, 0, 0], [0, 1, 0]])


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["calibration"]["drives"][0].update(path="/no/such/bag"), "/no/such/bag does not exist"),
    (lambda d: d["calibration"].update(frame_per_sequence=3), r"unknown key\(s\) \[.frame_per_sequence.\]"),
    (lambda d: d["calibration"]["drives"][1].pop("condition"), r"drives\[1\] needs path and condition"),
    (lambda d: d["calibration"]["drives"][0].update(label="x"), r"drives\[0\]: unknown key\(s\) \['label'\]"),
    (lambda d: d["validation"].update(conditions=["day"]), r"validation: unknown key\(s\) \['conditions'\]"),
    (lambda d: d.update(refrence_score_threshold=0.3), r"unknown key\(s\) \['refrence_score_threshold'\]"),
    (lambda d: d.update(reference_score_threshold=1.5), "reference_score_threshold must be in"),
    (lambda d: d["validation"].update(modes=["fused", "lidar"]), r"validation: unknown mode\(s\) \['lidar'\]"),
])
def test_bad_drive_lists_are_one_line_config_errors(tmp_path, tiny_model_path, vehicle, edit, message):
    doc = _config(tmp_path, tiny_model_path, vehicle)
    edit(doc)
    with pytest.raises(ConfigError, match=message) as error:
        _load(tmp_path, doc)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("calibration, message", [
    ({"frames_per_sequence": FRAMES + 1}, f"has fewer frames than one window of {FRAMES + 1}"),
    ({"sequences_per_condition": 3}, r"not balanced: condition\(s\) \{'day': 2, 'night': 2\} give fewer than 3"),
])
def test_drives_too_short_for_the_windows_are_config_errors(tmp_path, tiny_model_path, vehicle, calibration,
                                                            message):
    config = _load(tmp_path, _config(tmp_path, tiny_model_path, vehicle, **calibration))
    with pytest.raises(ConfigError, match=message):
        record_set(tiny_model_path, config.calibration)


def test_recording_a_bag_equals_recording_the_same_frames_from_the_simulator(tmp_path, tiny_model_path):
    bag = _vehicle_bag(tmp_path, "day", 4, compressed=False)  # raw images: the same pixels as the simulator's
    [drive] = open_drives(bag, ReaderSettings.from_params_file(autoware_params(tmp_path / "p.yaml", False)))
    [from_bag] = record_drive(tiny_model_path, drive)
    [from_sim] = record_drive(tiny_model_path, SynthDrive(SynthSpec("day", SEEDS["day"], 4)))
    assert from_bag.resets == from_sim.resets == [True, False, False, False]
    assert len(from_bag) == len(from_sim) == 4
    for a, b in zip(from_bag.feeds, from_sim.feeds):
        assert a.keys() == b.keys()
        for name in ("images", "camera_valid", "lidar_bev", "ego_motion"):
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        # the rig comes from the bag's CameraInfo + tf_static (float64 round trip), not the rig file
        np.testing.assert_allclose(a["cam_grid"], b["cam_grid"], atol=1e-5)
    assert from_sim.has_ground_truth and not from_bag.has_ground_truth


@pytest.fixture(scope="module")
def no_gt_validation(tiny_network_path, vehicle):
    """The FP32 tiny network's run over windows of the bags without ground truth, and an all-INT8 run."""
    bags, params = vehicle
    settings = ReaderSettings.from_params_file(params)
    sequences = [s for c, bag in bags.items() for drive in open_drives(bag, settings, c)
                 for s in record_drive(tiny_network_path, drive, c, 3)]
    model = load_checked(tiny_network_path)
    stats = collect_activation_stats(model, sequences, calibration_tensors(model))
    thresholds = compute_thresholds(merge_conditions(stats), "percentile")
    int8 = write_qdq(tiny_network_path, tiny_network_path.parent / "all_int8.onnx", thresholds)
    return sequences, assess.run_model(tiny_network_path, sequences), assess.run_model(int8, sequences)


def test_without_ground_truth_fp32_detections_are_the_reference_and_fp32_scores_one(no_gt_validation):
    sequences, fp32, int8 = no_gt_validation
    reference = assess.reference_for(sequences, fp32, THRESHOLD)
    assert reference.label == "FP32 detections >= 0.102"
    kept = sum(int((d.scores >= THRESHOLD).sum()) for d in fp32.detections)
    assert 0 < kept < sum(len(d) for d in fp32.detections)  # a real cut: some, not all, detections
    assert sum(len(b) for b in reference.boxes) == kept and all(b.scores is None for b in reference.boxes)
    confident = dataclasses.replace(fp32, detections=[d.select(d.scores >= THRESHOLD) for d in fp32.detections])
    for condition, row in assess.nds_by_condition(confident, reference).items():  # exactly the reference boxes
        assert row["mAP"] == pytest.approx(1.0, abs=1e-12) and row["NDS"] == pytest.approx(1.0, abs=1e-12), condition
    self_score = assess.nds_by_condition(fp32, reference)
    assert set(self_score) == {"day", "night", "all"}
    for condition, row in self_score.items():
        # every reference box is matched at distance 0 (TP errors 0); the detections below the threshold only
        # lower the precision at recall 1, which the devkit's AP samples: mAP just under 1
        assert 0.99 < row["mAP"] < 1.0 and row["NDS"] == pytest.approx((5 * row["mAP"] + 4) / 9, abs=1e-12)
    quantized = assess.nds_by_condition(int8, reference)["all"]
    assert 0.0 < quantized["NDS"] < 0.999 and quantized["mAP"] < 1.0  # INT8 departs from FP32 (scores, boxes)


def test_with_ground_truth_it_is_the_reference_and_a_mixed_set_names_both(no_gt_validation, tiny_network_path):
    sequences, fp32, _ = no_gt_validation
    [simulated] = record_drive(tiny_network_path, SynthDrive(SynthSpec("day", 52_000, 3)))
    sim_run = assess.run_model(tiny_network_path, [simulated])
    reference = assess.reference_for([simulated], sim_run)
    assert reference.label == "ground truth" and reference.boxes == simulated.ground_truth
    mixed = assess.reference_for([simulated, sequences[0]], assess.run_model(tiny_network_path,
                                                                             [simulated, sequences[0]]), THRESHOLD)
    assert mixed.label == "ground truth + FP32 detections >= 0.102"
    assert mixed.boxes[:3] == simulated.ground_truth and mixed.gt_num_lidar_points[3:] == [None] * 3


def test_calibrate_on_own_drives_without_ground_truth_writes_both_flavours_and_names_the_reference(
        tmp_path, tiny_network_path, vehicle, capsys):
    doc = _config(tmp_path, tiny_network_path, vehicle)
    path = tmp_path / "quant.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert bev_quant(["calibrate", "--config", str(path)]) == 0
    assert onnx_precision(load_checked(tmp_path / "int8.onnx")) == "int8"
    assert tensorrt_style(tmp_path / "int8.onnx")[0] and not tensorrt_style(tmp_path / "int8_cpu.onnx")[0]
    plan = read_plan(tmp_path / "plan.yaml")
    label = "FP32 detections >= 0.102"
    assert plan.measured["reference"] == label
    assert all(0.99 < v <= 1.0 for v in plan.measured["nds_fp32"].values())  # FP32 against itself
    assert plan.measured["validation_set"]["conditions"] == ["day", "night"]
    # all-INT8 loses more than the 1-point budget: some node stays float, its reason names the reference
    assert plan.float_nodes and all(f.reason.endswith(f"NDS vs {label}") for f in plan.float_nodes)
    assert json.loads((tmp_path / "work" / "search.json").read_text())["reference"] == label
    assert "float node(s)" in capsys.readouterr().out
    # statistics as one task per sequence on two local processes: the same models, byte for byte
    single = {name: (tmp_path / name).read_bytes() for name in ("int8.onnx", "int8_cpu.onnx")}
    assert bev_quant(["calibrate", "--config", str(path), "--workers", "2"]) == 0
    assert {name: (tmp_path / name).read_bytes() for name in single} == single
    capsys.readouterr()
    out = tmp_path / "report"
    assert bev_quant(["quant-report", "--config", str(path), "--out", str(out), "--drift-frames", "3"]) == 0
    report = (out / "README.md").read_text()
    assert f"## Per-condition NDS on the validation drives (not held out), against {label}" in report
    assert f"NDS against {label}." in report and "Recurrent drift over 3 frames (day_True@0)" in report
    assert json.loads((out / "report.json").read_text())["reference"] == label
    capsys.readouterr()  # the report's progress bars
    doc["validation"]["drives"][0]["path"] = str(tmp_path / "missing")
    path.write_text(yaml.safe_dump(doc))
    assert bev_quant(["calibrate", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("calibrate: ") and "missing does not exist" in err and "\n" not in err
