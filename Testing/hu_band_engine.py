"""A test engine with a known answer: the field's fixed HU bands, slice by slice (test-only)."""

import numpy as np

from LegSegNetLib.tissues import TISSUE_BY_KEY


class HUBandEngine:
    """Fat -190..-30 HU as SAT, muscle -29..150 HU as SM, bone above; no IMAT."""

    name = "hu-bands"
    in_plane_orientation = "PL"

    def segment_slices(self, hu_slices, pixel_spacing_mm):
        labels = np.zeros(hu_slices.shape, dtype=np.uint8)
        labels[(hu_slices >= -190) & (hu_slices <= -30)] = TISSUE_BY_KEY["SAT"].value
        labels[(hu_slices >= -29) & (hu_slices <= 150)] = TISSUE_BY_KEY["SM"].value
        labels[hu_slices > 150] = TISSUE_BY_KEY["Bone"].value
        return labels
