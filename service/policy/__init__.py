"""Stimulation policy: whether and when to ask for a pulse train, and its limits."""
