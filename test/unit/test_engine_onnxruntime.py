"""ONNX Runtime backend against direct `InferenceSession.run` on the tiny contract graph."""

from __future__ import annotations

import logging
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from bev_quant_ros.engine.base import FRAME_INPUTS
from bev_quant_ros.engine.contract import CONTRACT_INPUTS, CONTRACT_OUTPUTS
from bev_quant_ros.engine.factory import create_engine
from bev_quant_ros.engine.onnxruntime_backend import OnnxRuntimeEngine
from bev_quant_ros.errors import ConfigError, EngineInputError, ModelContractError
from tiny_model import TinyDims, build_tiny_model

from .engine_fixtures import random_frame, with_state

DIMS = TinyDims()
OUTPUTS = list(CONTRACT_OUTPUTS)


def _direct(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _zero_state(dims: TinyDims = DIMS) -> np.ndarray:
    return np.zeros((dims.state_channels, dims.ho, dims.wo), np.float32)


@pytest.mark.parametrize("which", [0, 1], ids=["fp32", "int8"])
def test_three_frames_bit_exact_with_state_fed_back_by_hand(tiny_models, which):
    path = tiny_models[which]
    engine = OnnxRuntimeEngine(path)
    session = _direct(path)
    rng = np.random.default_rng(7)
    state = _zero_state()
    for index, prev_valid in enumerate([0.0, 1.0, 1.0]):
        assert engine.state_valid is (index > 0)
        frame = random_frame(DIMS, rng)
        got = engine.infer(frame)
        want = dict(zip(OUTPUTS, session.run(OUTPUTS, with_state(frame, state, prev_valid))))
        for name in OUTPUTS:
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"frame {index} {name}")
        if index == 2:  # the fed-back state matters: dropping it changes the result
            stateless = session.run(OUTPUTS, with_state(frame, _zero_state(), 0.0))
            assert not np.array_equal(got["heatmap"], stateless[0])
        state = want["bev_state"]


def test_outputs_are_read_only_views(tiny_models):
    engine = OnnxRuntimeEngine(tiny_models[0])
    out = engine.infer(random_frame(DIMS, np.random.default_rng(0)))
    assert set(out) == set(CONTRACT_OUTPUTS)
    with pytest.raises(ValueError):
        out["heatmap"][0, 0, 0] = 1.0


def test_reset_zeroes_state_and_next_frame_sees_prev_valid_zero(tiny_models):
    engine = OnnxRuntimeEngine(tiny_models[0])
    session = _direct(tiny_models[0])
    rng = np.random.default_rng(3)
    for _ in range(2):
        state = np.array(engine.infer(random_frame(DIMS, rng))["bev_state"])
    assert np.abs(state).sum() > 0
    engine.reset_state()
    assert not engine.state_valid
    frame = random_frame(DIMS, rng)
    got = engine.infer(frame)
    want = session.run(OUTPUTS, with_state(frame, _zero_state(), 0.0))
    for name, expected in zip(OUTPUTS, want):
        np.testing.assert_array_equal(got[name], expected)


def test_warmup_leaves_state_and_last_outputs_untouched(tiny_models):
    engine = OnnxRuntimeEngine(tiny_models[1])
    session = _direct(tiny_models[1])
    rng = np.random.default_rng(5)
    frame = random_frame(DIMS, rng)
    first = engine.infer(frame)
    first_copy = {k: np.array(v) for k, v in first.items()}
    engine.warmup(iterations=2)
    for name in OUTPUTS:
        np.testing.assert_array_equal(first[name], first_copy[name])
    assert engine.state_valid
    frame2 = random_frame(DIMS, rng)
    got = engine.infer(frame2)
    want = session.run(OUTPUTS, with_state(frame2, first_copy["bev_state"], 1.0))
    for name, expected in zip(OUTPUTS, want):
        np.testing.assert_array_equal(got[name], expected)


def _traced_growth(run, frames: int, warm_frames: int) -> tuple[int, int]:
    """(net growth, peak growth) in bytes of traced Python/numpy allocations over `frames` calls.

    The first `warm_frames` calls run under tracing too: interpreter/onnxruntime
    caches fill during the first few hundred calls (bounded: ~20 KiB, then flat).
    """
    tracemalloc.start()
    try:
        for _ in range(warm_frames):
            run()
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(frames):
            run()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return after - before, peak - before


def test_steady_state_allocates_no_numpy_buffers(tmp_path):
    dims = TinyDims(hb=32, wb=32, state_channels=8)
    path = tmp_path / "mid.onnx"
    onnx.save(build_tiny_model(dims), path)
    engine = OnnxRuntimeEngine(path)
    frame = random_frame(dims, np.random.default_rng(0))
    engine.warmup()
    engine.infer(frame)
    smallest_output = min(np.asarray(v).nbytes for v in engine.infer(frame).values())
    assert smallest_output >= 3 * 1024  # the bound below is meaningful only if outputs are this big
    net, peak = _traced_growth(lambda: engine.infer(frame), frames=200, warm_frames=400)
    assert net < 512, f"net growth {net} B over 200 frames"
    assert peak < smallest_output, f"peak {peak} B >= smallest output buffer {smallest_output} B"
    # the same probe does see a numpy buffer of that size allocated per frame
    _, copy_peak = _traced_growth(lambda: np.array(engine.infer(frame)["heatmap"]), frames=3, warm_frames=1)
    assert copy_peak >= smallest_output


def test_precision_read_from_model_and_checked(tiny_models):
    assert OnnxRuntimeEngine(tiny_models[0]).describe().precision == "fp32"
    assert OnnxRuntimeEngine(tiny_models[1]).describe().precision == "int8"
    with pytest.raises(ModelContractError, match="int8"):
        OnnxRuntimeEngine(tiny_models[0], precision="int8")
    with pytest.raises(ConfigError, match="precision"):
        OnnxRuntimeEngine(tiny_models[0], precision="int4")


def test_describe_lists_backend_provider_and_contract_tensors(tiny_models):
    description = OnnxRuntimeEngine(tiny_models[1], intra_op_num_threads=1,
                                     graph_optimization_level="extended").describe()
    assert description.backend == "onnxruntime"
    assert description.providers == ("CPUExecutionProvider",)
    assert [s.name for s in description.inputs] == list(CONTRACT_INPUTS)
    assert [s.name for s in description.outputs] == list(CONTRACT_OUTPUTS)
    specs = {s.name: s for s in description.inputs + description.outputs}
    assert specs["cam_grid"].shape == (DIMS.z * DIMS.ho, DIMS.wo, 2)
    assert specs["heatmap"].shape == (DIMS.classes, DIMS.ho, DIMS.wo) and specs["heatmap"].dtype == "float32"
    assert description.dims["Z"] == DIMS.z and description.dims["C"] == DIMS.state_channels
    assert description.details["graph_optimization_level"] == "extended"
    as_dict = description.to_dict()
    assert as_dict["inputs"][0] == {"name": "images", "shape": [6, 3, DIMS.image_h, DIMS.image_w],
                                    "dtype": "float32"}


def test_unavailable_provider_falls_back_to_cpu_with_a_warning(tiny_models, caplog):
    with caplog.at_level(logging.WARNING):
        engine = OnnxRuntimeEngine(tiny_models[0], execution_providers=("TensorrtExecutionProvider",
                                                                         "CUDAExecutionProvider"))
    assert engine.describe().providers == ("CPUExecutionProvider",)
    assert "CUDAExecutionProvider" in caplog.text


def test_bad_session_options_are_config_errors(tiny_models):
    with pytest.raises(ConfigError, match="graph_optimization_level"):
        OnnxRuntimeEngine(tiny_models[0], graph_optimization_level="max")
    with pytest.raises(ConfigError, match="threads"):
        OnnxRuntimeEngine(tiny_models[0], intra_op_num_threads=-1)


def test_bad_frames_raise_engine_input_error_naming_the_tensor(tiny_models):
    engine = create_engine(tiny_models[0], backend="onnxruntime")
    frame = random_frame(DIMS, np.random.default_rng(0))
    with pytest.raises(EngineInputError, match="lidar_bev"):
        engine.infer({k: v for k, v in frame.items() if k != "lidar_bev"})
    with pytest.raises(EngineInputError, match="ego_motion"):
        engine.infer({**frame, "ego_motion": frame["ego_motion"].astype(np.float64)})
    with pytest.raises(EngineInputError, match="images"):
        engine.infer({**frame, "images": frame["images"][:5]})
    assert not engine.state_valid  # a rejected frame does not advance the state
    assert set(FRAME_INPUTS) == set(frame)


def test_non_contiguous_input_gives_same_result(tiny_models):
    engine = OnnxRuntimeEngine(tiny_models[0])
    frame = random_frame(DIMS, np.random.default_rng(2))
    expected = np.array(engine.infer(frame)["heatmap"])
    engine.reset_state()
    flipped = np.ascontiguousarray(frame["lidar_bev"][:, :, ::-1])[:, :, ::-1]  # a strided view
    assert not flipped.flags.c_contiguous
    np.testing.assert_array_equal(engine.infer({**frame, "lidar_bev": flipped})["heatmap"], expected)
