"""PyTorch model families, training and ONNX export (training-time only; the daemon never imports torch)."""
