"""The simulated acquisition rig and what it plays."""
