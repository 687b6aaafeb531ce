"""From a CT volume to labels and measurements in one call, shared by the command line and the Slicer module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from LegSegNetLib.measuring.label_measurements import CT, FatWater, measure_labels
from LegSegNetLib.measuring.measurements import Measurements
from LegSegNetLib.progress import ProgressCallback
from LegSegNetLib.reading.layout import slice_layout
from LegSegNetLib.reading.validation import check_voxel_array, validate_ct
from LegSegNetLib.reading.volume import Volume
from LegSegNetLib.segmenting.engines.base import SliceEngine
from LegSegNetLib.segmenting.pipeline import segment_volume
from LegSegNetLib.settings import MeasurementSettings, SegmentationSettings
from LegSegNetLib.tissues import LEGSEGNET_LABELS, LabelSet

SITES_NEED_LEGSEGNET_TISSUES = ("the sites, muscle bands and height options were not used: landmark sites are "
                                "found from LegSegNet's four tissues, and this model labels others")
NOTHING_LABELLED = ("no voxel was labelled in any slice: the image shows no leg tissue the engine recognises "
                    "(noise, an empty field of view, or not a leg CT); every measurement is zero")


@dataclass(frozen=True)
class SegmentationResult:
    labels: Volume  # uint8, on the CT's own grid
    measurements: Measurements
    warnings: tuple  # messages about a suspicious input (see validation.validate_ct)
    label_set: LabelSet = LEGSEGNET_LABELS  # what the label values mean (the engine's model's labels)
    modality: str = CT  # CT, or MR for a model of another image (no Hounsfield units)


def run_segmentation(
    ct: Volume,
    engine: SliceEngine,
    settings: SegmentationSettings = SegmentationSettings(),
    progress: Optional[ProgressCallback] = None,
    fat_water: Optional[FatWater] = None,
    labels_ready: Optional[Callable[[Volume, LabelSet], None]] = None,
) -> SegmentationResult:
    """Validate `ct`, label the axial slices `settings` select with `engine` (built from the same settings)
    and measure the result; the warnings about a doubtful input or result are in the result (the caller shows
    them, naming the input). Raises validation.InputError for a volume that cannot be segmented,
    layout.EmptyRangeError for a range with no slice, progress.Cancelled. `fat_water`: Dixon images of an MR
    input, for fat fractions and IMAT (see measuring.label_measurements). `labels_ready(labels, label_set)` is
    called before they are measured (the command line starts writing them then)."""
    check_voxel_array(ct)
    layout = slice_layout(ct)
    modality = getattr(engine, "modality", CT)
    warnings = validate_ct(ct, layout, hounsfield=modality == CT)
    labels = segment_volume(ct, engine, settings.slices_to_segment(layout), progress)
    label_set = getattr(engine, "label_set", LEGSEGNET_LABELS)
    if labels_ready is not None:
        labels_ready(labels, label_set)
    measurements = measure_labels(ct, labels, label_set, modality, fat_water, layout, settings.measurement)
    if not labels.array.any():
        warnings.append(NOTHING_LABELLED)
    if settings.measurement != MeasurementSettings() and not label_set.is_legsegnet_tissues:
        warnings.append(SITES_NEED_LEGSEGNET_TISSUES)
    return SegmentationResult(labels, measurements, tuple(warnings), label_set, modality)
