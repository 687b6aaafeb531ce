"""Slices to labels: the volume pipeline, the engines (nnU-Net and HU thresholds) and the one call that runs them."""
