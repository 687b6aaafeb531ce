"""Reading CT volumes (NIfTI, NRRD, MHA/MHD, DICOM series folders) and writing label maps, geometry kept."""

from __future__ import annotations

import gzip
import struct
import zlib
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
        _check_nifti_complete(path)
    except RuntimeError as error:
        raise VolumeReadError(f"cannot read {path}: {error_summary(error)}") from error
    _check_scalar_3d(image, path)
    return volume_from_sitk(image)


def _check_scalar_3d(image: sitk.Image, path: Path) -> None:
    """Refuse what cannot be a CT volume before its geometry is interpreted."""
    if image.GetDimension() == 2:
        raise VolumeReadError(
            f"{path} is a 2D image; a 3D CT volume is needed (store a single axial slice as a volume of one slice)"
        )
    if image.GetDimension() != 3:
        raise VolumeReadError(
            f"{path} is a {image.GetDimension()}D image (a time series or several volumes); export the one CT volume"
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeReadError(
            f"{path} has {image.GetNumberOfComponentsPerPixel()} values per voxel (a colour or vector image); "
            "a CT in Hounsfield units has one"
        )


def is_dicom_series_folder(path) -> bool:
    """Whether a folder directly holds the files of at least one DICOM series."""
    return Path(path).is_dir() and bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path)))


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


def _check_nifti_complete(path: Path) -> None:
    """ITK fills the missing part of a truncated NIfTI file with zeros and says nothing: compare the data
    length the header announces with what the file holds."""
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return
    opener = gzip.open if name.endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            expected = _nifti_byte_count(stream.read(540))
            available = 540 + sum(len(chunk) for chunk in iter(lambda: stream.read(1 << 22), b""))
    except (OSError, EOFError, zlib.error) as error:
        raise VolumeReadError(f"cannot read {path}: the file is damaged or truncated ({error})") from error
    if expected is not None and available < expected:
        raise VolumeReadError(
            f"cannot read {path}: the file is truncated ({available} of {expected} bytes); copy it again"
        )


def _nifti_byte_count(header: bytes):
    """Header plus voxel data length announced by a NIfTI-1 or NIfTI-2 header; None if unrecognised."""
    for order in "<>":
        size = struct.unpack_from(order + "i", header)[0] if len(header) >= 4 else None
        if size == 348 and len(header) >= 348:
            dims = struct.unpack_from(order + "8h", header, 40)
            bitpix = struct.unpack_from(order + "h", header, 72)[0]
            offset = int(struct.unpack_from(order + "f", header, 108)[0])
        elif size == 540 and len(header) >= 540:
            bitpix = struct.unpack_from(order + "h", header, 14)[0]
            dims = struct.unpack_from(order + "8q", header, 16)
            offset = struct.unpack_from(order + "q", header, 168)[0]
        else:
            continue
        voxels = int(np.prod([max(int(d), 1) for d in dims[1:1 + max(int(dims[0]), 0)]]))
        return max(offset, size) + voxels * bitpix // 8
    return None


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
