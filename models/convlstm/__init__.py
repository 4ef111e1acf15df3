"""Paper 000: ConvLSTM encoder-decoder-predictor generators for µECoG, and their adversary."""
