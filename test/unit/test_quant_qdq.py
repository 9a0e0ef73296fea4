"""Calibration -> Q/DQ export -> plan on the tiny exported model: structure, errors, TensorRT parse."""

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from bev_quant_ros.engine.io_check import onnx_precision
from bev_quant_ros.errors import CalibrationError, ConfigError, ModelContractError, PrecisionPlanError
from bev_quant_ros.perception.model_config import model_config_for_onnx
from bev_quant_ros.quant import assess
from bev_quant_ros.quant.calib_data import (
    RecordedSequence,
    SequenceSetSpec,
    collect_activation_stats,
    merge_conditions,
    record_set,
)
from bev_quant_ros.quant.calibrate import calibrate_ranges
from bev_quant_ros.quant.config import QuantConfig
from bev_quant_ros.quant.drift import drift_curve, state_path_nodes
from bev_quant_ros.quant.plan import (
    FloatNode,
    PrecisionPlan,
    apply_plan,
    float_reasons,
    module_float_nodes,
    prune_pass,
    read_plan,
    search_plan,
    write_plan,
)
from bev_quant_ros.quant.qdq import (
    CPU,
    DEFAULT_OP_TYPES,
    TENSORRT,
    activation_ranges,
    calibration_tensors,
    load_checked,
    tensorrt_style,
    write_ort_default,
    write_qdq,
)
from bev_quant_ros.quant.ranges import compute_thresholds
from bev_quant_ros.quant.sensitivity import NodeSensitivity, candidate_nodes


@pytest.fixture(scope="module")
def calibrated(tiny_network_path):
    """Two 3-frame sequences (day, night) recorded through the pipeline; percentile thresholds.

    Not entropy: on this untrained model KL clips the long tails so hard that the head
    error is 0.45 (minmax/percentile/mse: 0.004), which would hide what these tests check.
    """
    sequences = record_set(tiny_network_path, SequenceSetSpec(("day", "night"), 1, 3, 50_000))
    model = load_checked(tiny_network_path)
    stats = collect_activation_stats(model, sequences, calibration_tensors(model))
    return sequences, stats, compute_thresholds(merge_conditions(stats), "percentile")


def test_sequences_carry_resets_and_per_condition_stats(calibrated):
    sequences, stats, thresholds = calibrated
    assert [s.condition for s in sequences] == ["day", "night"]
    assert [s.resets for s in sequences] == [[True, False, False]] * 2  # first frame: no previous state
    assert set(stats) == {"day", "night"}
    image = next(t for t in thresholds if t.endswith("image_encoder/Mul_output_0"))  # normalised pixels
    assert stats["night"][image].mean < stats["day"][image].mean - 0.3  # night is darker: ranges differ
    assert all(t > 0 for t in thresholds.values())


def test_calibration_never_clips_the_normalised_image(calibrated, tiny_network_path, tmp_path):
    sequences, _, _ = calibrated
    spec = SequenceSetSpec(("day", "night"), 1, 3, 50_000)
    config = QuantConfig(model=tiny_network_path, output=tmp_path / "int8.onnx", plan=tmp_path / "plan.yaml",
                         work_dir=tmp_path, method="mse", percentile=99.0, bins=2048, calibration=spec,
                         validation=spec, sensitivity_frames=3, budget_nds=0.005, search_budget_nds=0.0025)
    calibration = calibrate_ranges(config, sequences)
    image = next(t for t in calibration.observed if t.endswith("image_encoder/Mul_output_0"))
    cfg = model_config_for_onnx(tiny_network_path)
    mean, std = np.array(cfg.image_mean), np.array(cfg.image_std)
    low, high = float(np.min(-mean / std)), float(np.max((255.0 - mean) / std))
    assert calibration.observed[image] == pytest.approx((low, high), rel=1e-5)  # exact, not the data's
    seen = calibration.stats["day"][image].merged(calibration.stats["night"][image])
    assert seen.maximum < high  # synthetic frames never reach full white in the brightest channel
    for method, thresholds in calibration.thresholds.items():
        assert thresholds[image] == pytest.approx(max(-low, high), rel=1e-5), method  # no method clips it


def test_seed_bands_are_enforced():
    with pytest.raises(ConfigError, match="overlap"):
        SequenceSetSpec(("day",), 1, 3, 5_000)
    with pytest.raises(ConfigError, match="overlap"):
        SequenceSetSpec(("day", "night"), 1, 3, 99_000)


def test_qdq_is_tensorrt_style_and_close_to_fp32(calibrated, tiny_network_path, tmp_path):
    sequences, _, thresholds = calibrated
    out = write_qdq(tiny_network_path, tmp_path / "tiny.int8.onnx", thresholds)
    model = onnx.load(out)
    assert onnx_precision(model) == "int8" and out.with_suffix(".yaml").is_file()
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert dq and all(inits[n.input[2]].dtype == np.int8 and not inits[n.input[2]].any()
                      for n in dq if len(n.input) > 2)  # symmetric signed: zero point 0
    assert not any(inits.get(n.input[0], np.zeros(0, np.int8)).dtype == np.int32 for n in dq)  # bias float
    per_channel = [n for n in dq if inits.get(n.input[1], np.zeros(1)).size > 1]
    assert per_channel, "conv weights must have per-channel scales"
    assert tensorrt_style(out) == (True, "symmetric int8, float bias")
    baseline = write_ort_default(tiny_network_path, tmp_path / "ort_default.onnx", sequences)
    assert not tensorrt_style(baseline)[0]  # ORT's defaults: int32 bias DQ / asymmetric activations
    fp32 = assess.run_model(tiny_network_path, sequences, keep_heads=True)
    int8 = assess.run_model(out, sequences, keep_heads=True)
    assert 0 < assess.head_error(fp32, int8) < 0.2


def test_quantization_writes_nothing_beside_the_model(calibrated, tiny_network_path, tmp_path, monkeypatch):
    """ORT's shape inference writes `<model>-inferred.onnx` beside the file it is given; next to a
    shared model, parallel plan trials deleted each other's file (FileNotFoundError)."""
    sequences, _, thresholds = calibrated
    real, written = onnx.shape_inference.infer_shapes_path, []

    def spy(model_path, output_path="", *args, **kwargs):
        written.append(output_path)
        return real(model_path, output_path, *args, **kwargs)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes_path", spy)
    write_qdq(tiny_network_path, tmp_path / "tiny.int8.onnx", thresholds)
    write_ort_default(tiny_network_path, tmp_path / "ort_default.onnx", sequences)
    assert len(written) >= 2
    assert not [p for p in written if Path(p).parent == Path(tiny_network_path).parent]


def test_cpu_flavour_has_unsigned_activations_and_relu_ranges_start_at_zero(calibrated, tiny_network_path, tmp_path):
    sequences, stats, thresholds = calibrated
    merged = merge_conditions(stats)
    observed = {name: (s.minimum, s.maximum) for name, s in merged.items()}
    out = write_qdq(tiny_network_path, tmp_path / "tiny.int8_cpu.onnx", thresholds, flavour=CPU, observed=observed)
    model = onnx.load(out)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in thresholds]
    assert quantize and all(inits[n.input[2]].dtype == np.uint8 for n in quantize)  # activations: u8
    relu_outputs = [n.output[0] for n in model.graph.node if n.op_type == "Relu"] + [
        t for t in thresholds if t.endswith("Relu_output_0")]
    relu_q = [n for n in quantize if n.input[0] in relu_outputs]
    assert relu_q and all(int(inits[n.input[2]]) == 0 for n in relu_q)  # [0, T]: zero point 0, all levels >= 0
    for n in relu_q:  # the scale spends 255 steps on [0, T]: half the step of the symmetric flavour
        assert float(inits[n.input[1]]) == pytest.approx(min(thresholds[n.input[0]], observed[n.input[0]][1]) / 255,
                                                          rel=1e-5)
    weights = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
               and inits[n.input[0]].ndim == 4]
    assert weights and all(inits[n.input[0]].dtype == np.int8 and not inits[n.input[2]].any() for n in weights)
    assert tensorrt_style(out)[0] is False  # the TensorRT flavour is the symmetric one
    fp32 = assess.run_model(tiny_network_path, sequences, keep_heads=True)
    assert 0 < assess.head_error(fp32, assess.run_model(out, sequences, keep_heads=True)) < 0.2


def test_activation_ranges_per_flavour_and_cpu_needs_observed_ranges(tiny_network_path, tmp_path):
    thresholds = {"relu": 4.0, "signed": 2.0, "small": 10.0}
    observed = {"relu": (0.0, 6.0), "signed": (-3.0, 1.5), "small": (-1.0, 0.5)}
    assert activation_ranges(thresholds, TENSORRT) == {"relu": (-4.0, 4.0), "signed": (-2.0, 2.0),
                                                       "small": (-10.0, 10.0)}
    assert activation_ranges(thresholds, CPU, observed) == {"relu": (0.0, 4.0), "signed": (-2.0, 1.5),
                                                            "small": (-1.0, 0.5)}
    with pytest.raises(PrecisionPlanError, match="observed min/max"):
        activation_ranges(thresholds, CPU)
    with pytest.raises(PrecisionPlanError, match="observed range.*signed"):
        activation_ranges(thresholds, CPU, {"relu": (0.0, 1.0), "small": (0.0, 1.0)})


def test_excluded_nodes_stay_float_and_plan_roundtrip_is_reproducible(calibrated, tiny_network_path, tmp_path):
    _, _, thresholds = calibrated
    softmax = next(name for name, op in candidate_nodes(tiny_network_path) if op == "Softmax")
    plan = PrecisionPlan("tiny.onnx", "", "entropy", 99.99, ["Conv", "MatMul", "Softmax", "Add"], 0.005,
                         [FloatNode(softmax, "Softmax", "test")], mode_budget_scale={"camera_only": 2.0})
    loaded = read_plan(write_plan(plan, tmp_path / "tiny.precision.yaml"))
    assert loaded.node_names() == [softmax] and loaded.op_types == plan.op_types
    assert loaded.mode_budget_scale == {"camera_only": 2.0}
    first = apply_plan(loaded, tiny_network_path, thresholds, tmp_path / "a.onnx")
    second = apply_plan(loaded, tiny_network_path, thresholds, tmp_path / "b.onnx")
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
    graph = onnx.load(first).graph
    producers = {o: n.op_type for n in graph.node for o in n.output}
    node = next(n for n in graph.node if n.name == softmax)
    consumers = [n.op_type for n in graph.node if node.output[0] in n.input]
    assert consumers and "QuantizeLinear" not in consumers  # its output (probabilities) stays float
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert all(producers[n.input[0]] == "DequantizeLinear" for n in convs)


def test_bad_inputs_are_typed_errors(calibrated, tiny_network_path, tmp_path):
    _, _, thresholds = calibrated
    plan = PrecisionPlan("tiny.onnx", "", "entropy", 99.99, ["Conv"], 0.005, [FloatNode("/no/such/Conv", "", "")])
    with pytest.raises(PrecisionPlanError, match="/no/such/Conv"):
        apply_plan(plan, tiny_network_path, thresholds, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
    renamed = onnx.load(tiny_network_path)
    for value in renamed.graph.input:
        if value.name == "cam_grid":
            value.name = "grid"
    for node in renamed.graph.node:
        node.input[:] = ["grid" if i == "cam_grid" else i for i in node.input]
    onnx.save(renamed, tmp_path / "renamed.onnx")
    with pytest.raises(ModelContractError, match="cam_grid"):
        write_qdq(tmp_path / "renamed.onnx", tmp_path / "y.onnx", thresholds)
    with pytest.raises(CalibrationError, match="empty"):
        collect_activation_stats(load_checked(tiny_network_path), [RecordedSequence("day", "empty")], ["prev_bev"])
    (tmp_path / "broken.yaml").write_text("model: x\n")
    with pytest.raises(PrecisionPlanError, match="malformed"):
        read_plan(tmp_path / "broken.yaml")


def test_state_path_and_int8_drift_from_fp32(calibrated, tiny_network_path, tmp_path):
    sequences, _, thresholds = calibrated
    names = [n for n, _ in candidate_nodes(tiny_network_path)]
    loop = state_path_nodes(load_checked(tiny_network_path), names)
    assert any("temporal" in n for n in loop) and not any("image_encoder" in n for n in loop)
    int8 = write_qdq(tiny_network_path, tmp_path / "tiny.int8.onnx", thresholds)
    curve = drift_curve(tiny_network_path, int8, sequences[0])
    # Q/DQ rounding is visible (a model against itself would give exactly 0 and 1) but small on
    # 3 frames (measured: relative error 0.011-0.019, cosine > 0.9998, every detection matched)
    assert len(curve.cosine) == len(sequences[0].resets) == 3
    assert all(0.0 < error < 0.05 for error in curve.relative_error), curve.to_dict()
    assert all(0.999 < cosine < 1.0 for cosine in curve.cosine), curve.to_dict()
    assert min(curve.detection_f1) >= 0.9, curve.to_dict()


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                    reason="tensorrt_rtx not installed (pip install tensorrt-rtx-cu13): no TensorRT builder here")
def test_tensorrt_rtx_parses_and_builds_our_qdq(calibrated, tiny_network_path, tmp_path):
    from bev_quant_ros.engine.build import BuildOptions, build_serialized_engine, import_tensorrt

    _, _, thresholds = calibrated
    out = write_qdq(tiny_network_path, tmp_path / "tiny.int8.onnx", thresholds)
    engine = build_serialized_engine(import_tensorrt("tensorrt_rtx"), out, BuildOptions(workspace_mib=64))
    assert len(engine) > 10_000


def test_plan_search_keeps_ranked_nodes_only_while_the_budget_is_missed(calibrated, tiny_network_path):
    sequences, _, thresholds = calibrated
    nodes = candidate_nodes(tiny_network_path)
    softmax, conv = (next(n for n, op in nodes if op == kind) for kind in ("Softmax", "Conv"))
    ranked = [NodeSensitivity(softmax, "Softmax", 0.3, 0.1, 0.2), NodeSensitivity(conv, "Conv", 0.1, 0.2, 0.2),
              NodeSensitivity("/unused", "Add", 0.0, 0.2, 0.2)]  # no damage: never a candidate
    chosen, steps, fp32, reference = search_plan(tiny_network_path, thresholds, ranked, sequences, budget_nds=1.0)
    assert chosen == [] and len(steps) == 1 and set(fp32) == {"day", "night", "all"}
    assert reference == "ground truth"  # simulated sequences carry it
    chosen, steps, _, _ = search_plan(tiny_network_path, thresholds, ranked, sequences, budget_nds=-1.0)
    # an unreachable budget: greedy adds every damaging node in rank order, then tries each removal
    # (removing the last one gives a set measured already) and takes it when the worst group loses no more
    assert [s.float_nodes for s in steps[:3]] == [[], [softmax], [softmax, conv]]
    drop = {frozenset(s.float_nodes): s.worst_drop for s in steps}
    assert chosen == prune_pass([softmax, conv], drop[frozenset([softmax, conv])],
                                lambda nodes: drop[frozenset(nodes)], -1.0)


def test_prune_pass_returns_nodes_to_int8_within_the_budget_or_when_they_buy_no_accuracy():
    drops = {"abc": 0.9, "ab": 0.9, "a": 1.2, "b": 0.4, "": 2.0}
    measure = {frozenset(k): v for k, v in drops.items()}

    def measure_drop(nodes: list[str]) -> float:
        return measure[frozenset("".join(nodes))]

    # budget missed (0.1): c buys nothing (ab 0.9 = abc 0.9): INT8; b INT8 loses more (a: 1.2): float;
    # a INT8 gains (b: 0.4): INT8. The rule before kept all three (no removal met 0.1).
    assert prune_pass(list("abc"), 0.9, measure_drop, 0.1) == ["b"]
    # budget 1.0: removals within it are taken (ab 0.9, b 0.4), a 1.2 is not
    assert prune_pass(list("abc"), 0.9, measure_drop, 1.0) == ["b"]
    assert prune_pass(list("abc"), 0.9, measure_drop, 2.0) == []  # ab, a, then "" at 2.0


def test_prune_trials_as_parallel_tasks_give_the_one_process_search(calibrated, tiny_network_path):
    from bev_quant_ros.fleet.runners import LocalPoolRunner

    sequences, _, thresholds = calibrated
    nodes = candidate_nodes(tiny_network_path)
    ranked = [NodeSensitivity(name, op, 0.3 - 0.01 * i, 0.1, 0.2) for i, (name, op) in enumerate(nodes[:4])]
    plan = [n for n, _ in nodes[:4]]
    _, keep_all, _, _ = search_plan(tiny_network_path, thresholds, ranked, sequences, budget_nds=-1.0)
    drops = sorted(s.worst_drop for s in keep_all)
    # -1: every trial fails; the middle drop: some removals succeed and later trials change set
    for budget in (-1.0, drops[len(drops) // 2]):
        alone = search_plan(tiny_network_path, thresholds, ranked, sequences, budget_nds=budget, start=plan)
        with LocalPoolRunner(2) as runner:
            tasks = search_plan(tiny_network_path, thresholds, ranked, sequences, budget_nds=budget,
                                start=plan, runner=runner)
        assert tasks[0] == alone[0] and tasks[2:] == alone[2:]
        assert [(s.float_nodes, s.nds) for s in tasks[1]] == [(s.float_nodes, s.nds) for s in alone[1]]
    assert len(alone[0]) < 4  # the middle budget removed at least one node


def test_refining_a_plan_runs_the_prune_pass_on_its_nodes_only(calibrated, tiny_network_path):
    sequences, _, thresholds = calibrated
    nodes = candidate_nodes(tiny_network_path)
    softmax, conv = (next(n for n, op in nodes if op == kind) for kind in ("Softmax", "Conv"))
    ranked = [NodeSensitivity(softmax, "Softmax", 0.3, 0.1, 0.2), NodeSensitivity(conv, "Conv", 0.1, 0.2, 0.2)]
    chosen, steps, _, _ = search_plan(tiny_network_path, thresholds, ranked, sequences, budget_nds=1.0,
                                      start=[conv, softmax])
    assert chosen == []  # a generous budget returns every node to int8
    # all-INT8, the plan as given, then its least sensitive node first (no greedy additions)
    assert [s.float_nodes for s in steps] == [[], [softmax, conv], [softmax]]
    chosen, steps, _, _ = search_plan(tiny_network_path, thresholds, ranked, sequences, budget_nds=-1.0,
                                      start=[conv])
    # an unreachable budget: the conv float buys this model no accuracy (equal drops), so it returns to INT8
    assert [s.float_nodes for s in steps] == [[], [conv]] and steps[0].worst_drop == steps[1].worst_drop
    assert chosen == []
    with pytest.raises(PrecisionPlanError, match="not in the model"):
        search_plan(tiny_network_path, thresholds, ranked, sequences, start=["/no/such/node"])


def test_float_modules_are_float_in_every_search_trial_and_never_pruned(calibrated, tiny_network_path):
    sequences, _, thresholds = calibrated
    nodes = candidate_nodes(tiny_network_path)
    softmax, conv = (next(n for n, op in nodes if op == kind) for kind in ("Softmax", "Conv"))
    module = conv.rsplit("/", 1)[0]  # the conv's parent scope: a module prefix
    fixed = module_float_nodes(tiny_network_path, [module], DEFAULT_OP_TYPES)
    assert conv in [f.node for f in fixed] and all(f.node.startswith(module + "/") for f in fixed)
    assert all(module in f.reason and "float_modules" in f.reason for f in fixed)
    fixed_names = [f.node for f in fixed]
    ranked = [NodeSensitivity(softmax, "Softmax", 0.3, 0.1, 0.2), NodeSensitivity(conv, "Conv", 0.1, 0.2, 0.2)]
    # a generous budget: nothing searched, but the module is float in the one trial and in the result
    chosen, steps, _, _ = search_plan(tiny_network_path, thresholds, ranked, sequences, budget_nds=1.0,
                                      fixed=fixed_names)
    assert chosen == fixed_names and [s.float_nodes for s in steps] == [fixed_names]
    # an unreachable budget: greedy adds the softmax only (the conv is fixed), the prune pass tries the softmax only
    chosen, steps, _, _ = search_plan(tiny_network_path, thresholds, ranked, sequences, budget_nds=-1.0,
                                      fixed=fixed_names)
    assert [s.float_nodes for s in steps] == [fixed_names, [*fixed_names, softmax]]
    assert chosen[:len(fixed_names)] == fixed_names and set(chosen) <= {*fixed_names, softmax}
    # the plan's reasons: fixed nodes name their module, the searched one quotes its trial
    reasons = {f.node: f.reason for f in float_reasons([*fixed_names, softmax], ranked, steps, "ground truth", fixed)}
    assert "float_modules" in reasons[conv] and "returning it to int8" in reasons[softmax]


def test_a_float_module_matching_no_node_is_an_error(tiny_network_path):
    with pytest.raises(PrecisionPlanError, match="'/detector/no_such_head' matches no"):
        module_float_nodes(tiny_network_path, ["/detector/no_such_head"], DEFAULT_OP_TYPES)
