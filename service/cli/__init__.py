"""The `corticast` command line."""
