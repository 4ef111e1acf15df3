"""Session data: frames, ground truth, test pattern, synthesis, files; never imports `models`."""
