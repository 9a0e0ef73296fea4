"""Q/DQ export with ONNX Runtime's quantizer, our ranges and a float-node set.

Two flavours of one calibration and one precision plan:

* ``tensorrt`` — the TensorRT-consumable form (docs/architecture.md §3):
  symmetric signed int8 activations and weights, per-channel weights, bias float.
* ``cpu`` — what ONNX Runtime's x86 int8 kernels run fastest: unsigned activations
  with a zero point (u8 x s8, the VNNI instruction's operand types), same weights.
  A ReLU output's range becomes [0, T], so ORT folds the ReLU into the conv's
  requantization; with symmetric s8 activations every conv instead pays
  DequantizeLinear -> Relu -> QuantizeLinear and the int8 model ran slower than FP32.

Ranges computed by `ranges.py` reach `quantize_static` through its calibration cache
(a `TensorsData` JSON), so ORT's own calibrators, whose Entropy silently equals
MinMax, are never used for the shipped models.
"""

from __future__ import annotations

import itertools
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

from bev_quant_ros.engine.io_check import check_contract, constant_values, consumers, onnx_specs, read_onnx
from bev_quant_ros.errors import PrecisionPlanError
from bev_quant_ros.quant.calib_data import RecordedSequence, state_feeds

# Ops quantized by default: the compute ops that become int8 kernels (QLinearConv/MatMul on ORT CPU,
# fused INT8 layers in TensorRT) and the ops between them that keep a tensor int8. Left out:
# data movement (Reshape, Gather, ...), so grid/shape arithmetic cannot be quantized by accident,
# and the gating/masking elementwise ops (Mul, Sigmoid, Slice): on ORT CPU their Q/DQ around
# float-only neighbours (GridSample) cost more than QLinearMul saves (measured: the camera-lift
# Mul went 4.7 ms float -> 10 ms with its Q/DQ), and TensorRT fuses them into adjacent layers anyway.
DEFAULT_OP_TYPES: tuple[str, ...] = ("Conv", "MatMul", "Softmax", "Add", "Concat", "AveragePool", "Resize",
                                     "Relu")
# Weights: symmetric per-channel int8 in both flavours; bias stays float (TensorRT adds it in
# float). DedicatedQDQPair: one Q/DQ pair per consumer, so ORT can fuse each Conv into
# QLinearConv even where a tensor feeds two nodes (TensorRT fuses either way).
QDQ_EXTRA_OPTIONS = {"WeightSymmetric": True, "QuantizeBias": False, "DedicatedQDQPair": True}
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}


@dataclass(frozen=True)
class QdqFlavour:
    """How activations are stored in the Q/DQ model (see the module docstring)."""

    name: str
    activation_type: QuantType
    symmetric: bool


TENSORRT = QdqFlavour("tensorrt", QuantType.QInt8, symmetric=True)
CPU = QdqFlavour("cpu", QuantType.QUInt8, symmetric=False)
ObservedRanges = Mapping[str, tuple[float, float]]  # tensor -> (min, max) seen in calibration


def load_checked(path: str | Path) -> onnx.ModelProto:
    """The model with weights and inferred shapes, after checking the engine I/O contract."""
    model = read_onnx(path)
    check_contract(*onnx_specs(model))
    return onnx.shape_inference.infer_shapes(onnx.load(str(path)))


def calibration_tensors(model: onnx.ModelProto, op_types: Sequence[str] = DEFAULT_OP_TYPES) -> list[str]:
    """Float activations at the inputs/outputs of quantizable nodes (what the quantizer needs ranges for).

    Same selection as ORT's `CalibraterBase.select_tensors_to_calibrate`, in graph order.
    """
    infos = {v.name: v for v in itertools.chain(model.graph.value_info, model.graph.output, model.graph.input)}
    initializers = {i.name for i in model.graph.initializer}
    names: dict[str, None] = {}
    for node in model.graph.node:
        if node.op_type not in op_types:
            continue
        for name in itertools.chain(node.input, node.output):
            info = infos.get(name)
            if info is not None and name not in initializers and info.type.tensor_type.elem_type in _FLOAT_TYPES:
                names[name] = None
    return list(names)


def check_nodes_exist(model: onnx.ModelProto, nodes: Iterable[str], what: str = "precision plan") -> None:
    """A plan naming nodes the model lacks is an error, never silently ignored."""
    known = {node.name for node in model.graph.node}
    missing = sorted(set(nodes) - known)
    if missing:
        raise PrecisionPlanError(f"{what} names node(s) not in the model: {missing}")


def activation_ranges(thresholds: Mapping[str, float], flavour: QdqFlavour,
                      observed: ObservedRanges | None = None) -> dict[str, tuple[float, float]]:
    """(low, high) per tensor: [-T, T] when symmetric; else the clip threshold T cut to what
    calibration observed, so a non-negative tensor (ReLU output) spends all 256 levels on [0, T]."""
    if flavour.symmetric:
        return {name: (-value, value) for name, value in thresholds.items()}
    if observed is None:
        raise PrecisionPlanError(f"the {flavour.name} flavour needs the observed min/max of each tensor")
    missing = [name for name in thresholds if name not in observed]
    if missing:
        raise PrecisionPlanError(f"no observed range for tensor(s) {missing[:5]} (of {len(missing)})")
    return {name: (max(observed[name][0], -value), min(observed[name][1], value))
            for name, value in thresholds.items()}


def write_qdq(model_path: str | Path, out_path: str | Path, thresholds: Mapping[str, float],
              float_nodes: Sequence[str] = (), op_types: Sequence[str] = DEFAULT_OP_TYPES,
              flavour: QdqFlavour = TENSORRT, observed: ObservedRanges | None = None) -> Path:
    """Quantize `model_path` with the clip `thresholds` in `flavour`, keeping `float_nodes` float;
    copy its config YAML. `observed` (min, max per tensor) is needed by asymmetric flavours."""
    model_path, out_path = Path(model_path), Path(out_path)
    model = load_checked(model_path)
    check_nodes_exist(model, float_nodes)
    missing = [t for t in calibration_tensors(model, op_types) if t not in thresholds]
    if missing:
        raise PrecisionPlanError(f"no calibration range for tensor(s) {missing[:5]} (of {len(missing)})")
    ranges = TensorsData(CalibrationMethod.MinMax, {
        name: TensorData(lowest=np.float32(low), highest=np.float32(high))
        for name, (low, high) in activation_ranges(thresholds, flavour, observed).items()})
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bev_quant_qdq.") as tmp:
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(ranges, cache)
        quantize_static(_private_copy(model_path, tmp), str(out_path), None, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(op_types), per_channel=True,
                        activation_type=flavour.activation_type, weight_type=QuantType.QInt8,
                        nodes_to_exclude=list(float_nodes), calibrate_method=CalibrationMethod.MinMax,
                        extra_options={**QDQ_EXTRA_OPTIONS, "ActivationSymmetric": flavour.symmetric},
                        calibration_cache_path=str(cache))
    copy_model_config(model_path, out_path)
    return out_path


def _private_copy(model_path: Path, directory: str) -> str:
    """The model copied into this call's own directory, for `quantize_static`: it writes
    `<model>-inferred.onnx` beside its input and deletes it, so parallel tasks quantizing one model
    raced (FileNotFoundError) and a model in a read-only install could not be quantized."""
    return shutil.copy(model_path, Path(directory) / model_path.name)


def copy_model_config(model_path: Path, out_path: Path) -> None:
    """The model config YAML travels with every ONNX (`model_config_for_onnx` looks next to it)."""
    source, target = model_path.with_suffix(".yaml"), out_path.with_suffix(".yaml")
    if source.is_file() and source.resolve() != target.resolve():
        shutil.copyfile(source, target)


def tensorrt_style(path: str | Path) -> tuple[bool, str]:
    """Whether a Q/DQ model has what TensorRT's explicit quantization accepts: int8 with zero points 0
    (symmetric) and no int32 bias DQ; with the first violation found as the reason."""
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if node.op_type == "DequantizeLinear" and node.input[0] in inits and \
                inits[node.input[0]].data_type == onnx.TensorProto.INT32:
            return False, f"int32 bias DQ {node.name}"
        if len(node.input) > 2 and node.input[2] in inits:
            zero_point = onnx.numpy_helper.to_array(inits[node.input[2]])
            if zero_point.dtype != np.int8 or zero_point.any():
                return False, f"{node.name}: zero point {zero_point.dtype} {zero_point.ravel()[:3]} (asymmetric)"
    return True, "symmetric int8, float bias"


def unsigned_activations(model_path: str | Path, out_path: str | Path) -> Path:
    """The CPU flavour of a symmetric int8 Q/DQ model whose grid was trained (a QAT export): every
    activation Q/DQ pair moves to uint8. Zero point 128 with the same scale keeps the 256 levels and
    the rounding exactly. On a ReLU output the zero point is 0, which lets ONNX Runtime fold the ReLU
    into QLinearConv, and the scale halves: 255 levels of half the step, every trained level among
    them, saturating at 127.5 steps where the student saturated at 127. (With the same scale the
    trained clip was lost: v3, held-out 3 x 60 frames, camera-only worst drop 1.15 points against 0.75
    for the TensorRT flavour; half the scale 0.42 fused / -0.09 camera-only. Zero point 128 on every
    tensor matched the TensorRT flavour exactly but ran at 1.88x FP32: no ReLU fold, no QLinearConv.)
    Weights keep their int8 Q/DQ; no Q/DQ is added or removed; uint8 zero-point-0 quantizers (trained
    unsigned: a ``cpu_grid`` QAT student) already are the CPU grid and stay as they are. ``write_qdq``
    with the CPU flavour would instead quantize every op of the plan's types, also where the student had
    no quantizer."""
    model = onnx.load(str(model_path))
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    values = constant_values(model)
    producers = {out: node for node in graph.node for out in node.output}
    readers = consumers(graph)
    for node in list(graph.node):
        if node.op_type != "QuantizeLinear" or node.input[0] in weights:
            continue
        source = producers.get(node.input[0])
        if source is not None and source.op_type == "Constant":
            continue
        scale = values.get(node.input[1])
        zero_point = values.get(node.input[2]) if len(node.input) > 2 else None
        if zero_point is not None and zero_point.dtype == np.uint8 and not zero_point.any():
            continue  # trained unsigned (a cpu_grid QAT student): already the CPU grid
        if scale is None or zero_point is None or zero_point.dtype != np.int8 or zero_point.any():
            raise PrecisionPlanError(f"{model_path}: {node.name} is not a symmetric int8 activation quantizer")
        after_relu = source is not None and source.op_type == "Relu"
        quantizer = [node.input[1], f"{node.output[0]}/uint8_zero_point"]
        graph.initializer.append(onnx.numpy_helper.from_array(np.array(0 if after_relu else 128, np.uint8),
                                                              quantizer[1]))
        if after_relu:
            quantizer[0] = f"{node.output[0]}/uint8_scale"
            graph.initializer.append(onnx.numpy_helper.from_array((scale / 2).astype(scale.dtype), quantizer[0]))
        for target in [node, *readers.get(node.output[0], [])]:
            if target is not node and target.op_type != "DequantizeLinear":
                raise PrecisionPlanError(f"{model_path}: {node.name} feeds {target.op_type}, not a DequantizeLinear")
            target.input[1] = quantizer[0]
            if len(target.input) > 2:
                target.input[2] = quantizer[1]
            else:
                target.input.append(quantizer[1])
    drop_unread_constants(graph)
    out_path = Path(out_path)
    onnx.save(model, str(out_path))
    copy_model_config(Path(model_path), out_path)
    return out_path


def drop_unread_constants(graph: onnx.GraphProto) -> None:
    """Remove the Constant nodes no node or graph output reads (the int8 zero points and scales replaced
    above); ONNX Runtime would warn once per such constant on every load of the model."""
    read = {name for node in graph.node for name in node.input} | {out.name for out in graph.output}
    for node in [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in read]:
        graph.node.remove(node)


class SequenceReader(CalibrationDataReader):
    """ORT calibration reader over recorded sequences, each frame with the FP32 model's own state.

    Lazy (a frame's full feed exists only while ORT runs it) and strided: ORT's
    `CalibStridedMinMax` calls `set_range` with consecutive windows, which this reader
    serves from one running pass, so the recurrent state stays sequential.
    """

    def __init__(self, model_path: str | Path, sequences: Sequence[RecordedSequence]) -> None:
        import onnxruntime as ort

        session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        self._total = sum(len(s) for s in sequences)
        self._iter = (feed for sequence in sequences for feed, _ in state_feeds(session, sequence, []))
        self._left = self._total

    def __len__(self) -> int:
        return self._total

    def set_range(self, start_index: int, end_index: int) -> None:
        self._left = end_index - start_index

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._left <= 0:
            return None
        self._left -= 1
        return next(self._iter, None)


def write_ort_default(model_path: str | Path, out_path: str | Path,
                      sequences: Sequence[RecordedSequence]) -> Path:
    """The baseline: `quantize_static` with all its defaults (MinMax, QDQ, every op type it knows).

    Only memory is bounded: `CalibStridedMinMax` merges exact running min/max per window
    (same ranges). Not `CalibMaxIntermediateOutputs`: in onnxruntime 1.32 it discards every
    full window without computing its range, so only the last partial window would count.
    """
    model_path, out_path = Path(model_path), Path(out_path)
    load_checked(model_path)
    reader = SequenceReader(model_path, sequences)
    with tempfile.TemporaryDirectory(prefix="bev_quant_qdq.") as tmp:
        quantize_static(_private_copy(model_path, tmp), str(out_path), reader,
                        extra_options={"CalibStridedMinMax": math.gcd(len(reader), 8)})
    copy_model_config(model_path, out_path)
    return out_path
