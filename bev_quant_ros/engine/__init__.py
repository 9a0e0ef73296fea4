"""Inference engines behind one interface (ONNX Runtime on CPU, TensorRT on Jetson)."""
