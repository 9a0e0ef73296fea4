"""Quantization-aware training (nvidia-modelopt, CPU) with view-guided distillation.

Why: PTQ keeps 9 nodes float to stay within 0.25 NDS points (docs/architecture.md §3); QAT
lets the weights adapt to int8 instead. The student is the FP32 network with BatchNorm
folded into its convs (frozen by construction: the deployed folded weights are what the
fake quant sees), quantized by ``mtq.quantize`` with ranges from modelopt's max calibration
over the PTQ's own calibration windows (``record_set`` of the quant config, each frame fed
the FP32 model's own state). It is fine-tuned over short recurrent windows with the state
path quantized, against

    loss = w_det * detection loss + w_img * image-view feature distillation (camera encoder
           outputs) + w_bev * BEV distillation (the fused BEV entering the head, and the state)
           + w_head * head output distillation (``head_distance``; off unless set: for an all-INT8 head)

with the FP32 network as teacher; each term switches off with weight 0. ``progressive: true`` quantizes
stage by stage instead (``PROGRESSIVE_STAGES``: image encoder, then fusion/temporal, then the head, equal
shares of the steps; later stages' quantizers pass values through until theirs starts), for when plain QAT
is unstable. Every step's loss parts are kept in the checkpoint and written to ``qat_history.json``
(training curves; a resumed run continues them).

Precision plan mapping (``models/bev_tiny.precision.yaml`` names ONNX nodes): a Conv node's
scope is its module (``/detector/fuse/fuse.0/Conv`` -> ``fuse.0``; ``onnx_weights.module_name_of``),
whose input and weight quantizers are disabled. modelopt quantizes only module inputs and
weights (Conv2d here), so the plan's functional nodes (attention Softmax and residual Add, the
warp-grid MatMul, the fusion Concat) stay float in the torch model and in its export.
``quantize_conv_outputs`` adds a quantizer after each int8 conv (after its ReLU) whose output no single
int8 conv's input quantizer covers (``conv_output_modules``), so a CPU runtime can fuse every int8 conv.
``cpu_grid`` trains the quantizers that see ReLU outputs unsigned (``relu_fed_quantizers``): a CPU-only
student whose CPU flavour (``export_cpu_student``) runs exactly the grid it was trained on.

Export: ``torch.onnx.export(opset 17, dynamo=False)`` gives the TensorRT flavour (symmetric
int8 Q/DQ at conv inputs and weights); the CPU flavour (u8 activations) is that model with its
activation quantizers moved to uint8, every trained level kept (``qdq.unsigned_activations``).

Network v3 (``models/bev_v3.onnx``, ``config/qat_bev_v3.yaml``): its recorded feeds carry ``dt`` and
``lidar_valid`` (the pipeline feeds what the graph declares, camera-only windows lidar_valid 0); every run
of student or teacher takes the model config's input order (``network_args``), both exports keep those
inputs (checked against the model config), and the training-only auxiliary head gets no quantizers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from tqdm import tqdm

from bev_quant_ros.engine.contract import CONTRACT_OUTPUTS, STATE_INPUT
from bev_quant_ros.engine.io_check import consumers, read_onnx
from bev_quant_ros.errors import ConfigError
from bev_quant_ros.model.export import check_contract
from bev_quant_ros.model.network import BEVDetector, ContractWrapper, Logits
from bev_quant_ros.model.onnx_weights import module_name_of
from bev_quant_ros.quant.calib_data import PREV_VALID, RecordedSequence
from bev_quant_ros.quant.plan import PrecisionPlan
from bev_quant_ros.quant.qdq import copy_model_config, tensorrt_style, unsigned_activations

LOG = logging.getLogger(__name__)
CHECKPOINT_NAME = "qat_last.pt"
HISTORY_NAME = "qat_history.json"  # per-step loss parts of the whole run (training curves), beside the checkpoint
OPSET = 17
LR_SCHEDULES = ("constant", "cosine")
DISTILL_TAPS = {"img": "image_encoder", "bev": "attention"}  # loss term -> module whose output is distilled
# Progressive QAT: the quantizers of these module groups switch on in turn (image view, then fusion and
# temporal), every other quantizer (the head) last; each stage gets an equal share of the steps.
PROGRESSIVE_STAGES = (("image_encoder", "camera_bev"), ("lidar_bev", "fuse", "camera_only", "temporal", "attention"))


@dataclass(frozen=True)
class LossWeights:
    """Weights of the VGD terms; 0 switches a term off (it is then not computed)."""

    detection: float = 1.0
    img: float = 1.0  # camera encoder outputs (image view)
    bev: float = 1.0  # fused BEV entering the head and the recurrent state (BEV view)
    head: float = 0.0  # the head's outputs (response distillation): the only term whose gradient reaches the head


@dataclass(frozen=True)
class QatConfig:
    """``config/qat_bev_tiny.yaml``: what to quantize, how to fine-tune, where the data comes from."""

    quant_config: str  # the PTQ config: model, plan, calibration windows
    train_config: str  # the training config: data, augmentation (model/train.py)
    train_seeds: tuple[int, int]  # [start, stop): a subset of the training seeds, rendered once
    steps: int
    batch_size: int
    window: int
    lr: float
    weights: LossWeights
    weight_bits: int = 8
    activation_bits: int = 8
    honour_plan: bool = True  # plan's float convs stay float
    progressive: bool = False  # quantize stage by stage (PROGRESSIVE_STAGES) instead of all at once
    quantize_conv_outputs: bool = False  # quantizers after the convs no conv input covers (conv_output_modules)
    cpu_grid: bool = False  # ReLU-fed quantizers trained unsigned (the CPU flavour's grid); CPU export only
    lr_schedule: str = "constant"  # or "cosine": lr decays from ``lr`` to 0 over ``steps`` (`lr_at`)
    checkpoint_every_steps: int = 50
    threads: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.window < 1 or self.lr <= 0:
            raise ConfigError("qat: steps >= 0, batch_size >= 1, window >= 1 and lr > 0 are required")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"qat: lr_schedule must be one of {LR_SCHEDULES}, got '{self.lr_schedule}'")
        for bits in (self.weight_bits, self.activation_bits):
            if not 2 <= bits <= 8:
                raise ConfigError(f"qat: bit widths must be in [2, 8], got {bits}")


def lr_at(cfg: QatConfig, step: int) -> float:
    """The learning rate of ``step`` (0-based): a function of the step alone, so a resumed run continues it.
    Why cosine: at a constant lr the v3 all-INT8 loss stopped falling after ~75 of 300 steps."""
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * step / max(cfg.steps, 1)))
    return cfg.lr


def load_qat_config(path: str | Path, **overrides: Any) -> QatConfig:
    """Read the YAML (sections quant, train, loss, run flattened); ``overrides`` replace fields."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
        flat: dict[str, Any] = {}
        for section in ("quant", "train", "run"):
            flat.update(doc.get(section, {}))
        flat["weights"] = LossWeights(**doc.get("loss", {}))
        flat["train_seeds"] = tuple(flat["train_seeds"])
        return dataclasses.replace(QatConfig(**flat), **overrides)
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise ConfigError(f"bad QAT config {path}: {exc!r}") from exc


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """Fold every conv -> BatchNorm pair of a Sequential into the conv (BN frozen for good).

    Train-mode BN statistics made student and teacher disagree 20x in QAT; folding is also
    what the exporter does to the deployed FP32 graph, so int8 sees the same weights."""
    for module in list(net.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, bn = module[i], module[i + 1]
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
                continue
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                               bias=True)
            with torch.no_grad():
                folded.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
                bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.bias)
                folded.bias.copy_(bn.bias + (bias - bn.running_mean) * scale)
            module[i], module[i + 1] = folded, nn.Identity()
    return net


def plan_float_modules(plan: PrecisionPlan | None, net: nn.Module) -> list[str]:
    """Conv modules the plan keeps float (by the ONNX node's scope); functional nodes need none."""
    if plan is None:
        return []
    convs = {name for name, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    return [name for name in (module_name_of(f.node) for f in plan.float_nodes if f.op_type == "Conv")
            if name in convs]


def training_only_modules(net: nn.Module) -> list[str]:
    """v3's auxiliary head (``BEVDetector.TRAINING_ONLY``): never run in eval, never exported, so its
    quantizers would stay uncalibrated; they are left off."""
    return [name for name in BEVDetector.TRAINING_ONLY if hasattr(net, name)]


def conv_output_modules(model_path: str | Path, net: nn.Module, float_modules: Iterable[str] = ()) -> list[str]:
    """Modules whose output gets a quantizer so that every int8 conv has one after it: a conv whose output
    (or its ReLU's) reaches anything but one int8 conv (a Reshape, the lidar gate's Mul, a Concat, a Resize;
    two convs: their two input quantizers are two Q's, and ORT fuses a conv with a single one). The ReLU
    module when the conv has one (its output is what flows on, and a quantizer there lets the CPU flavour
    fold the ReLU), else the conv. Why: ONNX Runtime fuses DQ -> Conv into QLinearConv only with a Q after
    it; v3's QAT CPU flavour ran 8 of its 17 int8 convs in float (0.68x FP32 latency against the PTQ's 0.55x)."""
    graph = read_onnx(model_path).graph
    readers = consumers(graph)
    kinds = {name: type(m) for name, m in net.named_modules()}
    floats = set(float_modules)
    chosen: list[str] = []
    for node in graph.node:
        if node.op_type != "Conv" or kinds.get(conv := module_name_of(node.name)) is not nn.Conv2d or conv in floats:
            continue
        last, after = node, readers.get(node.output[0], [])
        if len(after) == 1 and after[0].op_type == "Relu" and kinds.get(module_name_of(after[0].name)) is nn.ReLU:
            last, after = after[0], readers.get(after[0].output[0], [])
        if len(after) != 1 or after[0].op_type != "Conv" or module_name_of(after[0].name) in floats:
            chosen.append(module_name_of(last.name))
    return chosen


def relu_fed_quantizers(model_path: str | Path, net: nn.Module, float_modules: Iterable[str] = (),
                        output_modules: Iterable[str] = ()) -> list[str]:
    """Activation quantizers that see only ReLU outputs: the output quantizers of ReLU modules among
    ``output_modules`` and the input quantizers of int8 convs whose input a ReLU produces. Trained unsigned
    (``cpu_grid``) they are the CPU flavour's uint8 zero-point-0 grid, which lets ORT fold the ReLU."""
    graph = read_onnx(model_path).graph
    producers = {out: node for node in graph.node for out in node.output}
    kinds = {name: type(m) for name, m in net.named_modules()}
    floats = set(float_modules)
    names = [f"{m}.output_quantizer" for m in output_modules if kinds.get(m) is nn.ReLU]
    for node in graph.node:
        source = producers.get(node.input[0]) if node.op_type == "Conv" else None
        if source is not None and source.op_type == "Relu" and (conv := module_name_of(node.name)) not in floats \
                and kinds.get(conv) is nn.Conv2d:
            names.append(f"{conv}.input_quantizer")
    return names


def register_relu_quantizers() -> None:
    """Let modelopt put quantizers on nn.ReLU (it ships them for LeakyReLU only); they stay off unless
    ``quant_rules`` names the module. Needed before quantizing and before restoring such a student."""
    from modelopt.torch.quantization.nn import QuantModuleRegistry
    from modelopt.torch.quantization.nn.modules.quant_module import QuantInputBase

    if nn.ReLU not in QuantModuleRegistry:
        QuantModuleRegistry.register({nn.ReLU: "nn.ReLU"})(QuantInputBase)


def quant_rules(weight_bits: int = 8, activation_bits: int = 8, float_modules: Iterable[str] = (),
                output_modules: Iterable[str] = (), unsigned: Iterable[str] = ()) -> dict:
    """modelopt 0.47 config: per-channel symmetric weights and per-tensor conv inputs (and the outputs of
    ``output_modules``), max calibration; the ``unsigned`` quantizers (by name) on [0, amax] with all
    levels; ``float_modules`` get none."""
    activations = {"num_bits": activation_bits, "axis": None}
    rules: list[dict[str, Any]] = [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": weight_bits, "axis": 0}},
        {"quantizer_name": "*input_quantizer", "parent_class": "nn.Conv2d", "cfg": activations},
    ]
    rules += [{"quantizer_name": f"{name}.output_quantizer", "cfg": activations} for name in output_modules]
    rules += [{"quantizer_name": name, "cfg": {**activations, "unsigned": True}} for name in unsigned]
    rules += [{"quantizer_name": f"{name}.*", "enable": False} for name in float_modules]
    return {"quant_cfg": rules, "algorithm": "max"}


def tensor_frame(feed: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """One recorded frame's inputs (FRAME_INPUTS, plus dt and lidar_valid for a v3 model) as batch-1 tensors."""
    return {name: torch.from_numpy(np.asarray(value, np.float32))[None] for name, value in feed.items()}


def network_args(net: BEVDetector, frame: dict[str, torch.Tensor], state: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``frame``'s inputs with ``state`` as prev_bev, in ``ModelConfig.input_shapes()`` order: the
    contract, then the optional inputs the model declares (v3: dt, lidar_valid), as the engine feeds them."""
    given = {**frame, STATE_INPUT: state}
    return tuple(given[name] for name in net.cfg.input_shapes())


def run_sequence(net: BEVDetector, sequence: RecordedSequence) -> Iterable[tuple[torch.Tensor, ...]]:
    """(heatmap, box_reg, bev_state) per frame, feeding the network its own state, resets as recorded."""
    cfg = net.cfg
    state = torch.zeros(1, cfg.C, cfg.Ho, cfg.Wo)
    for feed, reset in zip(sequence.feeds, sequence.resets):
        if reset:
            state = torch.zeros_like(state)
        frame = {**tensor_frame(feed), PREV_VALID: torch.tensor([[0.0 if reset else 1.0]])}
        with torch.no_grad():
            outputs = net(*network_args(net, frame, state))
        state = outputs[2]
        yield outputs


def quantize_student(net: BEVDetector, calibration: list[RecordedSequence], weight_bits: int = 8,
                     activation_bits: int = 8, plan: PrecisionPlan | None = None,
                     outputs_of: str | Path | None = None, cpu_grid: bool = False) -> BEVDetector:
    """Fold BN, insert fake quantizers and calibrate them over ``calibration`` (own FP32 state:
    quantizers pass values through while calibrating). ``outputs_of``: the FP32 ONNX of ``net``, whose
    graph picks the ``conv_output_modules`` to quantize too (None: conv inputs and weights only);
    ``cpu_grid`` (needs it) trains the ``relu_fed_quantizers`` unsigned."""
    import modelopt.torch.quantization as mtq

    register_relu_quantizers()
    floats = plan_float_modules(plan, net) + training_only_modules(net)
    outputs = conv_output_modules(outputs_of, net, floats) if outputs_of is not None else []
    if cpu_grid and outputs_of is None:
        raise ConfigError("qat: cpu_grid needs the FP32 ONNX graph (quantize_conv_outputs)")
    unsigned = relu_fed_quantizers(outputs_of, net, floats, outputs) if cpu_grid else []
    fold_batchnorm(net.eval())
    rules = quant_rules(weight_bits, activation_bits, floats, outputs, unsigned)

    def forward_loop(model: BEVDetector) -> None:
        for sequence in calibration:
            for _ in run_sequence(model, sequence):
                pass

    return mtq.quantize(net, rules, forward_loop)


def quantizers(net: nn.Module) -> dict[str, nn.Module]:
    """Every modelopt TensorQuantizer by module name."""
    from modelopt.torch.quantization.nn import TensorQuantizer

    return {name: m for name, m in net.named_modules() if isinstance(m, TensorQuantizer)}


@contextmanager
def quantizers_off(net: nn.Module, keep_on: Callable[[str], bool] = lambda _name: False) -> Iterator[None]:
    """The enabled quantizers of ``net`` pass values through (except those ``keep_on`` names), then are
    back on: the quantizer state outside the block (checkpoints, exports) is always the full one."""
    off = [q for name, q in quantizers(net).items() if q.is_enabled and not keep_on(name)]
    for q in off:
        q.disable()
    try:
        yield
    finally:
        for q in off:
            q.enable()


def progressive_stage(step: int, steps: int) -> int:
    """Stage of ``step`` (0-based) out of ``len(PROGRESSIVE_STAGES) + 1`` equal shares of ``steps``."""
    stages = len(PROGRESSIVE_STAGES) + 1
    return min(stages - 1, step * stages // max(steps, 1))


def in_stage(name: str, stage: int | None) -> bool:
    """Whether quantizer ``name`` is on at progressive ``stage``: its module's group has started (the rest:
    the last stage); every quantizer is when training is not progressive (``stage`` None)."""
    if stage is None or stage >= len(PROGRESSIVE_STAGES):
        return True
    return any(name.startswith(f"{module}.") for group in PROGRESSIVE_STAGES[:stage + 1] for module in group)


class FeatureTaps:
    """Forward hooks keeping the outputs of the distilled modules of the last forward."""

    def __init__(self, net: nn.Module, terms: Iterable[str]) -> None:
        self.values: dict[str, torch.Tensor] = {}
        self._handles = [net.get_submodule(DISTILL_TAPS[term]).register_forward_hook(self._keep(term))
                         for term in terms]

    def _keep(self, term: str) -> Callable:
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            self.values[term] = output
        return hook

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def feature_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MSE relative to the teacher's mean square: scale-free, so the weights are comparable."""
    return F.mse_loss(student, teacher) / teacher.pow(2).mean().clamp_min(1e-8)


def head_distance(student: Logits, teacher: Logits) -> torch.Tensor:
    """The head's outputs against the teacher's: the heatmap as probabilities, the box regression weighted by
    the teacher's peak class probability (where it sees objects; background regression is never decoded). An
    all-INT8 student quantizes the head, which the feature taps (before the head) give no gradient."""
    s_heat, t_heat = student.heatmap.sigmoid(), teacher.heatmap.sigmoid()
    where = t_heat.amax(dim=1, keepdim=True)
    box = ((student.box_reg - teacher.box_reg).pow(2) * where).sum()
    return 0.5 * (feature_distance(s_heat, t_heat) + box / (teacher.box_reg.pow(2) * where).sum().clamp_min(1e-8))


def vgd_window_loss(student: BEVDetector, teacher: BEVDetector, frames: list[dict[str, torch.Tensor]],
                    weights: LossWeights) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss over one window; both networks feed their own state forward (the student's quantized,
    back-propagated through the window). Terms with weight 0 are not computed."""
    from bev_quant_ros.model.losses import detection_loss

    terms = [t for t in DISTILL_TAPS if getattr(weights, t) > 0]
    s_taps, t_taps = FeatureTaps(student, terms), FeatureTaps(teacher, terms)
    cfg = student.cfg
    b = frames[0]["images"].shape[0]
    s_state = t_state = torch.zeros(b, cfg.C, cfg.Ho, cfg.Wo)
    total = torch.zeros(())
    parts = dict.fromkeys(("det", *DISTILL_TAPS, *(("head",) if weights.head > 0 else ())), 0.0)
    try:
        for f in frames:
            out = student.forward_logits(*network_args(student, f, s_state))
            s_state = out.bev_state
            with torch.no_grad():
                t_out = teacher.forward_logits(*network_args(teacher, f, t_state))
                t_state = t_out.bev_state
            frame_loss = torch.zeros(())
            if weights.detection > 0:
                det, _ = detection_loss(out.heatmap, out.box_reg, f["heatmap"], f["box_reg"], f["reg_mask"])
                frame_loss = frame_loss + weights.detection * det
                parts["det"] += float(det.detach()) / len(frames)
            for term in terms:
                value = feature_distance(s_taps.values[term], t_taps.values[term])
                if term == "bev":
                    value = 0.5 * (value + feature_distance(s_state, t_state))
                frame_loss = frame_loss + getattr(weights, term) * value
                parts[term] += float(value.detach()) / len(frames)
            if weights.head > 0:
                value = head_distance(out, t_out)
                frame_loss = frame_loss + weights.head * value
                parts["head"] += float(value.detach()) / len(frames)
            total = total + frame_loss / len(frames)
    finally:
        s_taps.close()
        t_taps.close()
    return total, parts


def save_checkpoint(path: Path, student: nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    history: list[dict[str, float]] | None = None) -> None:
    """Weights, quantizer state (amax, bits), the step and the loss history so far, written atomically."""
    import modelopt.torch.opt as mto

    tmp = path.with_suffix(".tmp")
    torch.save({"modelopt_state": mto.modelopt_state(student), "model": student.state_dict(),
                "optimizer": optimizer.state_dict(), "step": step, "history": history or []}, tmp)
    tmp.rename(path)


def restore_checkpoint(path: Path, net: BEVDetector, optimizer_factory: Callable[[nn.Module], torch.optim.Optimizer]
                       ) -> tuple[BEVDetector, torch.optim.Optimizer, int, list[dict[str, float]]]:
    """The student of a checkpoint (``net`` is a fresh FP32 network of the same config), its optimizer,
    step, and the per-step loss parts up to it (older checkpoints: none)."""
    import modelopt.torch.opt as mto

    register_relu_quantizers()
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    student = mto.restore_from_modelopt_state(fold_batchnorm(net.eval()), ckpt["modelopt_state"])
    student.load_state_dict(ckpt["model"])
    optimizer = optimizer_factory(student)
    optimizer.load_state_dict(ckpt["optimizer"])
    step = int(ckpt["step"])
    return student, optimizer, step, list(ckpt.get("history", []))[:step]


def finetune(student: BEVDetector, teacher: BEVDetector, sample: Callable[[], list[dict[str, torch.Tensor]]],
             cfg: QatConfig, out_dir: Path | None = None, optimizer: torch.optim.Optimizer | None = None,
             start: int = 0, earlier: list[dict[str, float]] = ()) -> tuple[list[dict[str, float]], int]:
    """Fine-tune to ``cfg.steps`` (resuming at ``start`` after the ``earlier`` history); per-step loss parts
    of the steps run (with the progressive stage when ``cfg.progressive``); checkpoints to ``out_dir``."""
    optimizer = optimizer or make_optimizer(student, cfg.lr)
    teacher.eval()
    student.eval()  # BN is folded: eval changes nothing but keeps any remaining module deterministic
    history: list[dict[str, float]] = []
    step = start
    with tqdm(total=cfg.steps, initial=start, desc="qat", unit="step") as bar:
        while step < cfg.steps:
            stage = progressive_stage(step, cfg.steps) if cfg.progressive else None
            with quantizers_off(student, partial(in_stage, stage=stage)):
                loss, parts = vgd_window_loss(student, teacher, sample(), cfg.weights)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(student.parameters(), 10.0)
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(cfg, step)
                optimizer.step()
            step += 1
            history.append({"loss": float(loss.detach()), **parts, **({"stage": stage} if stage is not None else {})})
            bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
            bar.update()
            if out_dir is not None and (step % cfg.checkpoint_every_steps == 0 or step == cfg.steps):
                save_checkpoint(out_dir / CHECKPOINT_NAME, student, optimizer, step, [*earlier, *history])
    return history, step


def make_optimizer(student: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam on the weights only: quantizer ranges stay at their calibration (modelopt's int8 QAT)."""
    params = [p for name, p in student.named_parameters() if "quantizer" not in name and p.requires_grad]
    return torch.optim.Adam(params, lr=lr)


def contract_args(inputs: dict[str, np.ndarray], names: Iterable[str]) -> tuple[torch.Tensor, ...]:
    """``inputs`` as the exporter's example arguments, in ``names`` (the graph's input) order."""
    return tuple(torch.from_numpy(np.asarray(inputs[name], np.float32)) for name in names)


def export_qdq(student: BEVDetector, out_path: str | Path, inputs: dict[str, np.ndarray],
               config_from: str | Path) -> Path:
    """The fake-quant student as a Q/DQ ONNX (TensorRT flavour), contract- and TensorRT-checked;
    the model config YAML of ``config_from`` is copied next to it."""
    out_path = export_student(student, out_path, inputs, config_from)
    ok, reason = tensorrt_style(out_path)
    if not ok:
        raise ConfigError(f"{out_path}: not TensorRT-consumable: {reason}")
    return out_path


def export_cpu_student(student: BEVDetector, out_path: str | Path, inputs: dict[str, np.ndarray],
                       config_from: str | Path) -> Path:
    """A ``cpu_grid`` student's CPU flavour: its export (uint8 where trained unsigned, int8 elsewhere) with
    the signed activation quantizers moved to uint8 at zero point 128 (``unsigned_activations``)."""
    out_path = Path(out_path)
    trained = export_student(student, out_path.with_name(f"{out_path.stem}.trained.onnx"), inputs, config_from)
    return export_cpu_flavour(trained, out_path, student.cfg)


def export_student(student: BEVDetector, out_path: str | Path, inputs: dict[str, np.ndarray],
                   config_from: str | Path) -> Path:
    """The fake-quant student as Q/DQ ONNX (opset 17, the contract's names), contract-checked."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation note
        names = list(student.cfg.input_shapes())
        torch.onnx.export(ContractWrapper(student).eval(), contract_args(inputs, names), str(out_path),
                          input_names=names, output_names=list(CONTRACT_OUTPUTS),
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)
    copy_model_config(Path(config_from), out_path)
    check_contract(out_path, student.cfg)
    return out_path


def export_cpu_flavour(tensorrt_onnx: str | Path, out_path: str | Path, cfg: Any) -> Path:
    """The CPU flavour (u8 activations) of an exported QAT student: the TensorRT flavour's own
    quantizers moved to uint8 (``qdq.unsigned_activations``), so it runs the grid the student was
    trained on. Requantizing the fine-tuned weights with ``write_qdq`` put Q/DQ on every op of the
    plan's types, most of which the student never saw quantized: v3, held-out 3 x 60 frames per
    condition and mode, worst drop 1.12 fused / 0.41 camera-only points (at 0.56x FP32 latency), this
    conversion 0.42 / -0.09 (at 0.68x: fewer convs fuse), the TensorRT flavour 0.33 / 0.75."""
    path = unsigned_activations(tensorrt_onnx, out_path)
    check_contract(path, cfg)
    return path


def full_inputs(feed: dict[str, np.ndarray], cfg: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """A recorded feed (FRAME_INPUTS, and dt / lidar_valid of a v3 model) plus a random previous state
    with prev_valid = 1: every input of the graph, for export."""
    rng = np.random.default_rng(seed)
    state = rng.uniform(-1, 1, (cfg.C, cfg.Ho, cfg.Wo)).astype(np.float32)
    return {**feed, STATE_INPUT: state, PREV_VALID: np.ones(1, np.float32)}


@dataclass
class QatResult:
    """What ``run_qat`` produced: the student, its step, the exported files and their checks."""

    student: BEVDetector
    step: int
    history: list[dict[str, float]]
    tensorrt_onnx: Path | None = None
    cpu_onnx: Path | None = None


def training_sampler(cfg: QatConfig, model_cfg: Any, start: int) -> Callable[[], list[dict[str, torch.Tensor]]]:
    """Windows of training sequences (seeds < 10000, rendered once into the training cache) with
    the training augmentation; the stream depends on ``start`` so a resumed run sees new windows."""
    from bev_quant_ros.model.train import WindowSampler, load_sequences, load_train_config
    from bev_quant_ros.perception.geometry import load_rig
    from bev_quant_ros.perception.preprocess import camera_sampling_grid

    train_cfg = dataclasses.replace(load_train_config(cfg.train_config), seeds=cfg.train_seeds,
                                    batch_size=cfg.batch_size, window=cfg.window)
    rig = load_rig()
    sequences = load_sequences(train_cfg, model_cfg, rig)
    sampler = WindowSampler(sequences, camera_sampling_grid(rig, model_cfg), train_cfg,
                            np.random.default_rng([cfg.seed, start]))
    return sampler.sample


def run_qat(cfg: QatConfig, out_dir: Path, export: bool = True) -> QatResult:
    """Calibrate, fine-tune (or resume from ``out_dir``), export both INT8 flavours (8 bits only)."""
    from bev_quant_ros.model.onnx_weights import detector_from_onnx
    from bev_quant_ros.quant.calib_data import record_set
    from bev_quant_ros.quant.config import load_quant_config
    from bev_quant_ros.quant.plan import read_plan

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    quant_config = load_quant_config(cfg.quant_config)
    plan = read_plan(quant_config.plan) if cfg.honour_plan else None
    teacher = detector_from_onnx(quant_config.model)
    calibration = record_set(quant_config.model, quant_config.calibration)
    ckpt = out_dir / CHECKPOINT_NAME
    earlier: list[dict[str, float]] = []
    if ckpt.is_file():
        student, optimizer, start, earlier = restore_checkpoint(ckpt, detector_from_onnx(quant_config.model),
                                                                lambda m: make_optimizer(m, cfg.lr))
        LOG.info("resumed from %s at step %d", ckpt, start)
    else:
        student = quantize_student(detector_from_onnx(quant_config.model), calibration, cfg.weight_bits,
                                   cfg.activation_bits, plan,
                                   quant_config.model if cfg.quantize_conv_outputs else None, cfg.cpu_grid)
        optimizer, start = make_optimizer(student, cfg.lr), 0
    sample = training_sampler(cfg, teacher.cfg, start) if start < cfg.steps else list
    history, step = finetune(student, teacher, sample, cfg, out_dir, optimizer, start, earlier)
    (out_dir / HISTORY_NAME).write_text(json.dumps([*earlier, *history]) + "\n")
    result = QatResult(student, step, history)
    if export and cfg.weight_bits == cfg.activation_bits == 8:
        inputs = full_inputs(calibration[0].feeds[1], teacher.cfg)
        stem = quant_config.model.stem  # bev_tiny, bev_v3
        if cfg.cpu_grid:  # uint8 where trained unsigned: not TensorRT-consumable, so the CPU flavour only
            result.cpu_onnx = export_cpu_student(student, out_dir / f"{stem}.qat.int8_cpu.onnx", inputs,
                                                 quant_config.model)
            return result
        result.tensorrt_onnx = export_qdq(student, out_dir / f"{stem}.qat.int8.onnx", inputs, quant_config.model)
        result.cpu_onnx = export_cpu_flavour(result.tensorrt_onnx, out_dir / f"{stem}.qat.int8_cpu.onnx", teacher.cfg)
    return result
