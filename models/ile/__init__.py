"""Paper 004: ILE, an invertible flow per frame with linear latent dynamics."""
