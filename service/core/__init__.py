"""Shared building blocks that import nothing else of the project: argument checks, background
workers, the electrode grid, gaps, scores and the error root."""
