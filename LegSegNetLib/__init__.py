"""LegSegNet lower-extremity CT tissue segmentation and measurements, free of Slicer and Qt."""

__version__ = "0.1.0"
