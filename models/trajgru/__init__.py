"""Paper 003: TrajGRU encoder-forecasters (plain, Attention, ODE, Attention-ODE) that take
irregularly sampled input."""
