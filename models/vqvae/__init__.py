"""Paper 002: S-HR-VQVAE, a hierarchical residual VQ-VAE with a spatiotemporal PixelCNN."""
