"""What every engine offers the volume pipeline."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

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


@runtime_checkable
class PreparingSliceEngine(SliceEngine, Protocol):
    """An engine whose work splits into CPU preparation and the network, so the pipeline can prepare the
    next batch in a background thread while the current one is in the network.

    `segment_prepared(prepare_slices(hu, spacing))` must equal `segment_slices(hu, spacing)`.
    `prepare_slices` runs in another thread: it must not touch state that `segment_prepared` changes.
    """

    def prepare_slices(self, hu_slices: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> Any:
        ...

    def segment_prepared(self, prepared: Any) -> np.ndarray:
        ...
