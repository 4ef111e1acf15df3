"""Inference stage: predictors per backend and mode, the backend selector, the scheduler, and
what to feed a model for frames the stream never delivered."""
