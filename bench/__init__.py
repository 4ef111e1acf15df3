"""Session data and synthetic µECoG, the simulated rig, replay, the benchmarks and the demo."""
