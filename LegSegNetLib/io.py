"""Reading CT volumes (NIfTI, NRRD, MHA/MHD, DICOM series folders) and writing label maps, geometry kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .volume import LPS_TO_RAS, Volume


class VolumeReadError(ValueError):
    pass


def read_volume(path) -> Volume:
    """Read a scalar 3D volume from a file or a folder holding one DICOM series."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}")
    try:
        image = _read_dicom_series(path) if path.is_dir() else sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise VolumeReadError(f"cannot read {path}: {error_summary(error)}") from error
    return volume_from_sitk(image)


def _read_dicom_series(folder: Path) -> sitk.Image:
    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise VolumeReadError(f"no DICOM series found in folder {folder}")
    if len(series_ids) > 1:
        raise VolumeReadError(
            f"folder {folder} holds {len(series_ids)} DICOM series; put each series in its own folder"
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_ids[0]))
    return reader.Execute()


def volume_from_sitk(image: sitk.Image) -> Volume:
    ijk_to_lps = np.eye(4)
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    ijk_to_lps[:3, :3] = direction @ np.diag(image.GetSpacing())
    ijk_to_lps[:3, 3] = image.GetOrigin()
    return Volume(sitk.GetArrayFromImage(image), LPS_TO_RAS @ ijk_to_lps)


def sitk_from_volume(volume: Volume) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array))
    ijk_to_lps = LPS_TO_RAS @ volume.ijk_to_ras
    image.SetSpacing(tuple(float(s) for s in volume.spacing))
    image.SetDirection(tuple(float(d) for d in (ijk_to_lps[:3, :3] / volume.spacing).ravel()))
    image.SetOrigin(tuple(float(o) for o in ijk_to_lps[:3, 3]))
    return image


def write_volume(volume: Volume, path) -> None:
    """Write a volume (for example a label map) by extension: .nii.gz, .nii, .nrrd, .mha."""
    sitk.WriteImage(sitk_from_volume(volume), str(path), useCompression=True)


def error_summary(error: Exception) -> str:
    """The informative last line of an ITK error message (the lines before are the C++ location)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
