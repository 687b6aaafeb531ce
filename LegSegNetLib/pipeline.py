"""Volume -> axial slices -> engine -> labels on the volume's own voxel grid.

Slices stream through the engine in small batches, so memory stays bounded by the output label map
plus one batch, whatever the scan size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .engines.base import SliceEngine
from .layout import SliceLayout, slice_layout
from .volume import Volume

# A slice whose brightest voxel is below this holds only air (and maybe noise): no body to segment.
BODY_MIN_HU = -300.0

ProgressCallback = Callable[[int, int], Optional[bool]]
"""Called as progress(slices_done, slices_total); returning False requests cancel."""


class Cancelled(Exception):
    """Raised when the progress callback asked to stop; no output was produced."""


class EmptyRangeError(ValueError):
    pass


@dataclass(frozen=True)
class SliceRange:
    """Half-open range of display slice indices [start, stop) to segment; None ends mean the volume's ends."""

    start: Optional[int] = None
    stop: Optional[int] = None

    def resolve(self, slice_count: int) -> range:
        start, stop, _ = slice(self.start, self.stop).indices(slice_count)
        if stop <= start:
            raise EmptyRangeError(
                f"the axial range {self.start}:{self.stop} selects no slice of a volume with {slice_count} slices"
            )
        return range(start, stop)


def slice_range_from_mm(volume: Volume, layout: SliceLayout, start_mm: float, stop_mm: float) -> SliceRange:
    """Slices whose centre lies between two superior-inferior positions (RAS S coordinate, mm, either order)."""
    positions = slice_positions_mm(volume, layout)
    low, high = sorted((start_mm, stop_mm))
    inside = np.flatnonzero((positions >= low - 1e-6) & (positions <= high + 1e-6))
    if inside.size == 0:
        raise EmptyRangeError(
            f"no slice centre lies between S = {low:g} and {high:g} mm; the volume spans "
            f"S = {positions.min():g} to {positions.max():g} mm"
        )
    return SliceRange(int(inside.min()), int(inside.max()) + 1)


def slice_positions_mm(volume: Volume, layout: SliceLayout) -> np.ndarray:
    """Superior-inferior (RAS S) coordinate of each display slice's centre."""
    count = volume.array.shape[layout.slice_axis]
    centre = (np.array(volume.array.shape, dtype=float) - 1) / 2
    kji = np.tile(centre, (count, 1))
    kji[:, layout.slice_axis] = np.arange(count)
    return volume.ras_of_index(kji)[:, 2]


def has_body(hu_slice: np.ndarray) -> bool:
    return bool(np.nanmax(hu_slice) >= BODY_MIN_HU)


def segment_volume(
    volume: Volume,
    engine: SliceEngine,
    slice_range: Optional[SliceRange] = None,
    progress: Optional[ProgressCallback] = None,
    batch_size: int = 8,
) -> Volume:
    """Label every axial slice of `volume` with `engine`; slices outside `slice_range` stay 0."""
    layout = slice_layout(volume, engine.in_plane_orientation)
    hu = layout.display_view(volume.array)
    labels = np.zeros(volume.array.shape, dtype=np.uint8)
    labels_view = layout.display_view(labels)
    indices = [index for index in (slice_range or SliceRange()).resolve(len(hu)) if has_body(hu[index])]
    pixel_spacing = (layout.spacing_row_mm, layout.spacing_column_mm)

    _report(progress, 0, len(indices))
    for start in range(0, len(indices), batch_size):
        batch = indices[start:start + batch_size]
        labels_view[batch] = engine.segment_slices(np.ascontiguousarray(hu[batch]), pixel_spacing)
        _report(progress, start + len(batch), len(indices))
    return volume.with_array(labels)


def _report(progress: Optional[ProgressCallback], done: int, total: int) -> None:
    if progress is not None and progress(done, total) is False:
        raise Cancelled(f"cancelled after {done} of {total} slices")
