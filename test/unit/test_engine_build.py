"""Engine build + cache: a real TensorRT builder (TensorRT-RTX runs its builder without a GPU)."""

from __future__ import annotations

import importlib.util
import json
import logging

import onnx
import pytest

from bev_quant_ros.engine.build import (
    BuildOptions,
    CacheKey,
    build_serialized_engine,
    engine_paths,
    ensure_engine,
    import_tensorrt,
)
from bev_quant_ros.errors import ConfigError, EngineBuildError, ModelContractError
from bev_quant_ros.quant.qdq import tensorrt_style
from bev_quant_ros.resources import default_model_path

RTX = "tensorrt_rtx"
needs_rtx = pytest.mark.skipif(importlib.util.find_spec(RTX) is None,
                               reason="tensorrt_rtx not installed (pip install tensorrt-rtx-cu13): "
                                      "no TensorRT builder on this machine")


@needs_rtx
def test_qdq_model_parses_builds_and_is_cached(tiny_models, tmp_path, caplog):
    options = BuildOptions(precision="int8", workspace_mib=64, timing_cache_path=tmp_path / "timing.cache")
    with caplog.at_level(logging.INFO, logger="bev_quant_ros.engine.build"):
        path, rebuilt = ensure_engine(tiny_models[1], tmp_path, options, trt_module=RTX, gpu_name="gpu-A")
    assert rebuilt and path == engine_paths(tmp_path, tiny_models[1], "int8")[0]
    assert path.stat().st_size > 10_000
    assert "no cached engine" in caplog.text
    key = json.loads(path.with_suffix(".engine.json").read_text())
    assert key["gpu_name"] == "gpu-A" and key["precision"] == "int8" and len(key["onnx_sha256"]) == 64
    assert key["tensorrt_version"] == import_tensorrt(RTX).__version__
    mtime = path.stat().st_mtime_ns

    assert ensure_engine(tiny_models[1], tmp_path, options, trt_module=RTX, gpu_name="gpu-A") == (path, False)
    assert path.stat().st_mtime_ns == mtime

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bev_quant_ros.engine.build"):
        assert ensure_engine(tiny_models[1], tmp_path, options, trt_module=RTX, gpu_name="gpu-B")[1]
    assert "gpu_name: 'gpu-A' -> 'gpu-B'" in caplog.text
    assert ensure_engine(tiny_models[1], tmp_path, options, trt_module=RTX, gpu_name="gpu-B", force=True)[1]


@needs_rtx
def test_changed_onnx_triggers_rebuild(tiny_models, tmp_path):
    onnx_copy = tmp_path / "model.onnx"
    onnx_copy.write_bytes(tiny_models[1].read_bytes())
    options = BuildOptions(workspace_mib=64)
    assert ensure_engine(onnx_copy, tmp_path, options, trt_module=RTX, gpu_name="g")[1]
    model = onnx.load(onnx_copy)
    model.doc_string = "retrained"  # same tensors, new file hash
    onnx.save(model, onnx_copy)
    assert ensure_engine(onnx_copy, tmp_path, options, trt_module=RTX, gpu_name="g")[1]


def test_int8_build_of_a_float_model_fails_before_building(tiny_models, tmp_path):
    with pytest.raises(ModelContractError, match="no Q/DQ"):
        ensure_engine(tiny_models[0], tmp_path, BuildOptions(precision="int8"), trt_module=RTX, gpu_name="g")
    assert not list(tmp_path.iterdir())


def test_build_options_are_validated():
    with pytest.raises(ConfigError, match="precision"):
        BuildOptions(precision="int4")
    with pytest.raises(ConfigError, match="workspace"):
        BuildOptions(workspace_mib=0)
    with pytest.raises(ConfigError, match="TensorRT module"):
        import_tensorrt("openvino")


def test_missing_tensorrt_is_a_typed_error():
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    with pytest.raises(EngineBuildError, match="'tensorrt' is not importable"):
        import_tensorrt("tensorrt")


def test_cache_key_differences_name_the_changed_fields():
    old = CacheKey("a" * 64, "10.3.0", "Orin", "int8", True)
    new = CacheKey("a" * 64, "10.7.0", "Orin", "int8", False)
    assert new.differences(old) == ["tensorrt_version: '10.3.0' -> '10.7.0'", "allow_fp16: True -> False"]
    assert old.differences(old) == []


def test_cli_reports_a_contract_error_with_exit_code_2(tiny_models, tmp_path, capsys):
    from bev_quant_ros.cli import main

    assert main(["build-engine", str(tiny_models[0]), "--cache-dir", str(tmp_path), "--gpu-name", "g"]) == 2
    assert "no Q/DQ nodes" in capsys.readouterr().out


@needs_rtx
def test_cli_builds_then_reuses(tiny_models, tmp_path, capsys):
    from bev_quant_ros.cli import main

    argv = ["build-engine", str(tiny_models[1]), "--cache-dir", str(tmp_path), "--trt-module", RTX,
            "--gpu-name", "g", "--workspace-mib", "64"]
    assert main(argv) == 0
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"built: {tmp_path}/tiny_int8.int8.engine" in out and f"cached: {tmp_path}/tiny_int8.int8.engine" in out


@needs_rtx
@pytest.mark.parametrize("stem", ["bev_v3", "bev_tiny"])
def test_shipped_tensorrt_default_models_build(stem):
    path = default_model_path("int8", "tensorrt", stem)  # bev_v3: the QAT student; bev_tiny: the PTQ model
    assert tensorrt_style(path) == (True, "symmetric int8, float bias")
    assert len(build_serialized_engine(import_tensorrt(RTX), path, BuildOptions(workspace_mib=256))) > 100_000
