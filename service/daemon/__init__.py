"""The daemon: wiring, lifecycle, supervision and the status document."""
