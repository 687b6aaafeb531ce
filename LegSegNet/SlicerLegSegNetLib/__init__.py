"""The Slicer side of LegSegNet: MRML logic, segment and table helpers, model management and the widget's texts.

Everything here needs the `slicer` MRML API (3D Slicer, or PyPI `slicer-core`) but no Qt, so it is tested
outside the application; LegSegNet.py's widget is a thin layer over it.
"""
