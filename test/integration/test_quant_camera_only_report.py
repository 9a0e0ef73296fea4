"""`bev-quant calibrate` and `quant-report` on sets with camera-only windows: every per-condition result is per
(condition, mode), end to end through the commands, on the tiny network (a v2 graph: no lidar_valid input,
camera-only frames are its zero raster)."""

from __future__ import annotations

import json
import pickle

import yaml

from bev_quant_ros.cli import main as bev_quant
from bev_quant_ros.quant.calib_data import mode_of
from bev_quant_ros.quant.calibrate import SEARCH_FILE, STATS_FILE
from bev_quant_ros.quant.plan import read_plan

GROUPS = ["day", "day/camera_only", "night", "night/camera_only"]
MODES = ["fused", "camera_only"]
SCALE = {"fused": 0.5, "camera_only": 2.0}  # fused drops doubled: this net's camera-only drops are ~0


def _config(tmp_path, model) -> str:
    doc = {"model": str(model), "output": str(tmp_path / "int8.onnx"), "cpu_output": str(tmp_path / "int8_cpu.onnx"),
           "plan": str(tmp_path / "plan.yaml"), "work_dir": str(tmp_path / "work"),
           "calibration": {"method": "percentile", "conditions": ["day", "night"], "sequences_per_condition": 1,
                           "frames_per_sequence": 3, "seed_base": 50_000, "modes": MODES},
           "validation": {"conditions": ["day", "night"], "sequences_per_condition": 1, "frames_per_sequence": 3,
                          "seed_base": 60_000, "sensitivity_frames": 2, "modes": MODES},
           "budget_nds": 0.01, "search_budget_nds": 0.01, "op_types": ["Conv", "Relu", "Concat"],
           "mode_budget_scale": SCALE}
    path = tmp_path / "quant.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_calibrate_and_report_group_every_result_per_condition_and_mode(tmp_path, tiny_network_path, capsys):
    config = _config(tmp_path, tiny_network_path)
    assert bev_quant(["calibrate", "--config", config]) == 0
    work = tmp_path / "work"
    assert list(pickle.loads((work / STATS_FILE).read_bytes())) == GROUPS  # statistics per group
    plan = read_plan(tmp_path / "plan.yaml")
    assert plan.measured["validation_set"]["modes"] == MODES
    assert list(plan.measured["nds_fp32"]) == [*GROUPS, "all"] == list(plan.measured["nds_plan"])
    search = json.loads((work / SEARCH_FILE).read_text())
    steps = search["steps"]
    assert all(step["worst_group"] in GROUPS for step in steps)
    assert plan.mode_budget_scale == SCALE
    for step in steps:  # each step's worst drop: the largest loss divided by its mode's factor
        scaled = {g: (search["fp32"][g]["NDS"] - step["nds"][g]["NDS"]) / SCALE[mode_of(g)] for g in GROUPS}
        assert step["worst_drop"] == max(scaled.values()) == scaled[step["worst_group"]]
    capsys.readouterr()
    out = tmp_path / "report"
    assert bev_quant(["quant-report", "--config", config, "--out", str(out), "--eval-frames", "3",
                      "--drift-frames", "3"]) == 0
    report = (out / "README.md").read_text()
    for group in GROUPS:
        assert f"\n| {group} | " in report, group  # a held-out NDS row per condition and mode
    assert "Rows `<condition>/camera_only`: the same drives with every lidar sweep withheld" in report
    assert "| float nodes | worst per-condition NDS drop (points) | worst group |" in report
    assert "### Image-path ranges per condition" in report and "| `image_encoder/out/Conv` |" in report
    written = json.loads((out / "report.json").read_text())
    assert list(written["nds"]["FP32"]) == [*GROUPS, "all"]
    lift_input = next(t for t in written["image_path_ranges"] if t.endswith("image_encoder/out/Conv_output_0"))
    assert list(written["image_path_ranges"][lift_input]) == GROUPS
