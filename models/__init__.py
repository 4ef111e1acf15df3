"""PyTorch model families, training and ONNX export.

Training-time only: the daemon runs from exported ONNX files and never imports torch.
"""
