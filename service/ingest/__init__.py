"""Ingest stage: LSL inlet -> channel map -> gap handling -> ring buffer."""
