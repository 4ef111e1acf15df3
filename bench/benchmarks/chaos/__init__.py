"""The chaos soak: daemon, rig and emulator under faults, audited apart."""
