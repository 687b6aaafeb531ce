"""Reading label maps made elsewhere (a manual reference, another tool) as LegSegNet tissue labels.

A `LabelSet` says which tissues are compared and which value each has in plain label-map files (NIfTI, NRRD,
MHA): by default LegSegNet's own numbering (SAT 1, SM 2, IMAT 3, Bone 4). In a Slicer `.seg.nrrd` each segment
carries its own label value, so segments are matched to tissues by ID or name instead (the tissue key or name,
any case: "SM", "Skeletal muscle"), whatever values the file uses; so are the segments of a DICOM SEG, by
SegmentLabel (or coded type, reading.dicom_seg). The labels read are always renumbered to the
tissue values of LegSegNetLib.tissues, so every measurement applies to them. Values (or segments) outside the
label set count as background, with a note saying so: a reference may hold structures the tool does not label.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from LegSegNetLib.reading.dicom_seg import dicom_seg_labels, dicom_segments, read_dicom_seg, tissue_key_of_code
from LegSegNetLib.reading.volume import Volume
from LegSegNetLib.reading.volume_files import VolumeReadError, error_summary, is_dicom_file, read_volume
from LegSegNetLib.tissues import TISSUE_BY_KEY, TISSUES
from LegSegNetLib.writing.outputs import extension_of


@dataclass(frozen=True)
class LabelSet:
    """The tissues compared, each with its value in plain label-map files: ((tissue key, file value), ...)."""

    values: tuple

    @property
    def keys(self) -> tuple:
        return tuple(key for key, _ in self.values)

    def describe(self) -> str:
        return ",".join(f"{key}={value}" for key, value in self.values)


DEFAULT_LABEL_SET = LabelSet(tuple((tissue.key, tissue.value) for tissue in TISSUES))
LABEL_SET_HELP = f"KEY=VALUE pairs, e.g. {DEFAULT_LABEL_SET.describe()} (the default)"


def parse_label_set(text: str) -> LabelSet:
    """'SM=2,Bone=4' -> LabelSet; keys are tissue keys (LegSegNetLib.tissues), values whole numbers 1..255."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        tissue = _tissue_key(key.strip())
        if tissue is None or not value.strip().isdigit() or not 1 <= int(value) <= 255:
            raise ValueError(f"--labels takes {LABEL_SET_HELP}; tissue keys are {', '.join(TISSUE_BY_KEY)}, "
                             f"values 1..255 (not {item!r})")
        pairs.append((tissue, int(value)))
    keys, values = [key for key, _ in pairs], [value for _, value in pairs]
    if not pairs or len(set(keys)) < len(keys) or len(set(values)) < len(values):
        raise ValueError(f"--labels needs each tissue and each value at most once: {LABEL_SET_HELP}")
    return LabelSet(tuple(pairs))


def tissue_key_of_segment(segment_id: str, name: str) -> Optional[str]:
    """The tissue a segment stands for, by its ID or name (tissue key or name, any case), or None."""
    return _tissue_key(segment_id) or _tissue_key(name)


def _tissue_key(text: str) -> Optional[str]:
    wanted = text.strip().lower()
    return next((tissue.key for tissue in TISSUES if wanted in (tissue.key.lower(), tissue.name.lower())), None)


@dataclass(frozen=True)
class LabelMap:
    labels: Volume  # uint8 tissue values (LegSegNetLib.tissues) of the label set's tissues, 0 elsewhere
    notes: tuple  # what was left out (values or segments outside the label set)


def read_label_map(path, label_set: LabelSet = DEFAULT_LABEL_SET) -> LabelMap:
    """Read a label map (.nii.gz .nii .nrrd .mha .mhd, Slicer .seg.nrrd or a DICOM SEG) as tissue labels of
    `label_set`."""
    path = Path(path)
    if path.is_file() and is_dicom_file(path):
        return _read_dicom_seg(path, label_set)
    if extension_of(path) != ".seg.nrrd":
        return tissue_labels(read_volume(path), label_set, str(path))
    values, notes = _segment_values(path, label_set)
    read = tissue_labels(read_volume(path), LabelSet(tuple((key, value) for value, key in values.items())),
                         str(path))
    return LabelMap(read.labels, tuple(notes))  # values outside: those of the segments noted


def _read_dicom_seg(path: Path, label_set: LabelSet) -> LabelMap:
    segmentation = read_dicom_seg(path)
    keys, notes = _match_segments(path, [
        (number, tissue_key_of_segment(label, label) or tissue_key_of_code(code), label)
        for number, label, code in dicom_segments(segmentation)], label_set)
    tissue_values = {number: TISSUE_BY_KEY[key].value for number, key in keys.items()}
    return LabelMap(dicom_seg_labels(segmentation, tissue_values, str(path)), tuple(notes))


def tissue_labels(volume: Volume, label_set: LabelSet = DEFAULT_LABEL_SET, source: str = "the label map") -> LabelMap:
    """Renumber a label map's values (`label_set`'s file values) to tissue values; other values become 0."""
    array = volume.array
    if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
        raise VolumeReadError(f"{source} holds fractional values: a label map holds whole-number labels")
    present = np.unique(array)
    if present.size and present.min() < 0:
        raise VolumeReadError(f"{source} holds negative values: a label map holds labels 0..255")
    file_values = {value: key for key, value in label_set.values}
    outside = [int(value) for value in present if value != 0 and int(value) not in file_values]
    notes = [f"label values {outside} are not in the label set ({label_set.describe()}): counted as background "
             "(give --labels to compare them)"] if outside else []
    lookup = np.zeros(int(max(present.max(initial=0), max(file_values))) + 1, dtype=np.uint8)
    for value, key in file_values.items():
        lookup[value] = TISSUE_BY_KEY[key].value
    index = array if array.dtype.kind in "iu" else array.astype(np.intp)
    return LabelMap(volume.with_array(lookup[index]), tuple(notes))


def _segment_values(path: Path, label_set: LabelSet) -> tuple:
    """{file label value: tissue key} of the segments of a .seg.nrrd in the label set, and notes on the rest."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise VolumeReadError(f"cannot read {path}: {error_summary(error)}") from error
    fields = {key: reader.GetMetaData(key) for key in reader.GetMetaDataKeys()}
    segments = sorted({key.split("_", 1)[0] for key in fields if key.startswith("Segment") and key[7:8].isdigit()})
    layers = {fields.get(f"{segment}_Layer", "0") for segment in segments}
    if len(layers) > 1:
        raise VolumeReadError(
            f"{path} keeps its segments in {len(layers)} layers (they overlap); export them as one label map "
            "(Segmentations module: Export to files, or collapse the layers) and compare that")
    return _match_segments(path, [
        (int(fields.get(f"{segment}_LabelValue", "1")),
         tissue_key_of_segment(fields.get(f"{segment}_ID", ""), fields.get(f"{segment}_Name", "")),
         fields.get(f"{segment}_Name", "") or fields.get(f"{segment}_ID", "")) for segment in segments], label_set)


def _match_segments(path: Path, segments: list, label_set: LabelSet) -> tuple:
    """{segment value: tissue key} of `segments` [(value, tissue key or None, name)] in the label set, and notes
    on those that are no tissue."""
    values, notes = {}, []
    for value, key, name in segments:
        if key in label_set.keys:
            if key in values.values():
                raise VolumeReadError(f"{path} has two segments for {key}; merge them in Segment Editor first")
            values[value] = key
        elif key is None:  # a tissue left out of --labels is left out on purpose
            notes.append(f"segment {name!r} is not a tissue of the label set ({', '.join(label_set.keys)}): "
                         "not compared")
    if not values:
        raise VolumeReadError(f"no segment of {path} is named after a tissue of the label set "
                              f"({', '.join(label_set.keys)}); name the segments (e.g. 'Skeletal muscle' or 'SM')")
    return values, notes
