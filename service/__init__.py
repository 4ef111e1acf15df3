"""corticast daemon: ingest, inference, wave estimation, stimulation policy and its APIs."""
