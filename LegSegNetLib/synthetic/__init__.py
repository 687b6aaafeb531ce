"""Synthetic leg CT with exact tissue truth, for tests, demos and self-checks."""
