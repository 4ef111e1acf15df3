"""Shared building blocks that import nothing else of the project: argument checks, background
workers, the electrode grid and channel map, gaps, scores, the settings base, the error root and
the command-line conventions."""
