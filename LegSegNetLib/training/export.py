"""Training pairs from a CT and its (corrected) label map: NIfTI image/label pairs or an nnU-Net v2 raw dataset.

Slices are taken in the model's display orientation (`layout.slice_layout(...).display_view`), the way
LegSegNet sees them. The nnU-Net dataset holds LegSegNet's own 8-bit 256x256 slices (HU window, truncating
cast, bicubic resize; labels resized nearest-neighbour on the same pixel centres), so a model trained on it
takes exactly what the LegSegNet engine feeds at inference. Existing cases are never renumbered or overwritten:
new cases continue after the highest case number already in the dataset.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from LegSegNetLib.reading.volume_files import write_volume
from LegSegNetLib.reading.layout import RADIOLOGICAL, SliceLayout, slice_layout
from LegSegNetLib.segmenting.engines.nnunet.preprocessing import MODEL_SIZE, legsegnet_image
from LegSegNetLib.reading.layout import SliceRange
from LegSegNetLib.tissues import TISSUES
from LegSegNetLib.reading.volume import Volume
from LegSegNetLib.training.options import EXPORT_FORMATS as FORMATS
from LegSegNetLib.training.plans import IMAGE_FILE_ENDING, legsegnet_dataset_json, write_json
SOURCES_FILE = "legsegnet_cases.json"  # case -> source scan and slice; the trainer splits by source
_CASE_PATTERN = re.compile(r"^case_(\d+)(?:_0000)?\.png$")
_MAX_LABEL = max(tissue.value for tissue in TISSUES)


class ExportError(ValueError):
    """The inputs or the output folder do not allow the export; nothing was written."""


@dataclass
class ExportResult:
    slices: list  # display slice indices written
    files: list = field(default_factory=list)  # every file written
    skipped_empty: list = field(default_factory=list)  # selected slices left out: no tissue labelled


def export_training_pairs(
    ct: Volume,
    labels: Volume,
    out_dir,
    format: str = "nnunet",
    slice_range: Optional[SliceRange] = None,
    reference: Optional[Volume] = None,
    name: str = "scan",
    in_plane_orientation: str = RADIOLOGICAL,
) -> ExportResult:
    """Export the labelled axial slices of `ct` as training pairs into `out_dir`.

    slice_range: display slice indices [start, stop) (default all). reference: the original label map; when
    given, only slices where `labels` differs from it (the edited ones) are exported. Slices with no tissue
    labelled are skipped (they are usually slices nobody segmented).
    """
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    _check_same_grid(ct, labels, "label map")
    if reference is not None:
        _check_same_grid(ct, reference, "reference label map")
    _check_label_values(labels.array)
    layout = slice_layout(ct, in_plane_orientation)
    hu, label_view = layout.display_view(ct.array), layout.display_view(labels.array)
    reference_view = None if reference is None else layout.display_view(reference.array)
    candidates = select_slices(label_view, slice_range, reference_view)
    chosen = [index for index in candidates if label_view[index].any()]
    if not chosen:
        raise ExportError(
            f"none of the {len(candidates)} selected slices has any tissue labelled: nothing to export"
        )
    out_dir = Path(out_dir)
    writer = _write_nnunet if format == "nnunet" else _write_nifti
    result = ExportResult(slices=chosen, skipped_empty=sorted(set(candidates) - set(chosen)))
    result.files = writer(ct, layout, hu, label_view, chosen, out_dir, name)
    return result


def select_slices(label_view: np.ndarray, slice_range: Optional[SliceRange] = None,
                  reference_view: Optional[np.ndarray] = None) -> list:
    """Display slice indices in `slice_range` (default all), only those differing from `reference_view` if given."""
    indices = list((slice_range or SliceRange()).resolve(len(label_view)))
    if reference_view is None:
        return indices
    edited = [index for index in indices if not np.array_equal(label_view[index], reference_view[index])]
    if not edited:
        raise ExportError("no slice in the chosen range differs from the reference label map: nothing was edited")
    return edited


def _check_same_grid(ct: Volume, labels: Volume, what: str) -> None:
    if not ct.same_grid(labels):
        raise ExportError(
            f"the {what} (shape {labels.array.shape}) is not on the CT's voxel grid (shape {ct.array.shape}); "
            "export it from a segmentation made on this CT, or resample it to the CT first"
        )


def _check_label_values(array: np.ndarray) -> None:
    values = np.unique(array)
    unexpected = [int(value) for value in values if value < 0 or value > _MAX_LABEL or value != int(value)]
    if unexpected:
        raise ExportError(
            f"label map holds values {unexpected[:5]} outside 0..{_MAX_LABEL}; LegSegNet labels are "
            + ", ".join(f"{tissue.value} {tissue.key}" for tissue in TISSUES)
        )


# --- nnU-Net v2 raw dataset ---------------------------------------------------------------------------------

def _write_nnunet(ct, layout, hu, label_view, chosen, out_dir: Path, name: str) -> list:
    dataset_json = _existing_or_new_dataset_json(out_dir)
    images_dir, labels_dir = out_dir / "imagesTr", out_dir / "labelsTr"
    images_dir.mkdir(parents=True, exist_ok=True)
    labels_dir.mkdir(parents=True, exist_ok=True)
    sources = _read_json(out_dir / SOURCES_FILE) if (out_dir / SOURCES_FILE).is_file() else {}
    first = next_case_number(out_dir)
    written = []
    for case_number, index in enumerate(chosen, start=first):
        case = f"case_{case_number:04d}"
        image_path, label_path = images_dir / f"{case}_0000{IMAGE_FILE_ENDING}", labels_dir / f"{case}{IMAGE_FILE_ENDING}"
        _write_png(legsegnet_image(hu[index]), image_path)
        _write_png(resize_labels_nearest(label_view[index]), label_path)
        sources[case] = {"source": name, "slice": int(index)}
        written += [image_path, label_path]
    dataset_json["numTraining"] = len(list(labels_dir.glob(f"case_*{IMAGE_FILE_ENDING}")))
    write_json(out_dir / "dataset.json", dataset_json)
    write_json(out_dir / SOURCES_FILE, sources)
    return written


def next_case_number(dataset_dir) -> int:
    """One past the highest case number in imagesTr/ or labelsTr/ (0 for a new dataset)."""
    numbers = [
        int(match.group(1))
        for folder in ("imagesTr", "labelsTr")
        for path in (Path(dataset_dir) / folder).glob("case_*")
        if (match := _CASE_PATTERN.match(path.name))
    ]
    return max(numbers, default=-1) + 1


def _existing_or_new_dataset_json(out_dir: Path) -> dict:
    wanted = legsegnet_dataset_json()
    path = out_dir / "dataset.json"
    if not path.is_file():
        if out_dir.is_dir() and any(out_dir.iterdir()):
            raise ExportError(
                f"{out_dir} is not empty and has no dataset.json: give a new folder or an existing LegSegNet dataset"
            )
        return wanted
    existing = _read_json(path)
    for key in ("channel_names", "labels", "file_ending"):
        if existing.get(key) != wanted[key]:
            raise ExportError(
                f"{path} has {key} {existing.get(key)!r}, LegSegNet slices need {wanted[key]!r}: "
                "export into a new folder instead"
            )
    return existing


def resize_labels_nearest(labels: np.ndarray, size: tuple = MODEL_SIZE) -> np.ndarray:
    """Nearest-neighbour resize that samples the same pixel centres the bicubic image resize uses."""
    rows = _nearest_source(labels.shape[0], size[0])
    columns = _nearest_source(labels.shape[1], size[1])
    return np.ascontiguousarray(labels[np.ix_(rows, columns)], dtype=np.uint8)


def _nearest_source(size_in: int, size_out: int) -> np.ndarray:
    return np.minimum(((np.arange(size_out) + 0.5) * (size_in / size_out)).astype(np.int64), size_in - 1)


def _write_png(array: np.ndarray, path: Path) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.uint8)), str(path))


# --- NIfTI image/label pairs --------------------------------------------------------------------------------

def _write_nifti(ct, layout, hu, label_view, chosen, out_dir: Path, name: str) -> list:
    pairs = [(out_dir / f"{name}-{index:04d}-image.nii.gz", out_dir / f"{name}-{index:04d}-label.nii.gz")
             for index in chosen]
    clashes = [path.name for pair in pairs for path in pair if path.exists()]
    if clashes:
        raise ExportError(
            f"{len(clashes)} files already exist in {out_dir} (for example {clashes[0]}); "
            "give another --name or output folder"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    for index, (image_path, label_path) in zip(chosen, pairs):
        ijk_to_ras = display_slice_geometry(ct, layout, index)
        write_volume(Volume(np.ascontiguousarray(hu[index])[None], ijk_to_ras), image_path)
        write_volume(Volume(np.ascontiguousarray(label_view[index], dtype=np.uint8)[None], ijk_to_ras), label_path)
    return [path for pair in pairs for path in pair]


def display_slice_geometry(volume: Volume, layout: SliceLayout, index: int) -> np.ndarray:
    """IJK-to-RAS of display slice `index` stored as a one-slice volume [1, row, column] (i = column, j = row)."""
    shape = volume.array.shape
    origin, row_step, column_step, slice_step = volume.ras_of_index([
        _display_to_kji(layout, shape, index, 0, 0),
        _display_to_kji(layout, shape, index, 1, 0),
        _display_to_kji(layout, shape, index, 0, 1),
        _display_to_kji(layout, shape, index + 1, 0, 0),
    ])
    matrix = np.eye(4)
    matrix[:3, 0], matrix[:3, 1], matrix[:3, 2] = column_step - origin, row_step - origin, slice_step - origin
    matrix[:3, 3] = origin
    return matrix


def _display_to_kji(layout: SliceLayout, shape, slice_index: int, row: int, column: int) -> list:
    kji = [0, 0, 0]
    kji[layout.slice_axis] = slice_index
    kji[layout.row_axis] = shape[layout.row_axis] - 1 - row if layout.flip_rows else row
    kji[layout.column_axis] = shape[layout.column_axis] - 1 - column if layout.flip_columns else column
    return kji


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ExportError(f"{path} is not valid JSON ({error}); fix or remove it") from error
