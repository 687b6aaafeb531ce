"""Reading a DICOM SEG (a segmentation another tool or a PACS AI product made) as tissue labels, with highdicom.

Segments are matched to tissues by label_files (by SegmentLabel, as .seg.nrrd segments are by name); a segment
whose SegmentLabel names no tissue may still be one by its coded SegmentedPropertyType (`tissue_key_of_code`).
Only the matched segments are read: they must not overlap (a label map has one tissue per voxel), and a
FRACTIONAL SEG counts a voxel as in a segment from 0.5 on, the DICOM convention for a binary reading.

Geometry: highdicom's volume maps (slice, row, column) indices to LPS millimetres and spans the frames the SEG
holds, sorted along the slice normal, from the first to the last (frames omitted in between, being empty, read as
background). So a SEG of a few slices of a CT lands on those slices; voxels outside it are background.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

import numpy as np

from LegSegNetLib.reading.volume import LPS_TO_RAS, Volume
from LegSegNetLib.reading.volume_files import VolumeReadError
from LegSegNetLib.tissues import TISSUES

FRACTIONAL_THRESHOLD = 0.5
_KJI_FROM_IJK = np.eye(4)[[2, 1, 0, 3]]  # (i, j, k, 1) -> (k, j, i, 1): highdicom indexes (slice, row, column)


def read_dicom_seg(path: Path):
    """The highdicom Segmentation of a DICOM SEG file; VolumeReadError when it is not one or highdicom is missing."""
    if importlib.util.find_spec("highdicom") is None:
        raise VolumeReadError(f"reading the DICOM SEG {path} needs the Python package highdicom: pip install -c "
                              "requirements/constraints.txt \"legsegnet-slicer[validate]\"")
    import highdicom

    try:
        return highdicom.seg.segread(path)
    except Exception as error:  # pydicom and highdicom raise many kinds on a file that is no SEG
        raise VolumeReadError(f"cannot read {path} as a DICOM SEG ({error}); give the SEG file (Modality SEG) or "
                              "a label map") from error


def dicom_segments(segmentation) -> list:
    """[(segment number, SegmentLabel, (coding scheme, code value) of its SegmentedPropertyType)]."""
    segments = []
    for number in segmentation.segment_numbers:
        description = segmentation.get_segment_description(number)
        code = description.segmented_property_type
        segments.append((number, description.segment_label, (code.scheme_designator, code.value)))
    return segments


def tissue_key_of_code(code: tuple) -> Optional[str]:
    """The tissue a SegmentedPropertyType code stands for, where the code alone says which one (not the plain
    Fat code that intermuscular fat shares with any fat) or None."""
    matches = [tissue for tissue in TISSUES if tissue.type[:2] == tuple(code) and tissue.region is None]
    return matches[0].key if len(matches) == 1 else None


def dicom_seg_labels(segmentation, tissue_values: dict, source: str) -> Volume:
    """A Volume (uint8) of the tissue values {segment number: tissue value} of `segmentation`, 0 elsewhere."""
    numbers = list(tissue_values)
    try:
        volume = segmentation.get_volume(segment_numbers=numbers, combine_segments=False)
    except (ValueError, RuntimeError) as error:
        raise VolumeReadError(f"{source}: its frames do not form one evenly spaced volume ({error})") from error
    masks = volume.array >= FRACTIONAL_THRESHOLD  # [slice, row, column, segment]; binary SEGs hold 0 and 1
    if (masks.sum(axis=-1, dtype=np.uint8) > 1).any():
        raise VolumeReadError(f"{source} has overlapping segments of the tissues compared; a label map holds one "
                              "tissue per voxel, so remove the overlap (or export one label map) and compare that")
    lookup = np.array([0] + [tissue_values[number] for number in numbers], dtype=np.uint8)
    labels = lookup[np.where(masks.any(axis=-1), masks.argmax(axis=-1) + 1, 0)]
    return Volume(labels, LPS_TO_RAS @ volume.affine @ _KJI_FROM_IJK)
