"""TensorRT backend on a real GPU: same contract behaviour as the ONNX Runtime backend.

Skips (with the reason) unless `tensorrt`, `pycuda` and a CUDA GPU are present;
`benchmarks/gpu_check.sh` runs this file on such a machine.
"""

from __future__ import annotations

import numpy as np
import pytest

from bev_quant_ros.engine.contract import CONTRACT_OUTPUTS
from bev_quant_ros.engine.factory import create_engine, tensorrt_available
from bev_quant_ros.engine.onnxruntime_backend import OnnxRuntimeEngine
from tiny_model import TinyDims

from .engine_fixtures import random_frame

AVAILABLE, REASON = tensorrt_available()
pytestmark = pytest.mark.skipif(not AVAILABLE, reason=f"TensorRT backend cannot run here: {REASON}")
DIMS = TinyDims()
OUTPUTS = list(CONTRACT_OUTPUTS)
# FP16 float layers and INT8 kernels differ from ONNX Runtime's CPU arithmetic; these are loose on purpose
TOLERANCE = {"fp32": 1e-3, "int8": 0.1}


def _trt(path, tmp_path, **options):
    from bev_quant_ros.engine.tensorrt_backend import TensorRTEngine

    return TensorRTEngine(path, engine_cache_dir=tmp_path, workspace_mib=256, allow_fp16=False, **options)


@pytest.mark.parametrize("which", [0, 1], ids=["fp32", "int8"])
@pytest.mark.parametrize("use_cuda_graph", [False, True], ids=["enqueue", "cuda_graph"])
def test_three_frames_match_onnxruntime(tiny_models, tmp_path, which, use_cuda_graph):
    trt_engine = _trt(tiny_models[which], tmp_path, use_cuda_graph=use_cuda_graph)
    ort_engine = OnnxRuntimeEngine(tiny_models[which])
    precision = trt_engine.describe().precision
    assert precision == ("fp32", "int8")[which]
    rng = np.random.default_rng(11)
    for index in range(3):
        frame = random_frame(DIMS, rng)
        got, want = trt_engine.infer(frame), ort_engine.infer(frame)
        for name in OUTPUTS:
            np.testing.assert_allclose(got[name], want[name], atol=TOLERANCE[precision],
                                       err_msg=f"frame {index} {name}")


def test_reset_and_warmup_keep_state_semantics(tiny_models, tmp_path):
    engine = _trt(tiny_models[0], tmp_path)
    rng = np.random.default_rng(2)
    frames = [random_frame(DIMS, rng) for _ in range(2)]
    first = np.array(engine.infer(frames[0])["heatmap"])
    engine.warmup(2)
    assert engine.state_valid
    second = np.array(engine.infer(frames[1])["heatmap"])
    engine.reset_state()
    assert not engine.state_valid
    np.testing.assert_array_equal(engine.infer(frames[0])["heatmap"], first)  # prev_valid=0, zero state
    np.testing.assert_array_equal(engine.infer(frames[1])["heatmap"], second)


def test_cached_engine_is_reused_and_described(tiny_models, tmp_path):
    engine = _trt(tiny_models[1], tmp_path)
    engine_path = engine.describe().details["engine_path"]
    mtime = (tmp_path / engine_path.split("/")[-1]).stat().st_mtime_ns
    again = create_engine(tiny_models[1], backend="tensorrt", engine_cache_dir=tmp_path, allow_fp16=False)
    description = again.describe()
    assert description.backend == "tensorrt" and description.precision == "int8"
    assert description.details["engine_path"] == engine_path
    assert (tmp_path / engine_path.split("/")[-1]).stat().st_mtime_ns == mtime
