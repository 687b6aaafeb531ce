"""A plain reimplementation of nnU-Net v2 2D inference on torch + numpy + dynamic-network-architectures."""
