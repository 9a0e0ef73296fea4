"""Check a model's named inputs/outputs against the engine I/O contract (docs/architecture.md §2).

Every backend validates before it allocates anything, so a wrong model fails at
load time with a `ModelContractError` naming the tensor, instead of as a shape
error deep inside a runtime on the first frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from bev_quant_ros.engine.contract import (
    CONTRACT_INPUTS,
    CONTRACT_OUTPUTS,
    OPTIONAL_INPUTS,
    STATE_INPUT,
    STATE_OUTPUT,
)
from bev_quant_ros.errors import ModelContractError

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
INT8_OPS = QDQ_OPS | {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}


@dataclass(frozen=True)
class TensorSpec:
    """One named engine tensor: static shape and numpy dtype name ("float32", "uint8", …)."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def read_onnx(path: str | Path) -> onnx.ModelProto:
    """Load an ONNX model's graph (weights left external), or raise a clear ModelContractError."""
    path = Path(path)
    if not path.is_file():
        raise ModelContractError(f"model file {path} does not exist")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several unrelated types on garbage
        raise ModelContractError(f"{path} is not a readable ONNX model: {exc}") from exc
    if model.ir_version <= 0 or not model.graph.node:
        raise ModelContractError(f"{path} is not an ONNX model (no IR version or no graph nodes)")
    return model


def constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every tensor of ``model`` with a value fixed in the graph (initializers and Constant nodes'
    outputs: exporters emit both), by name, in its stored dtype."""
    values = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    return values


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name -> the nodes reading it, in graph order (graph walks: the recurrent loop, what a
    quantizer feeds, what a conv's output reaches)."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def onnx_specs(model: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Graph inputs (initializers excluded) and outputs as static TensorSpecs."""
    initializers = {init.name for init in model.graph.initializer}

    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        tensor = value.type.tensor_type
        dims = []
        for dim in tensor.shape.dim:
            if not dim.HasField("dim_value"):
                raise ModelContractError(
                    f"tensor '{value.name}' has a dynamic dimension '{dim.dim_param or '?'}'; "
                    "engines need static shapes from the model config")
            dims.append(int(dim.dim_value))
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
        return TensorSpec(value.name, tuple(dims), dtype)

    inputs = [spec(v) for v in model.graph.input if v.name not in initializers]
    return inputs, [spec(v) for v in model.graph.output]


def onnx_precision(model: onnx.ModelProto) -> str:
    """"int8" when the graph carries quantization ops (Q/DQ or QLinear*), else "fp32"."""
    return "int8" if any(node.op_type in INT8_OPS for node in model.graph.node) else "fp32"


def _bind(symbol: str, size: int, where: str, dims: dict[str, int], origin: dict[str, str]) -> None:
    """Resolve one symbolic dimension ("Hb" or a product "Z*Hb") against a concrete size.

    `origin` remembers which tensor fixed each symbol, so a conflict names both tensors.
    """
    factors = symbol.split("*")
    unknown = [f for f in factors if f not in dims]
    known = int(np.prod([dims[f] for f in factors if f in dims], dtype=np.int64))
    if len(unknown) == 1 and size % known == 0:
        dims[unknown[0]] = size // known
        origin[unknown[0]] = where
        return
    if unknown or known != size:
        fixed = "; ".join(f"{f}={dims[f]} from {origin[f]}" for f in factors if f in dims)
        raise ModelContractError(f"{where}: dimension '{symbol}' is {size}, inconsistent with {fixed}")


def check_contract(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                   expected_dims: Mapping[str, int] | None = None) -> dict[str, int]:
    """Validate names, ranks and dimensions; return the resolved symbol sizes (Hb, C, …).

    Single symbols are resolved first (in contract order), products like `Z*Hb`
    after, so the check does not depend on which tensor happens to come first.
    `OPTIONAL_INPUTS` (dt, lidar_valid) may be absent; when present they are checked too.
    """
    by_name = {"input": {s.name: s for s in inputs}, "output": {s.name: s for s in outputs}}
    dims: dict[str, int] = dict(expected_dims or {})
    origin = {symbol: "the model config" for symbol in dims}
    contract = [("input", CONTRACT_INPUTS, True), ("input", OPTIONAL_INPUTS, False),
                ("output", CONTRACT_OUTPUTS, True)]
    pending: list[tuple[str, str, int]] = []
    for kind, table, required in contract:
        for name, symbolic in table.items():
            spec = by_name[kind].get(name)
            if spec is None and not required:
                continue
            if spec is None:
                raise ModelContractError(
                    f"model has no {kind} tensor '{name}' (contract {kind}s: {sorted(table)}; "
                    f"model has {sorted(by_name[kind])})")
            where = f"{kind} '{name}' shape {list(spec.shape)} vs contract {list(symbolic)}"
            if len(spec.shape) != len(symbolic):
                raise ModelContractError(f"{where}: rank {len(spec.shape)} != {len(symbolic)}")
            for symbol, size in zip(symbolic, spec.shape):
                if isinstance(symbol, int):
                    if size != symbol:
                        raise ModelContractError(f"{where}: dimension is {size}, must be {symbol}")
                elif "*" in symbol:
                    pending.append((symbol, size, where))
                else:
                    _bind(symbol, size, where, dims, origin)
    for symbol, size, where in pending:
        _bind(symbol, size, where, dims, origin)
    state_in, state_out = by_name["input"][STATE_INPUT], by_name["output"][STATE_OUTPUT]
    if state_in.dtype != state_out.dtype:
        raise ModelContractError(
            f"'{STATE_OUTPUT}' dtype {state_out.dtype} differs from '{STATE_INPUT}' {state_in.dtype}: "
            "the state is fed back unchanged")
    extra = sorted(set(by_name["input"]) - set(CONTRACT_INPUTS) - set(OPTIONAL_INPUTS))
    if extra:
        raise ModelContractError(f"model has inputs outside the contract: {extra}")
    return dims
