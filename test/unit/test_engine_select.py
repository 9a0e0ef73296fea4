"""Backend selection: `auto` falls back to ONNX Runtime here, with the reason."""

from __future__ import annotations

import logging

import pytest

from bev_quant_ros.engine.factory import (
    BackendUnavailableError,
    backend_options,
    create_engine,
    select_backend,
    supported_options,
    tensorrt_available,
)
from bev_quant_ros.engine.onnxruntime_backend import OnnxRuntimeEngine
from bev_quant_ros.errors import ConfigError


def test_auto_picks_onnxruntime_with_reason_where_tensorrt_cannot_run(tiny_models, caplog):
    ok, reason = tensorrt_available()
    if ok:
        pytest.skip(f"TensorRT runs on this machine ({reason}); the fallback is not observable")
    backend, why = select_backend("auto")
    assert backend == "onnxruntime"
    assert reason in why and "TensorRT unavailable" in why
    with caplog.at_level(logging.INFO, logger="bev_quant_ros.engine.factory"):
        engine = create_engine(tiny_models[0])
    assert isinstance(engine, OnnxRuntimeEngine)
    assert engine.describe().details["selection_reason"] == why
    assert "engine backend: onnxruntime" in caplog.text


def test_explicit_backend_is_kept():
    assert select_backend("tensorrt") == ("tensorrt", "backend 'tensorrt' requested")
    assert select_backend("onnxruntime")[0] == "onnxruntime"


def test_unknown_backend_is_a_config_error():
    with pytest.raises(ConfigError, match="openvino"):
        select_backend("openvino")


def test_option_for_another_backend(tiny_models):
    with pytest.raises(ConfigError, match="workspace_mib"):
        create_engine(tiny_models[0], backend="onnxruntime", workspace_mib=512)
    if tensorrt_available()[0]:
        pytest.skip("checked: an option of another backend is a ConfigError for an explicit backend; "
                    "not checked: auto dropping it (auto resolves to tensorrt here)")
    engine = create_engine(tiny_models[0], backend="auto", workspace_mib=512, intra_op_num_threads=1)
    assert engine.describe().details["intra_op_num_threads"] == "1"


def test_each_backend_declares_its_options_and_the_node_set_is_filtered_per_backend():
    assert "intra_op_num_threads" in backend_options("onnxruntime")
    assert "intra_op_num_threads" not in backend_options("tensorrt")
    assert "engine_cache_dir" in backend_options("tensorrt")
    node_options = {"intra_op_num_threads": 1}
    assert supported_options("onnxruntime", node_options) == node_options
    assert supported_options("tensorrt", node_options) == {}


def test_explicit_tensorrt_where_it_cannot_run_names_tensorrt(tiny_models):
    ok, reason = tensorrt_available()
    if ok:
        pytest.skip(f"TensorRT runs on this machine ({reason})")
    with pytest.raises(BackendUnavailableError, match="backend 'tensorrt' cannot run here") as info:
        create_engine(tiny_models[0], backend="tensorrt")
    assert reason in str(info.value)
