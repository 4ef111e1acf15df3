"""PyTorch model families, training, ONNX export, and the evaluation of trained models.

Training-time only: the daemon runs from exported ONNX files and never imports torch. Scoring an
exported model (``models.evaluation``, ``models.loading``, ``models.windows``) needs no torch
either.
"""
