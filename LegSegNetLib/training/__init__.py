"""Training LegSegNet-compatible 2D nnU-Net v2 models: export training pairs, plans, trainer."""
