"""Paper 001: MSPN, a predictive-coding multiscale network of encoder-decoder LSTMs."""
