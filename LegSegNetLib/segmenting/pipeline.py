"""Volume -> axial slices -> engine -> labels on the volume's own voxel grid.

Slices stream through the engine in small batches, so memory stays bounded by the output label map
plus two batches, whatever the scan size. An engine that splits its work (engines.base.PreparingSliceEngine)
gets the next batch prepared in a background thread while the network works on the current one.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from typing import Iterator, Optional

import numpy as np

from LegSegNetLib.segmenting.engines.base import PreparingSliceEngine, SliceEngine
from LegSegNetLib.progress import ProgressCallback, report
from LegSegNetLib.reading.layout import SliceRange, slice_layout
from LegSegNetLib.segmenting.heap import freed_memory_kept
from LegSegNetLib.reading.volume import Volume

# A slice whose brightest voxel is below this holds only air (and maybe noise): no body to segment.
BODY_MIN_HU = -300.0

# Slices handed to an engine at a time when it states no preference of its own.
DEFAULT_BATCH_SIZE = 8


def has_body(hu_slice: np.ndarray) -> bool:
    return bool(np.nanmax(hu_slice) >= BODY_MIN_HU)


def segment_volume(
    volume: Volume,
    engine: SliceEngine,
    slice_range: Optional[SliceRange] = None,
    progress: Optional[ProgressCallback] = None,
    batch_size: Optional[int] = None,
) -> Volume:
    """Label every axial slice of `volume` with `engine`; slices outside `slice_range` stay 0.

    `batch_size` None takes the engine's own network batch (`preferred_batch_size`), so progress is reported
    and a cancel request is honoured after every network pass, not after several.
    """
    batch_size = batch_size or getattr(engine, "preferred_batch_size", DEFAULT_BATCH_SIZE)
    layout = slice_layout(volume, engine.in_plane_orientation)
    hu = layout.display_view(volume.array)
    labels = np.zeros(volume.array.shape, dtype=np.uint8)
    labels_view = layout.display_view(labels)
    indices = [index for index in (slice_range or SliceRange()).resolve(len(hu)) if has_body(hu[index])]
    pixel_spacing = (layout.spacing_row_mm, layout.spacing_column_mm)
    batches = [indices[start:start + batch_size] for start in range(0, len(indices), batch_size)]

    report(progress, 0, len(indices))
    done = 0
    with freed_memory_kept(), closing(_labelled_batches(engine, hu, batches, pixel_spacing)) as labelled:
        # closed on cancel too; batches reuse the memory the previous batch freed
        for batch, batch_labels in zip(batches, labelled):
            labels_view[batch] = batch_labels
            done += len(batch)
            report(progress, done, len(indices))
    return volume.with_array(labels)


def _labelled_batches(engine: SliceEngine, hu: np.ndarray, batches: list, pixel_spacing: tuple) -> Iterator:
    """Each batch's labels in turn. A preparing engine's next batch is prepared (read, converted, resized) in
    a background thread while its current batch is in the network; stopping early waits for at most that one."""
    if not isinstance(engine, PreparingSliceEngine):
        for batch in batches:
            yield engine.segment_slices(np.ascontiguousarray(hu[batch]), pixel_spacing)
        return

    def prepare(batch):
        return engine.prepare_slices(np.ascontiguousarray(hu[batch]), pixel_spacing)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="legsegnet-prepare") as pool:
        upcoming = pool.submit(prepare, batches[0]) if batches else None
        try:
            for number in range(len(batches)):
                prepared = upcoming.result()
                upcoming = pool.submit(prepare, batches[number + 1]) if number + 1 < len(batches) else None
                yield engine.segment_prepared(prepared)
        finally:
            if upcoming is not None:
                upcoming.cancel()  # a preparation already running is waited for when the pool closes
