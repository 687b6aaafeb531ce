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
    """A Volume (uint8) of the tissue values {segment number: tissue value} of `segmentation`, 0 elsewhere. One
    segment is read at a time (all at once took 1.5 GB for 200 x 512 x 512 and four segments)."""
    labels, affine = None, None
    for number, value in tissue_values.items():
        volume = _segment_volume(segmentation, number, source)
        inside = volume.array[..., 0] >= FRACTIONAL_THRESHOLD  # binary SEGs hold 0 and 1
        if labels is None:
            labels, affine = np.zeros(inside.shape, np.uint8), volume.affine
            _check_slice_spacing(segmentation, affine, len(labels), source)
        if labels[inside].any():
            raise VolumeReadError(f"{source} has overlapping segments of the tissues compared; a label map holds one "
                                  "tissue per voxel, so remove the overlap (or export one label map) and compare that")
        labels[inside] = value
    return Volume(labels, LPS_TO_RAS @ affine @ _KJI_FROM_IJK)


def _segment_volume(segmentation, number: int, source: str):
    try:
        return segmentation.get_volume(segment_numbers=[number], combine_segments=False)
    except (ValueError, RuntimeError) as error:
        raise VolumeReadError(f"{source}: its frames do not form one evenly spaced volume ({error}); export it as a "
                              "label map on the CT's grid (Slicer: Export to files) and compare that") from error


def _check_slice_spacing(segmentation, affine: np.ndarray, slice_count: int, source: str) -> None:
    """Without SpacingBetweenSlices highdicom takes the frames' own spacing: a SEG of every fourth slice would read
    as thick slices and spread onto the slices between (one frame would read as 1 mm). Refused where the frames
    are fewer or further apart than the slices they come from."""
    spacing, thickness = _stated_pixel_measures(segmentation)
    if spacing is not None:
        return
    apart = float(np.linalg.norm(affine[:3, 0]))
    if slice_count == 1 or (thickness is not None and apart > 1.5 * thickness):
        layout = "has one frame" if slice_count == 1 else f"has frames {apart:.3g} mm apart, {thickness:.3g} mm thick,"
        raise VolumeReadError(
            f"{source} {layout} and does not state the spacing between its slices (SpacingBetweenSlices), so where "
            "its slices lie on the CT is unknown; export it as a label map on the CT's grid (Slicer: Export to "
            "files) and compare that")


def _stated_pixel_measures(segmentation) -> tuple:
    """(SpacingBetweenSlices, SliceThickness) in mm from the SEG's shared pixel measures, None where absent."""
    try:
        measures = segmentation.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    except (AttributeError, IndexError):
        return None, None
    return tuple(float(value) if value not in (None, "") else None
                 for value in (measures.get("SpacingBetweenSlices"), measures.get("SliceThickness")))
