"""Synthetic µECoG, session files, the simulated rig and the benchmarks."""
