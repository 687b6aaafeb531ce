"""Slice segmentation engines. Each turns axial HU slices into tissue labels on the same pixel grid."""
