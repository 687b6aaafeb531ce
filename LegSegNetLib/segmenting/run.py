"""From a CT volume to labels and measurements in one call, shared by the command line and the Slicer module."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from LegSegNetLib.measuring.measurements import Measurements
from LegSegNetLib.measuring.sites import measure_with_anatomy
from LegSegNetLib.progress import ProgressCallback
from LegSegNetLib.reading.layout import slice_layout
from LegSegNetLib.reading.validation import check_voxel_array, validate_ct
from LegSegNetLib.reading.volume import Volume
from LegSegNetLib.segmenting.engines.base import SliceEngine
from LegSegNetLib.segmenting.pipeline import segment_volume
from LegSegNetLib.settings import MeasurementSettings, SegmentationSettings

log = logging.getLogger(__name__)

NOTHING_LABELLED = ("no voxel was labelled in any slice: the image shows no leg tissue the engine recognises "
                    "(noise, an empty field of view, or not a leg CT); every measurement is zero")


@dataclass(frozen=True)
class SegmentationResult:
    labels: Volume  # uint8, on the CT's own grid
    measurements: Measurements
    warnings: tuple  # messages about a suspicious input (see validation.validate_ct)


def run_segmentation(
    ct: Volume,
    engine: SliceEngine,
    settings: SegmentationSettings = SegmentationSettings(),
    progress: Optional[ProgressCallback] = None,
) -> SegmentationResult:
    """Validate `ct`, label the axial slices `settings` select with `engine` (built from the same settings)
    and measure the result. Raises validation.InputError for a volume that cannot be segmented,
    layout.EmptyRangeError for a range with no slice, progress.Cancelled."""
    check_voxel_array(ct)
    layout = slice_layout(ct)
    warnings = validate_ct(ct, layout)
    for warning in warnings:
        log.warning(warning)
    labels = segment_volume(ct, engine, settings.slices_to_segment(layout), progress)
    measurements = measure(ct, labels, settings.measurement, layout)
    if not labels.array.any():
        warnings.append(NOTHING_LABELLED)
        log.warning(NOTHING_LABELLED)
    return SegmentationResult(labels, measurements, tuple(warnings))


def measure(ct: Volume, labels: Volume, settings: MeasurementSettings, layout=None) -> Measurements:
    """Every measurement of a labelled CT, sites and regions included; the height given in the settings wins
    over the DICOM PatientSize the CT carries."""
    height, source = settings.height_m, "given"
    if height is None and ct.patient_height_m is not None:
        height, source = ct.patient_height_m, "DICOM PatientSize"
    return measure_with_anatomy(ct, labels, layout, settings, height, source if height else "")
