"""What every engine offers the volume pipeline."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class SliceEngine(Protocol):
    """Segments batches of axial slices presented in the engine's declared in-plane orientation.

    `in_plane_orientation` (see layout.slice_layout) is a property of the engine/model: a model trained
    on slices displayed another way declares it, and the pipeline presents slices accordingly.
    """

    name: str
    in_plane_orientation: str

    def segment_slices(self, hu_slices: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> np.ndarray:
        """hu_slices: [n, rows, columns] Hounsfield units (any real dtype), display orientation.

        Returns uint8 labels [n, rows, columns] on the same grid (0 background, 1..4 see tissues.TISSUES).
        """
        ...
