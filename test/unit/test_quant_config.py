"""The calibration config: the shipped file loads; bad values are ConfigErrors naming the key."""

from pathlib import Path

import pytest
import yaml

from bev_quant_ros.errors import ConfigError
from bev_quant_ros.quant.config import load_quant_config

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "config" / "quant_bev_tiny.yaml"


def test_shipped_config_is_balanced_and_disjoint_from_training_and_held_out_seeds():
    config = load_quant_config(SHIPPED, root=ROOT)
    assert config.model == ROOT / "models/bev_tiny.onnx" and config.output == ROOT / "models/bev_tiny.int8.onnx"
    assert config.cpu_output == ROOT / "models/bev_tiny.int8_cpu.onnx"
    assert config.calibration.conditions == ("day", "night", "rain", "fog")
    seeds = [s.seed for s in config.calibration.synth_specs() + config.validation.synth_specs()]
    assert len(set(seeds)) == len(seeds) and min(seeds) >= 10_000 and max(seeds) < 100_000
    assert config.budget_nds == 0.005


@pytest.mark.parametrize("key, value, message", [
    (("calibration", "method"), "kl", "calibration.method"),
    (("calibration", "percentile"), 20.0, "percentile"),
    (("calibration", "bins"), 1000, "bins"),
    (("budget_nds",), -1, "budget_nds"),
    (("search_budget_nds",), 0.01, "search_budget_nds"),
    (("max_float_nodes",), -1, "max_float_nodes"),
    (("calibration", "group_ranges"), "min", "group_ranges"),
    (("mode_budget_scale",), {"lidar_only": 2.0}, "mode_budget_scale"),
    (("mode_budget_scale",), {"camera_only": 0.0}, "mode_budget_scale"),
    (("float_modules",), "/detector/box_head", "float_modules"),  # a string, not a list of prefixes
    (("float_modules",), ["/"], "float_modules"),  # the root would match every node
])
def test_bad_values_are_named(tmp_path, key, value, message):
    doc = yaml.safe_load(SHIPPED.read_text())
    target = doc
    for part in key[:-1]:
        target = target[part]
    target[key[-1]] = value
    path = tmp_path / "quant.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=message):
        load_quant_config(path, root=ROOT)


def test_v3_config_caps_the_float_nodes_for_speed():
    config = load_quant_config(ROOT / "config" / "quant_bev_v3.yaml", root=ROOT)
    assert config.max_float_nodes == 6 and "glare" in config.calibration.conditions
    assert config.group_ranges == "max"
    assert load_quant_config(SHIPPED, root=ROOT).max_float_nodes == 16  # the default


def test_v3_keeps_the_detection_heads_float_and_its_plan_lists_every_head_node():
    from bev_quant_ros.quant.plan import module_float_nodes, read_plan

    config = load_quant_config(ROOT / "config" / "quant_bev_v3.yaml", root=ROOT)
    assert config.float_modules == ("/detector/head_trunk", "/detector/heatmap_head", "/detector/box_head")
    assert load_quant_config(SHIPPED, root=ROOT).float_modules == ()  # the default: none
    heads = [f.node for f in module_float_nodes(config.model, config.float_modules, config.op_types)]
    assert len(heads) == 8  # 5 convs, 3 relus
    assert set(heads) <= set(read_plan(config.plan).node_names())  # the shipped plan was searched with them


def test_goal_points_per_mode_scale_the_budget_and_default_to_it():
    """Issue 15's goals: 0.5 NDS points fused, 1.0 camera-only; one source for bench_quant and the search."""
    v3 = load_quant_config(ROOT / "config" / "quant_bev_v3.yaml", root=ROOT)
    assert (v3.goal_points("fused"), v3.goal_points("camera_only")) == (0.5, 1.0)
    tiny = load_quant_config(SHIPPED, root=ROOT)
    assert tiny.mode_budget_scale == {} and tiny.goal_points("camera_only") == tiny.budget_nds * 100


def test_v3_int8_models_keep_both_softmaxes_float():
    """Their logits stay float: the attention Softmax in int8 cost the TensorRT flavour 3 NDS points
    camera-only (config comment); their outputs may still be int8 where an int8 MatMul/Concat reads them."""
    import onnx

    config = load_quant_config(ROOT / "config" / "quant_bev_v3.yaml", root=ROOT)
    assert "Softmax" not in config.op_types
    for path in (config.output, config.cpu_output):
        graph = onnx.load(str(path)).graph
        producer = {out: node.op_type for node in graph.node for out in node.output}
        softmaxes = [node for node in graph.node if node.op_type == "Softmax"]
        assert len(softmaxes) == 2, path
        for node in softmaxes:
            assert producer[node.input[0]] != "DequantizeLinear", (path, node.name)


@pytest.mark.parametrize("model", ["bev_v3", "bev_tiny"])
def test_a_variant_config_extends_another_and_replaces_only_its_own_keys(tmp_path, model):
    pruned = load_quant_config(ROOT / "config" / f"quant_{model}_p50.yaml", root=ROOT)
    parent = load_quant_config(ROOT / "config" / f"quant_{model}.yaml", root=ROOT)
    assert pruned.model == ROOT / f".cache/prune/{model}_p50.onnx"
    assert pruned.work_dir == ROOT / f".cache/quant_{model}_p50"
    assert (pruned.calibration, pruned.validation, pruned.op_types, pruned.group_ranges, pruned.max_float_nodes,
            pruned.method, pruned.budget_nds) == (
        parent.calibration, parent.validation, parent.op_types, parent.group_ranges, parent.max_float_nodes,
        parent.method, parent.budget_nds)
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_quant_config(tmp_path / "a.yaml", root=tmp_path)


def test_missing_section_is_named(tmp_path):
    doc = yaml.safe_load(SHIPPED.read_text())
    del doc["validation"]
    (tmp_path / "quant.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="validation"):
        load_quant_config(tmp_path / "quant.yaml", root=ROOT)


def test_shipped_model_per_precision_and_backend():
    from bev_quant_ros.resources import DEFAULT_MODEL_STEM, default_model_path

    assert default_model_path("fp32", "tensorrt") == ROOT / f"models/{DEFAULT_MODEL_STEM}.onnx"
    assert default_model_path("int8", "tensorrt", "bev_v3") == ROOT / "models/bev_v3.qat.int8.onnx"  # the QAT student
    assert default_model_path("int8", "tensorrt", "bev_tiny") == ROOT / "models/bev_tiny.int8.onnx"  # no QAT: PTQ
    assert default_model_path("int8", "onnxruntime", "bev_v3") == ROOT / "models/bev_v3.qat.int8_cpu.onnx"  # CPU grid
    assert default_model_path("int8", "onnxruntime", "bev_tiny") == ROOT / "models/bev_tiny.int8_cpu.onnx"
    assert default_model_path("int8") == default_model_path("int8", "onnxruntime", DEFAULT_MODEL_STEM)
    with pytest.raises(ConfigError, match="precision 'fp16'"):
        default_model_path("fp16", "onnxruntime")


def _with_modes(tmp_path, section: str, modes) -> Path:
    doc = yaml.safe_load(SHIPPED.read_text())
    doc[section]["modes"] = modes
    path = tmp_path / "quant.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_modes_default_to_fused_and_the_plan_file_describes_the_set_as_before():
    config = load_quant_config(SHIPPED, root=ROOT)
    assert config.calibration.modes == config.validation.modes == ("fused",)
    assert "modes" not in config.validation.describe()  # the shipped plan's validation_set is unchanged


def test_camera_only_mode_is_recorded_and_described(tmp_path):
    config = load_quant_config(_with_modes(tmp_path, "validation", ["fused", "camera_only"]), root=ROOT)
    assert config.validation.modes == ("fused", "camera_only") and config.calibration.modes == ("fused",)
    assert config.validation.describe()["modes"] == ["fused", "camera_only"]


@pytest.mark.parametrize("section, modes, message", [
    ("calibration", ["fused", "lidar_only"], r"calibration: unknown mode\(s\) \['lidar_only'\]; expected some of "
                                             r"\['fused', 'camera_only'\]"),
    ("validation", ["camera"], r"validation: unknown mode\(s\) \['camera'\]"),
    ("validation", "camera_only", r"validation.modes must be a list"),
    ("calibration", [], "modes must be a non-empty list without repeats"),
    ("calibration", ["fused", "fused"], "modes must be a non-empty list without repeats"),
])
def test_bad_modes_are_config_errors(tmp_path, section, modes, message):
    with pytest.raises(ConfigError, match=message):
        load_quant_config(_with_modes(tmp_path, section, modes), root=ROOT)


def test_calibrate_stops_on_a_float_module_typo_before_recording_anything(tmp_path):
    import dataclasses

    from bev_quant_ros.errors import PrecisionPlanError
    from bev_quant_ros.quant.calibrate import STATS_FILE, run_calibration

    config = dataclasses.replace(load_quant_config(SHIPPED, root=ROOT), work_dir=tmp_path / "work",
                                 float_modules=("/detector/box_haed",), plan=tmp_path / "plan.yaml",
                                 output=tmp_path / "int8.onnx", cpu_output=None)
    with pytest.raises(PrecisionPlanError, match="'/detector/box_haed' matches no"):
        run_calibration(config)
    assert not (tmp_path / "work" / STATS_FILE).exists() and not config.plan.exists()
