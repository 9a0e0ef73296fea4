"""PyTorch reference network, training and ONNX export (optional extra: torch)."""
