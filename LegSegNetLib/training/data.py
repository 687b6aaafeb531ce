"""An nnU-Net v2 raw dataset of 2D PNG slices, preprocessed as nnU-Net does, and its train/validation split."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from LegSegNetLib.segmenting.engines.nnunet.preprocessing import IntensityProperties
from LegSegNetLib.segmenting.engines.nnunet.preprocessing import nonzero_bbox, normalize
from LegSegNetLib.training.export import SOURCES_FILE

log = logging.getLogger(__name__)

NUM_FOLDS = 5
SPLIT_SEED = 12345


class DatasetError(ValueError):
    """The training dataset folder is missing, incomplete or not a 2D nnU-Net dataset."""


@dataclass
class RawDataset:
    folder: Path
    dataset_json: dict
    cases: list  # case identifiers, sorted
    images: list  # uint8 [rows, columns] per case
    labels: list  # uint8 [rows, columns] per case
    groups: list  # source scan of each case (slices of one scan stay on one side of the split)


def load_raw_dataset(folder) -> RawDataset:
    """Read dataset.json, imagesTr/CASE_0000.png and labelsTr/CASE.png of a single-channel 2D dataset."""
    folder = Path(folder)
    dataset_json = _read_dataset_json(folder)
    ending = dataset_json.get("file_ending", ".png")
    label_paths = sorted((folder / "labelsTr").glob(f"*{ending}"))
    if not label_paths:
        raise DatasetError(f"{folder / 'labelsTr'} holds no *{ending} label files: export training pairs first")
    cases = [path.name[: -len(ending)] for path in label_paths]
    images, labels = [], []
    for case, label_path in zip(cases, label_paths):
        image_path = folder / "imagesTr" / f"{case}_0000{ending}"
        if not image_path.is_file():
            raise DatasetError(f"{label_path.name} has no image {image_path}")
        image, label = _read_2d(image_path), _read_2d(label_path)
        if image.shape != label.shape:
            raise DatasetError(f"{case}: image {image.shape} and label {label.shape} differ in size")
        images.append(image)
        labels.append(label)
    _check_labels(labels, dataset_json, folder)
    return RawDataset(folder, dataset_json, cases, images, labels, _groups(folder, cases))


def _read_dataset_json(folder: Path) -> dict:
    path = folder / "dataset.json"
    if not path.is_file():
        raise DatasetError(f"{folder} is not an nnU-Net dataset: dataset.json is missing")
    dataset_json = json.loads(path.read_text(encoding="utf-8"))
    if len(dataset_json.get("channel_names", {})) != 1:
        raise DatasetError(f"{path}: only single-channel datasets are supported (channel_names)")
    return dataset_json


def _read_2d(path: Path) -> np.ndarray:
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    if array.ndim != 2:
        raise DatasetError(f"{path} is not a single-channel 2D image (array shape {array.shape})")
    return array


def _check_labels(labels: list, dataset_json: dict, folder: Path) -> None:
    allowed = set(int(value) for value in dataset_json["labels"].values())
    found = set(np.unique(np.concatenate([np.unique(label) for label in labels])).tolist())
    if not found <= allowed:
        raise DatasetError(f"labels in {folder} use values {sorted(found - allowed)} not declared in dataset.json")


def _groups(folder: Path, cases: list) -> list:
    sources_path = folder / SOURCES_FILE
    sources = json.loads(sources_path.read_text(encoding="utf-8")) if sources_path.is_file() else {}
    return [sources.get(case, {}).get("source", case) for case in cases]


def make_splits(cases: list, groups: list) -> list:
    """nnU-Net-style 5-fold splits [{'train': [...], 'val': [...]}]; slices of one source scan share a fold.

    With fewer than 5 sources the split falls back to individual cases (a warning is logged).
    """
    unique_groups = sorted(set(groups))
    if len(unique_groups) < NUM_FOLDS:
        log.warning("only %d source scans: splitting folds by slice, so validation slices have neighbours "
                    "in training and the validation Dice is optimistic", len(unique_groups))
        groups, unique_groups = list(cases), sorted(cases)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(unique_groups))
    fold_of_group = {unique_groups[index]: position % NUM_FOLDS for position, index in enumerate(order)}
    return [
        {
            "train": [case for case, group in zip(cases, groups) if fold_of_group[group] != fold],
            "val": [case for case, group in zip(cases, groups) if fold_of_group[group] == fold],
        }
        for fold in range(NUM_FOLDS)
    ]


def intensity_properties(plans: dict) -> IntensityProperties:
    properties = plans["foreground_intensity_properties_per_channel"]["0"]
    return IntensityProperties(*(float(properties[key]) for key in IntensityProperties.__dataclass_fields__))


@dataclass
class Preprocessed:
    image: np.ndarray  # float32 [rows, columns], cropped to the nonzero box and normalized
    label: np.ndarray  # uint8, same crop


def preprocess(image: np.ndarray, label: np.ndarray, configuration: dict, plans: dict) -> Preprocessed:
    """nnU-Net's preprocessing of one 2D slice: crop to the nonzero bounding box, then normalize."""
    box = nonzero_bbox(image)
    scheme = configuration["normalization_schemes"][0]
    intensity = intensity_properties(plans) if scheme == "CTNormalization" else None
    use_mask = bool(configuration.get("use_mask_for_norm", [False])[0])
    normalized = normalize(image[box].astype(np.float32), scheme, use_mask, intensity)
    return Preprocessed(normalized, label[box].astype(np.uint8))


def place_in_patch(sample: Preprocessed, patch_size, offset=None) -> tuple:
    """Pad (with 0, as nnU-Net does) or crop a slice to the patch size; offset None centres it.

    offset: (row, column) of the slice's top-left corner in the patch (negative crops)."""
    image = np.zeros(patch_size, dtype=np.float32)
    label = np.zeros(patch_size, dtype=np.uint8)
    if offset is None:
        offset = [(patch - size) // 2 for patch, size in zip(patch_size, sample.image.shape)]
    target, source = [], []
    for start, size, patch in zip(offset, sample.image.shape, patch_size):
        low, high = max(start, 0), min(start + size, patch)
        target.append(slice(low, high))
        source.append(slice(low - start, high - start))
    image[tuple(target)] = sample.image[tuple(source)]
    label[tuple(target)] = sample.label[tuple(source)]
    return image, label


def random_offset(shape, patch_size, rng: np.random.Generator) -> tuple:
    """A random top-left corner keeping the slice inside the patch (or the patch inside the slice)."""
    return tuple(int(rng.integers(min(0, patch - size), max(0, patch - size) + 1))
                 for size, patch in zip(shape, patch_size))
