"""Per-node quantization sensitivity, measured in output space against FP32.

For each candidate node two variants are built: only that node int8 (everything
else float) and everything int8 except that node. Their head-output error vs
FP32 (`assess.head_error`) on calibration-held-out frames is a fast proxy of
the detection damage; the plan search then confirms its choice with NDS.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from bev_quant_ros.errors import CalibrationError
from bev_quant_ros.fleet.runners import Runner, run_tasks
from bev_quant_ros.quant import assess
from bev_quant_ros.quant.calib_data import RecordedSequence
from bev_quant_ros.quant.qdq import DEFAULT_OP_TYPES, load_checked, write_qdq

LOG = logging.getLogger(__name__)
# Activation/data-movement ops follow their producer's precision; they are not separate decisions.
FOLLOWER_OPS = frozenset({"Relu", "Slice"})
SENSITIVITY_CHUNK = 8  # variants per task: the sequences are shipped once per task


@dataclass(frozen=True)
class NodeSensitivity:
    """Output error vs FP32 with only this node int8, and with all but this node int8."""

    node: str
    op_type: str
    only_int8_error: float
    all_but_this_error: float
    all_int8_error: float

    @property
    def float_gain(self) -> float:
        """How much keeping this node float reduces the all-INT8 error."""
        return self.all_int8_error - self.all_but_this_error

    @property
    def damage(self) -> float:
        """Ranking key: its own int8 error plus what keeping it float removes from the all-INT8 error.

        The first alone misses interactions (softmax after int8 logits); the second alone is
        blind where error is spread over many nodes (removing one leaves the rest).
        """
        return self.only_int8_error + max(self.float_gain, 0.0)

    def to_dict(self) -> dict[str, float | str]:
        return {**asdict(self), "float_gain": self.float_gain, "damage": self.damage}


def candidate_nodes(model_path: str | Path, op_types: Sequence[str] = DEFAULT_OP_TYPES) -> list[tuple[str, str]]:
    """(name, op_type) of the nodes whose precision is a decision (graph order)."""
    model = load_checked(model_path)
    return [(n.name, n.op_type) for n in model.graph.node if n.op_type in op_types and n.op_type not in FOLLOWER_OPS]


def measure_sensitivity(model_path: str | Path, thresholds: Mapping[str, float],
                        sequences: Sequence[RecordedSequence], op_types: Sequence[str] = DEFAULT_OP_TYPES,
                        threads: int = 1, runner: Runner | None = None) -> list[NodeSensitivity]:
    """Sensitivity of every candidate node, most damaging first.

    Each node's two variants are independent trials: with a ``runner`` the nodes go out in
    chunks (the recorded sequences travel once per chunk, not once per node) and the errors
    come back in node order, equal to the single-process ones (same models, same inputs).
    """
    reference = assess.run_model(model_path, sequences, threads, keep_heads=True)
    nodes = candidate_nodes(model_path, op_types)
    all_names = [n.name for n in load_checked(model_path).graph.node]
    all_int8 = _variant_errors(model_path, thresholds, sequences, op_types, threads, reference, [[]])[0]
    variants = [v for name, _ in nodes for v in ([n for n in all_names if n != name], [name])]
    if runner is None:
        errors = _variant_errors(model_path, thresholds, sequences, op_types, threads, reference, variants)
    else:
        chunks = [variants[i:i + SENSITIVITY_CHUNK] for i in range(0, len(variants), SENSITIVITY_CHUNK)]
        results = run_tasks(runner, _variant_errors, [f"variants {i * SENSITIVITY_CHUNK}+" for i in range(len(chunks))],
                            [(str(model_path), dict(thresholds), list(sequences), list(op_types), 1, reference, chunk)
                             for chunk in chunks], desc="sensitivity", fail_fast=True)
        failed = [r for r in results if not r.ok]
        if failed:
            raise CalibrationError(f"sensitivity trials {failed[0].name} failed: {failed[0].error}")
        errors = [e for r in results for e in r.value]
    result = []
    for index, (name, op_type) in enumerate(nodes):
        only, all_but = errors[2 * index], errors[2 * index + 1]
        LOG.info("sensitivity %d/%d %s: only-int8 %.4f all-but %.4f", index + 1, len(nodes), name, only, all_but)
        result.append(NodeSensitivity(name, op_type, only, all_but, all_int8))
    return sorted(result, key=lambda s: s.damage, reverse=True)


def _variant_errors(model_path: str | Path, thresholds: Mapping[str, float], sequences: Sequence[RecordedSequence],
                    op_types: Sequence[str], threads: int, reference: Any,
                    float_node_sets: Sequence[Sequence[str]]) -> list[float]:
    """Head-output error vs ``reference`` of the Q/DQ variant keeping each set of nodes float (a task)."""
    errors = []
    with tempfile.TemporaryDirectory(prefix="bev_quant_sens.") as tmp:
        for float_nodes in float_node_sets:
            path = write_qdq(model_path, Path(tmp) / "variant.onnx", thresholds, float_nodes, op_types)
            errors.append(assess.head_error(reference, assess.run_model(path, sequences, threads, keep_heads=True)))
    return errors


def method_errors(model_path: str | Path, thresholds: Mapping[str, Mapping[str, float]],
                  sequences: Sequence[RecordedSequence], op_types: Sequence[str] = DEFAULT_OP_TYPES,
                  threads: int = 1) -> dict[str, float]:
    """All-INT8 output error vs FP32 for each calibration method's thresholds."""
    reference = assess.run_model(model_path, sequences, threads, keep_heads=True)
    result = {}
    with tempfile.TemporaryDirectory(prefix="bev_quant_methods.") as tmp:
        for method, values in thresholds.items():
            path = write_qdq(model_path, Path(tmp) / f"{method}.onnx", values, (), op_types)
            result[method] = assess.head_error(reference, assess.run_model(path, sequences, threads,
                                                                            keep_heads=True))
    return result
