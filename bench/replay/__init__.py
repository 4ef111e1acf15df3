"""Replay of a recorded or generated session through the closed loop, and its report."""
