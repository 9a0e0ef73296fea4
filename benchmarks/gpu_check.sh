#!/usr/bin/env bash
# GPU check of the TensorRT backend: run on a machine with an NVIDIA GPU, its driver,
# TensorRT (python `tensorrt`) and pycuda (+ cuda-python for the CUDA-graph path), e.g. a Jetson
# with JetPack. Runs the TensorRT engine tests (build, cache, runtime vs ONNX Runtime, CUDA graph)
# and a latency run, and prints the results. Nothing here can run on the CPU-only dev machines.
#
#   PYTHON=/path/to/python bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

echo "== GPU and TensorRT =="
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
  || echo "nvidia-smi not found (Jetson: use tegrastats)"
"$PYTHON" - <<'PY'
import sys
from bev_quant_ros.engine.factory import tensorrt_available
ok, reason = tensorrt_available()
print(("OK: " if ok else "NOT AVAILABLE: ") + reason)
if ok:
    import tensorrt, pycuda
    print("tensorrt", tensorrt.__version__, "pycuda", pycuda.VERSION_TEXT)
sys.exit(0 if ok else 3)
PY

echo "== TensorRT tests =="
"$PYTHON" -m pytest test/unit/test_engine_tensorrt.py test/unit/test_engine_build.py -v -rs

echo "== latency run (tiny bench graph; ONNX Runtime CPU vs TensorRT, plain and CUDA graph) =="
"$PYTHON" benchmarks/bench_engine_overhead.py --tensorrt --frames 300
