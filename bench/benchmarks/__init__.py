"""Measurements and stress runs of the daemon, the models and the bridge."""
