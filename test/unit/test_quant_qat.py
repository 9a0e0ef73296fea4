"""QAT on the tiny network: ONNX weight loader, plan mapping, VGD terms, export checks, resume; and on the
tiny v3 network (dt and lidar_valid inputs, camera-only windows, training-only auxiliary head)."""

import dataclasses
import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch (the optional 'train' extra) is not installed")
pytest.importorskip("modelopt.torch.quantization", reason="nvidia-modelopt is not installed")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from bev_quant_ros.engine.io_check import check_contract, onnx_specs, read_onnx  # noqa: E402
from bev_quant_ros.errors import ConfigError, PrecisionPlanError  # noqa: E402
from bev_quant_ros.model.export import check_contract as check_model_contract  # noqa: E402
from bev_quant_ros.model.export import compare_with_torch, export_onnx  # noqa: E402
from bev_quant_ros.model.network import BEVDetector, ContractWrapper, Logits  # noqa: E402
from bev_quant_ros.model.onnx_weights import detector_from_onnx, module_name_of  # noqa: E402
from bev_quant_ros.quant import qat  # noqa: E402
from bev_quant_ros.quant.calib_data import MODES, SequenceSetSpec, record_set  # noqa: E402
from bev_quant_ros.quant.plan import FloatNode, PrecisionPlan  # noqa: E402
from bev_quant_ros.quant.qdq import tensorrt_style  # noqa: E402

torch.set_num_threads(1)
CFG = qat.QatConfig(quant_config="", train_config="", train_seeds=(0, 1), steps=2, batch_size=1, window=2,
                    lr=1e-3, weights=qat.LossWeights(), checkpoint_every_steps=1)


@pytest.fixture(scope="module")
def calibration(tiny_network_path):
    return record_set(tiny_network_path, SequenceSetSpec(("day",), 1, 3, 50_000))


def window_sampler(feeds, cfg):
    """Windows of the first two recorded frames with a one-object target, batch 1."""
    heatmap = torch.zeros(1, cfg.K, cfg.Ho, cfg.Wo)
    heatmap[0, 0, 5, 7] = 1.0
    mask = torch.zeros(1, cfg.Ho, cfg.Wo)
    mask[0, 5, 7] = 1.0
    frames = [{**qat.tensor_frame(feed), "prev_valid": torch.tensor([[0.0 if i == 0 else 1.0]]),
               "heatmap": heatmap, "box_reg": torch.zeros(1, cfg.R, cfg.Ho, cfg.Wo), "reg_mask": mask}
              for i, feed in enumerate(feeds[:2])]
    return lambda: frames


@pytest.fixture(scope="module")
def sample(calibration, tiny_model_config):
    return window_sampler(calibration[0].feeds, tiny_model_config)


@pytest.fixture(scope="module")
def v3_config(tiny_model_config):
    return dataclasses.replace(tiny_model_config, network=dataclasses.replace(tiny_model_config.network, version=3),
                               optional_inputs=("dt", "lidar_valid"))


@pytest.fixture(scope="module")
def v3_network_path(v3_config, tmp_path_factory):
    """An untrained tiny v3 BEVDetector exported (its auxiliary head is not in the graph)."""
    torch.manual_seed(0)
    return export_onnx(BEVDetector(v3_config).eval(), tmp_path_factory.mktemp("tiny_v3") / "v3.onnx")


@pytest.fixture(scope="module")
def v3_calibration(v3_network_path):
    """One day window recorded fused and camera-only (the same frames, the lidar withheld)."""
    return record_set(v3_network_path, SequenceSetSpec(("day",), 1, 3, 50_000, MODES))


def student_of(path, calibration, plan=None):
    torch.manual_seed(0)
    return qat.quantize_student(detector_from_onnx(path), calibration, plan=plan)


def test_onnx_loader_reproduces_the_onnx_outputs(tiny_network_path, calibration, tiny_model_config):
    net = detector_from_onnx(tiny_network_path)
    inputs = qat.full_inputs(calibration[0].feeds[1], tiny_model_config)
    diffs = compare_with_torch(net, tiny_network_path, inputs)
    assert max(diffs.values()) < 1e-5, diffs


def test_node_scopes_map_to_modules():
    assert module_name_of("/detector/image_encoder/stages/stages.0/stages.0.0/Conv") == "image_encoder.stages.0.0"
    assert module_name_of("/detector/lidar_bev/lidar_bev.1/lidar_bev.1.0/Conv") == "lidar_bev.1.0"
    assert module_name_of("/detector/box_head/box_head.1/Conv") == "box_head.1"
    assert module_name_of("/detector/MatMul") == ""


def test_batchnorm_folding_keeps_the_function(tiny_network_path, calibration, tiny_model_config, tmp_path):
    net = detector_from_onnx(tiny_network_path)
    net.lidar_bev[0][1].running_mean.fill_(0.3)  # a BN with real statistics
    net.lidar_bev[0][1].running_var.fill_(2.0)
    inputs = qat.full_inputs(calibration[0].feeds[1], tiny_model_config)
    reference = export_onnx(net, tmp_path / "ref.onnx", inputs)
    folded = qat.fold_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert max(compare_with_torch(folded, reference, inputs).values()) < 1e-5


def test_plan_float_convs_lose_their_quantizers(tiny_network_path, calibration):
    plan = PrecisionPlan("tiny.onnx", "", "mse", 99.99, ["Conv"], 0.0025, [
        FloatNode("/detector/fuse/fuse.0/Conv", "Conv", ""), FloatNode("/detector/attention/Softmax", "Softmax", "")])
    student = student_of(tiny_network_path, calibration, plan)
    found = qat.quantizers(student)
    assert not found["fuse.0.input_quantizer"].is_enabled and not found["fuse.0.weight_quantizer"].is_enabled
    assert found["camera_bev.0.input_quantizer"].is_enabled
    assert found["camera_bev.0.input_quantizer"].amax > 0  # calibrated on the recorded windows


def test_vgd_terms_switch_off_and_on(tiny_network_path, calibration, sample):
    teacher = detector_from_onnx(tiny_network_path)
    student = student_of(tiny_network_path, calibration)
    _, off = qat.vgd_window_loss(student, teacher, sample(), qat.LossWeights(1.0, 0.0, 0.0))
    assert off["img"] == off["bev"] == 0.0 and off["det"] > 0
    total, on = qat.vgd_window_loss(student, teacher, sample(), qat.LossWeights(0.0, 2.0, 3.0))
    assert on["det"] == 0.0 and on["img"] > 0 and on["bev"] > 0
    assert float(total.detach()) == pytest.approx(2.0 * on["img"] + 3.0 * on["bev"], rel=1e-5)
    total.backward()  # the distillation reaches the student's weights through the quantizers
    assert student.camera_bev[0].weight.grad.abs().sum() > 0


def test_head_distillation_is_the_only_term_whose_gradient_reaches_the_head(tiny_network_path, calibration, sample):
    teacher = detector_from_onnx(tiny_network_path)
    student = student_of(tiny_network_path, calibration)  # all-INT8: the head is quantized too
    total, parts = qat.vgd_window_loss(student, teacher, sample(), qat.LossWeights(0.0, 1.0, 1.0))
    total.backward()
    assert "head" not in parts and student.heatmap_head[1].weight.grad is None  # features end before the head
    total, parts = qat.vgd_window_loss(student, teacher, sample(), qat.LossWeights(0.0, 0.0, 0.0, head=2.0))
    assert parts["head"] > 0 and float(total.detach()) == pytest.approx(2.0 * parts["head"], rel=1e-5)
    total.backward()
    assert student.heatmap_head[1].weight.grad.abs().sum() > 0 and student.box_head[1].weight.grad.abs().sum() > 0
    same = Logits(torch.randn(1, 2, 4, 4), torch.randn(1, 3, 4, 4), torch.zeros(1))
    assert float(qat.head_distance(same, same)) == 0.0
    off_objects = same._replace(box_reg=same.box_reg + (same.heatmap.sigmoid().amax(1, keepdim=True) < 0.5))
    moved = same._replace(box_reg=same.box_reg + 1.0)  # every cell, objects included
    assert 0 < float(qat.head_distance(off_objects, same)) < float(qat.head_distance(moved, same))


def test_export_is_tensorrt_qdq_matching_the_fake_quant_model(tiny_network_path, calibration, sample,
                                                              tiny_model_config, tmp_path):
    teacher = detector_from_onnx(tiny_network_path)
    student = student_of(tiny_network_path, calibration)
    qat.finetune(student, teacher, sample, CFG)
    inputs = qat.full_inputs(calibration[0].feeds[2], tiny_model_config)
    path = qat.export_qdq(student, tmp_path / "qat.onnx", inputs, tiny_network_path)
    model = read_onnx(path)
    check_contract(*onnx_specs(model))
    assert tensorrt_style(path) == (True, "symmetric int8, float bias")
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) > 10
    with torch.no_grad():
        expected = ContractWrapper(student).eval()(*qat.contract_args(inputs, tiny_model_config.input_shapes()))
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, inputs)
    errors = [np.abs(g - e.numpy()) for g, e in zip(got, expected)]
    # measured max 4.4e-4: ORT and torch differ by ulps upstream (GridSample, conv sums), which moves a
    # few activations across a rounding boundary by one int8 level; almost every element agrees exactly
    assert max(float(e.max()) for e in errors) < 2e-3
    assert max(float(np.median(e)) for e in errors) < 1e-5


def activation_quantizers(model) -> dict[str, tuple[str, float, np.ndarray]]:
    """Activation QuantizeLinear -> (the op type feeding it, its scale, its zero point)."""
    values = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    values.update({n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t)
                   for n in model.graph.node if n.op_type == "Constant"})
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    return {n.name: (producers.get(n.input[0], "input"), float(values[n.input[1]]), values[n.input[2]])
            for n in model.graph.node
            if n.op_type == "QuantizeLinear" and producers.get(n.input[0]) != "Constant" and n.input[0] not in values}


def test_cpu_flavour_keeps_the_students_levels_in_uint8_and_ort_fuses_its_convs(tiny_network_path, calibration,
                                                                               sample, tiny_model_config, tmp_path):
    student = student_of(tiny_network_path, calibration)
    qat.finetune(student, detector_from_onnx(tiny_network_path), sample, CFG)
    inputs = qat.full_inputs(calibration[0].feeds[2], tiny_model_config)
    trt = qat.export_qdq(student, tmp_path / "qat.onnx", inputs, tiny_network_path)
    cpu = qat.export_cpu_flavour(trt, tmp_path / "qat_cpu.onnx", tiny_model_config)
    before, after = activation_quantizers(read_onnx(trt)), activation_quantizers(read_onnx(cpu))
    assert before.keys() == after.keys() and len(after) > 5  # the same quantizers, none added or removed
    assert all(zp.dtype == np.int8 and zp == 0 for _, _, zp in before.values())
    for name, (source, scale, zp) in after.items():
        relu = source == "Relu"  # unsigned: half the step, so every trained level stays and the clip with them
        assert zp.dtype == np.uint8 and zp == (0 if relu else 128), name
        assert scale == pytest.approx(before[name][1] / (2 if relu else 1), rel=1e-6), name
    assert any(source == "Relu" for source, _, _ in after.values())
    assert any(source != "Relu" for source, _, _ in after.values())
    kept = {i.name: i.raw_data for i in read_onnx(cpu).graph.initializer}
    assert all(kept.get(i.name) == i.raw_data for i in read_onnx(trt).graph.initializer)  # weights untouched
    with torch.no_grad():
        expected = ContractWrapper(student).eval()(*qat.contract_args(inputs, tiny_model_config.input_shapes()))
    got = ort.InferenceSession(str(cpu), providers=["CPUExecutionProvider"]).run(None, inputs)
    assert max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected)) < 2e-2  # the fine-tuned student
    assert "QLinearConv" in optimized_op_types(cpu, tmp_path)
    with pytest.raises(PrecisionPlanError, match="not a symmetric int8 activation quantizer"):
        qat.export_cpu_flavour(cpu, tmp_path / "twice.onnx", tiny_model_config)


def optimized_op_types(path, tmp_path):
    """Op types of ``path`` after ONNX Runtime's CPU graph optimizations (what its kernels run)."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / f"{path.stem}.optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [n.op_type for n in read_onnx(options.optimized_model_filepath).graph.node]


def test_conv_output_quantizers_let_the_cpu_flavour_fuse_every_int8_conv(tiny_network_path, calibration,
                                                                        tiny_model_config, tmp_path):
    plan = PrecisionPlan("tiny.onnx", "", "mse", 99.99, ["Conv"], 0.0025, [
        FloatNode("/detector/heatmap_head/heatmap_head.1/Conv", "Conv", "")])
    net = detector_from_onnx(tiny_network_path)
    chosen = qat.conv_output_modules(tiny_network_path, net, qat.plan_float_modules(plan, net))
    kinds = {name: type(m) for name, m in net.named_modules()}
    assert "attention.qkv" in chosen and "image_encoder.out" in chosen  # convs feeding a Reshape
    assert any(kinds[name] is torch.nn.ReLU for name in chosen)  # a ReLU'd conv: the quantizer after its ReLU
    assert "image_encoder.stages.0.2" not in chosen  # feeds the next conv: its input quantizer covers it
    assert "heatmap_head.0.2" in chosen  # its reader, heatmap_head.1, is float in the plan
    assert "heatmap_head.1" not in chosen
    assert "head_trunk.2" in chosen  # read by two int8 convs: two input quantizers, no single Q to fuse with
    inputs = qat.full_inputs(calibration[0].feeds[2], tiny_model_config)
    fused = {}
    for outputs_of in (None, tiny_network_path):
        torch.manual_seed(0)
        student = qat.quantize_student(detector_from_onnx(tiny_network_path), calibration, plan=plan,
                                       outputs_of=outputs_of)
        on = {name for name, q in qat.quantizers(student).items() if q.is_enabled}
        assert {n for n in on if n.endswith("output_quantizer")} == {f"{m}.output_quantizer" for m in chosen
                                                                    if outputs_of is not None}
        assert not any(kinds[n.rsplit(".", 1)[0]] is torch.nn.ReLU for n in on if n.endswith("input_quantizer"))
        trt = qat.export_qdq(student, tmp_path / f"qat_{outputs_of is None}.onnx", inputs, tiny_network_path)
        cpu = qat.export_cpu_flavour(trt, tmp_path / f"qat_{outputs_of is None}_cpu.onnx", tiny_model_config)
        with torch.no_grad():
            expected = ContractWrapper(student).eval()(*qat.contract_args(inputs, tiny_model_config.input_shapes()))
        got = ort.InferenceSession(str(cpu), providers=["CPUExecutionProvider"]).run(None, inputs)
        assert max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected)) < 2e-2
        ops = optimized_op_types(cpu, tmp_path)
        fused[outputs_of is not None] = (ops.count("QLinearConv"), ops.count("Conv") + ops.count("FusedConv"))
    int8_convs = sum(1 for m in kinds.values() if m is torch.nn.Conv2d) - 1  # all but the plan's float one
    assert fused[True] == (int8_convs, 1)  # every int8 conv runs as QLinearConv, only the float one in float
    assert fused[False][0] < int8_convs


def test_cpu_grid_student_exports_its_trained_unsigned_grid(tiny_network_path, calibration, sample,
                                                             tiny_model_config, tmp_path):
    torch.manual_seed(0)
    student = qat.quantize_student(detector_from_onnx(tiny_network_path), calibration,
                                   outputs_of=tiny_network_path, cpu_grid=True)
    unsigned = {name for name, q in qat.quantizers(student).items() if q.is_enabled and q.unsigned}
    assert "image_encoder.stages.1.0.input_quantizer" in unsigned  # fed by stages.0's ReLU
    assert "image_encoder.stages.0.0.input_quantizer" not in unsigned  # the normalised image is signed
    assert any(name.endswith("output_quantizer") for name in unsigned)  # a ReLU module's output
    qat.finetune(student, detector_from_onnx(tiny_network_path), sample, CFG)
    inputs = qat.full_inputs(calibration[0].feeds[2], tiny_model_config)
    cpu = qat.export_cpu_student(student, tmp_path / "cpu.onnx", inputs, tiny_network_path)
    quantizers = activation_quantizers(read_onnx(cpu))
    assert all(zp.dtype == np.uint8 for _, _, zp in quantizers.values())
    assert sum(zp == 0 for _, _, zp in quantizers.values()) >= len(unsigned) > 0
    with torch.no_grad():
        expected = ContractWrapper(student).eval()(*qat.contract_args(inputs, tiny_model_config.input_shapes()))
    got = ort.InferenceSession(str(cpu), providers=["CPUExecutionProvider"]).run(None, inputs)
    assert max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected)) < 2e-2  # the grid it trained on
    assert not {"Conv", "FusedConv"} & set(optimized_op_types(cpu, tmp_path))  # every conv int8 (no plan here)
    graph = read_onnx(cpu).graph
    read = {name for node in graph.node for name in node.input}
    assert all(n.output[0] in read for n in graph.node if n.op_type == "Constant")  # no dead int8 zero points left
    with pytest.raises(ConfigError, match="cpu_grid needs"):
        qat.quantize_student(detector_from_onnx(tiny_network_path), calibration, cpu_grid=True)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                    reason="tensorrt_rtx not installed (pip install tensorrt-rtx-cu13): no TensorRT builder here")
def test_qat_export_parses_and_builds_with_tensorrt_rtx(tiny_network_path, calibration, tiny_model_config, tmp_path):
    from bev_quant_ros.engine.build import BuildOptions, build_serialized_engine, import_tensorrt

    student = student_of(tiny_network_path, calibration)
    inputs = qat.full_inputs(calibration[0].feeds[2], tiny_model_config)
    path = qat.export_qdq(student, tmp_path / "qat.onnx", inputs, tiny_network_path)
    engine = build_serialized_engine(import_tensorrt("tensorrt_rtx"), path, BuildOptions(workspace_mib=64))
    assert len(engine) > 10_000


def test_resume_continues_the_step_count(tiny_network_path, calibration, sample, tmp_path):
    teacher = detector_from_onnx(tiny_network_path)
    student = student_of(tiny_network_path, calibration)
    history, step = qat.finetune(student, teacher, sample, CFG, tmp_path)
    assert step == 2 and len(history) == 2
    restored, optimizer, start, earlier = qat.restore_checkpoint(tmp_path / qat.CHECKPOINT_NAME,
                                                                 detector_from_onnx(tiny_network_path),
                                                                 lambda m: qat.make_optimizer(m, CFG.lr))
    assert start == 2 and earlier == history
    assert torch.equal(restored.camera_bev[0].weight, student.camera_bev[0].weight)
    assert torch.equal(qat.quantizers(restored)["camera_bev.0.input_quantizer"].amax,
                       qat.quantizers(student)["camera_bev.0.input_quantizer"].amax)
    more, step = qat.finetune(restored, teacher, sample, dataclasses.replace(CFG, steps=3), tmp_path, optimizer, start)
    assert step == 3 and len(more) == 1


def test_bit_widths_reach_the_quantizers(tiny_network_path, calibration):
    student = qat.quantize_student(detector_from_onnx(tiny_network_path), calibration, weight_bits=4,
                                   activation_bits=6)
    found = qat.quantizers(student)
    assert found["camera_bev.0.weight_quantizer"].num_bits == 4
    assert found["camera_bev.0.input_quantizer"].num_bits == 6


# ---- network v3 ----------------------------------------------------------------------------------
V3_PLAN = PrecisionPlan("v3.onnx", "", "mse", 99.99, ["Conv"], 0.0025,
                        [FloatNode("/detector/fuse/fuse.0/Conv", "Conv", "")])


def ort_outputs(path, inputs, **changed):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {**inputs, **{k: np.array([v], np.float32) for k, v in changed.items()}})


def test_v3_student_finetunes_and_exports_both_flavours_with_dt_and_lidar_valid(v3_network_path, v3_calibration,
                                                                               v3_config, tmp_path):
    teacher = detector_from_onnx(v3_network_path)
    student = student_of(v3_network_path, v3_calibration, V3_PLAN)
    found = qat.quantizers(student)
    assert found["camera_only.0.input_quantizer"].amax > 0  # the camera-only path is calibrated
    assert not any(q.is_enabled for name, q in found.items() if name.startswith(BEVDetector.TRAINING_ONLY))
    history, step = qat.finetune(student, teacher, window_sampler(v3_calibration[0].feeds, v3_config), CFG)
    assert step == 2 and all(np.isfinite(h["loss"]) for h in history)
    inputs = qat.full_inputs(v3_calibration[0].feeds[1], v3_config)
    trt = qat.export_qdq(student, tmp_path / "qat.onnx", inputs, v3_network_path)
    cpu = qat.export_cpu_flavour(trt, tmp_path / "qat_cpu.onnx", v3_config)
    with torch.no_grad():
        expected = ContractWrapper(student).eval()(*qat.contract_args(inputs, v3_config.input_shapes()))
    for path in (trt, cpu):
        names = [i.name for i in read_onnx(path).graph.input]
        assert names == list(v3_config.input_shapes()) and names[-2:] == ["dt", "lidar_valid"]
        check_model_contract(path, v3_config)
        fused, camera_only = ort_outputs(path, inputs), ort_outputs(path, inputs, lidar_valid=0.0)
        # bev_state: the untrained heads' outputs barely move (heatmap ~ its prior everywhere)
        assert np.abs(fused[2] - camera_only[2]).max() > 1e-3  # the graph's lidar_valid selects the path
        assert np.abs(fused[2] - ort_outputs(path, inputs, dt=0.1)[2]).max() > 1e-3  # dt reaches the fusion
        assert np.abs(fused[0] - expected[0].numpy()).max() < 2e-2  # either flavour: the fine-tuned student


def test_v3_fake_quant_student_runs_camera_only_sequences_with_lidar_valid_0(v3_network_path, v3_calibration):
    student = student_of(v3_network_path, v3_calibration)
    fused, camera_only = v3_calibration
    assert camera_only.mode == "camera_only" and all(f["lidar_valid"][0] == 0.0 for f in camera_only.feeds)
    lidar_claimed = dataclasses.replace(camera_only, feeds=[{**f, "lidar_valid": np.ones(1, np.float32)}
                                                            for f in camera_only.feeds])

    def states(sequence):
        """bev_state per frame: the untrained heads' outputs barely move (heatmap ~ its prior everywhere)."""
        return [out[2] for out in qat.run_sequence(student, sequence)]

    seen = states(camera_only)
    for other in (states(fused), states(lidar_claimed)):  # the lidar withheld; only lidar_valid changed
        assert all((a - b).abs().max() > 1e-3 for a, b in zip(seen, other))


def test_progressive_qat_switches_quantizer_groups_on_in_turn(tiny_network_path, calibration, sample):
    """Image encoder first, then fusion/temporal, the head last; outside a step every quantizer is on."""
    student = student_of(tiny_network_path, calibration)
    before = {name for name, q in qat.quantizers(student).items() if q.is_enabled}
    seen = []

    def recording_sample():
        seen.append({name for name, q in qat.quantizers(student).items() if q.is_enabled})
        return sample()

    history, _ = qat.finetune(student, detector_from_onnx(tiny_network_path), recording_sample,
                              dataclasses.replace(CFG, steps=3, progressive=True))
    assert [h["stage"] for h in history] == [0, 1, 2]
    first, second, third = seen
    assert first and all(name.startswith(("image_encoder.", "camera_bev.")) for name in first)
    assert first < second < third == before
    assert any(name.startswith("fuse.") for name in second) and not any(name.startswith("heatmap_head.")
                                                                        for name in second)
    assert {name for name, q in qat.quantizers(student).items() if q.is_enabled} == before


def test_the_loss_history_survives_a_resume(tiny_network_path, calibration, sample, tmp_path):
    teacher = detector_from_onnx(tiny_network_path)
    first, _ = qat.finetune(student_of(tiny_network_path, calibration), teacher, sample, CFG, tmp_path)
    ckpt = tmp_path / qat.CHECKPOINT_NAME

    def restore() -> tuple:
        return qat.restore_checkpoint(ckpt, detector_from_onnx(tiny_network_path),
                                      lambda m: qat.make_optimizer(m, CFG.lr))

    restored, optimizer, start, earlier = restore()
    assert earlier == first
    more, _ = qat.finetune(restored, teacher, sample, dataclasses.replace(CFG, steps=4), tmp_path, optimizer, start,
                           earlier)
    assert restore()[3] == first + more and len(more) == 2


def test_cosine_lr_decays_to_zero_by_step_and_is_what_the_optimizer_ran(tiny_network_path, calibration, sample):
    cosine = dataclasses.replace(CFG, steps=4, lr_schedule="cosine")
    assert [round(qat.lr_at(cosine, s) / cosine.lr, 4) for s in range(5)] == [1.0, 0.8536, 0.5, 0.1464, 0.0]
    assert qat.lr_at(CFG, 1) == CFG.lr  # constant, the default
    optimizer = qat.make_optimizer(student := student_of(tiny_network_path, calibration), cosine.lr)
    qat.finetune(student, detector_from_onnx(tiny_network_path), sample, cosine, optimizer=optimizer)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(qat.lr_at(cosine, 3))
    with pytest.raises(ConfigError, match="lr_schedule"):
        dataclasses.replace(CFG, lr_schedule="step")
