"""Reading CT volumes (NIfTI, NRRD, MHA/MHD, DICOM series folders) and writing label maps, geometry kept."""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import os
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from LegSegNetLib.reading.volume import LPS_TO_RAS, Volume


READABLE_TYPES = ".nii.gz, .nii, .nrrd, .mha, .mhd, or the folder of a DICOM series"
# The largest volume read, checked on the header before any voxel is: 8192 slices of 512 x 512.
MAX_VOXELS = 2 ** 31
# Memory a read needs per voxel beyond the stored value itself: the int16 array the Volume keeps and the uint8
# label map made from it.
EXTRA_BYTES_PER_VOXEL = 3


log = logging.getLogger(__name__)


class VolumeReadError(ValueError):
    pass


def read_volume(path) -> Volume:
    """Read a scalar 3D volume from a file or a folder holding one DICOM series."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}")
    try:
        if path.is_dir():
            image = _read_dicom_series(path)
        else:
            _refuse_oversized(_header_of(str(path)), path)
            _check_nifti_file(path)
            image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        if "Unable to determine ImageIO reader" in str(error):
            raise VolumeReadError(f"cannot read {path}: not an image file type LegSegNet reads ({READABLE_TYPES})") \
                from error
        raise VolumeReadError(f"cannot read {path}: {error_summary(error)}") from error
    _check_scalar_3d(image, path)
    if path.is_file() and image.GetDepth() == 1:
        _warn_if_one_file_of_a_series(path)
    volume = volume_from_sitk(image)
    volume.patient_height_m = _patient_height_m(image, path)
    return volume


PATIENT_SIZE_TAG = "0010|1020"  # DICOM Patient's Size: height in metres


def _patient_height_m(image: sitk.Image, path: Path) -> Optional[float]:
    """The DICOM PatientSize of a series or file (patient_height_from_dicom)."""
    if not image.HasMetaDataKey(PATIENT_SIZE_TAG):
        return None
    return patient_height_from_dicom(image.GetMetaData(PATIENT_SIZE_TAG), str(path))


def patient_height_from_dicom(patient_size: Optional[str], source: str) -> Optional[float]:
    """The height in metres a DICOM PatientSize value (a decimal string, metres) gives, or None: absent, empty or
    0 mean unknown; a value that is no number or no plausible height (0.5 to 2.6 m; say, centimetres) is not
    used, with a warning naming `source`, as it would scale the height-normalised indexes wrongly."""
    text = (patient_size or "").strip()
    try:
        height = float(text or 0)
    except ValueError:
        height = math.nan
    if height == 0:
        return None
    if not 0.5 <= height <= 2.6:
        log.warning("%s: the DICOM PatientSize %r is not a height in metres (0.5 to 2.6), so the height-normalised "
                    "indexes are left empty; give the patient's height to have them", source, text)
        return None
    return height


def _header_of(file_name: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(file_name)
    reader.ReadImageInformation()  # the header only: no voxel is read
    return reader


def _refuse_oversized(header: sitk.ImageFileReader, path: Path, slice_count: Optional[int] = None) -> None:
    """Refuse, from the header alone, a volume larger than MAX_VOXELS or than the memory available to read it
    (a damaged or hostile header can claim any size). `slice_count`: the files of a DICOM series."""
    size = list(header.GetSize())
    if slice_count is not None:
        size = size[:2] + [slice_count]
    voxels = math.prod(size)
    if voxels > MAX_VOXELS:
        raise VolumeReadError(f"{path} declares {' x '.join(map(str, size))} voxels, more than the {MAX_VOXELS:,} "
                              "LegSegNet reads (8192 slices of 512 x 512); crop the volume to the legs or split it")
    stored = sitk.Image([1, 1], header.GetPixelID(), header.GetNumberOfComponents())
    needed = voxels * (stored.GetSizeOfPixelComponent() * header.GetNumberOfComponents() + EXTRA_BYTES_PER_VOXEL)
    available = available_memory_bytes()
    if available is not None and needed > available:
        raise VolumeReadError(f"{path} ({' x '.join(map(str, size))} voxels) needs about {needed / 1e9:.1f} GB of "
                              f"memory to read, and {available / 1e9:.1f} GB are available; crop the volume or "
                              "close other programs")


def available_memory_bytes() -> Optional[int]:
    """Memory the system can give without swapping (Linux: MemAvailable; elsewhere free pages; None if unknown)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _warn_if_one_file_of_a_series(path: Path) -> None:
    """A single slice can be what was meant (single-slice body composition), but one file picked out of a
    DICOM series usually means the series' folder was meant."""
    if not is_dicom_file(path):
        return
    for series_id in _dicom_series_ids(path.parent):
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path.parent), series_id)
        if len(files) > 1 and path.resolve() in {Path(name).resolve() for name in files}:
            log.warning("%s is one file of a DICOM series of %d slices; to segment the whole series give its "
                        "folder, %s", path, len(files), path.parent)
            return


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
    return Path(path).is_dir() and bool(_dicom_series_ids(path))


def _dicom_series_ids(folder) -> tuple:
    """The series IDs GDCM finds in `folder`. Finding inputs and then reading them asks twice about the same
    folder, and each answer parses every file's header (0.1 s for 350 files): the answer is kept while no file
    there changes (names, sizes and modification times)."""
    folder = Path(folder).resolve()
    return _scanned_series_ids(str(folder), _listing_digest(folder))


def _listing_digest(folder: Path) -> str:
    digest = hashlib.sha1()
    for entry in sorted(os.scandir(folder), key=lambda entry: entry.name):
        try:
            status = entry.stat()
        except OSError:  # a broken link, or a file removed meanwhile: GDCM skips it too
            digest.update(f"{entry.name}\0unreadable\n".encode())
            continue
        digest.update(f"{entry.name}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
    return digest.hexdigest()


@lru_cache(maxsize=1024)
def _scanned_series_ids(folder: str, listing_digest: str) -> tuple:
    """GDCM warns on stderr ("No Series were found") about every folder without DICOM files, which is an
    ordinary answer when a folder of NIfTI files is searched: its warnings are silenced for the search."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _read_dicom_series(folder: Path) -> sitk.Image:
    series_ids = _dicom_series_ids(folder)
    if not series_ids:
        raise VolumeReadError(f"no DICOM series found in folder {folder}")
    if len(series_ids) > 1:
        raise VolumeReadError(
            f"folder {folder} holds {len(series_ids)} DICOM series; put each series in its own folder"
        )
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_ids[0])
    if not files:
        raise VolumeReadError(f"cannot read {folder}: its DICOM files changed while it was read; read it again")
    _refuse_damaged_dicom_files(folder, files)
    _refuse_oversized(_header_of(files[0]), folder, slice_count=len(files))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    image = reader.Execute()
    _refuse_uneven_slices(folder, reader, image)
    if reader.HasMetaDataKey(0, PATIENT_SIZE_TAG):  # the series reader keeps tags per file, not on the image
        image.SetMetaData(PATIENT_SIZE_TAG, reader.GetMetaData(0, PATIENT_SIZE_TAG))
    return image


def _refuse_damaged_dicom_files(folder: Path, series_files) -> None:
    """GDCM leaves a damaged file (say, pixel data cut short) out of the series without a word, which would
    silently drop that slice: a file that looks like DICOM but is not in the series is an error."""
    in_series = {Path(name).resolve() for name in series_files}
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.resolve() not in in_series and is_dicom_file(path):
            raise VolumeReadError(
                f"cannot read {folder}: the DICOM file {path.name} is damaged or truncated (copy the series again, "
                "or move that file out of the folder to segment the other slices)"
            )


def is_dicom_file(path: Path) -> bool:
    with open(path, "rb") as stream:
        return stream.read(132)[128:] == b"DICM"


def _refuse_uneven_slices(folder: Path, reader: sitk.ImageSeriesReader, image: sitk.Image) -> None:
    """ITK assumes evenly spaced slices and only warns when they are not: a gap (missing files) would misplace
    every slice after it, and duplicated or irregular positions would give wrong volumes."""
    if image.GetDepth() < 2 or not reader.HasMetaDataKey(0, "0020|0032"):
        return
    normal = np.array(image.GetDirection(), dtype=float).reshape(3, 3)[:, 2]
    try:
        positions = [float(np.dot(normal, [float(value) for value in
                                           reader.GetMetaData(index, "0020|0032").split("\\")]))
                     for index in range(image.GetDepth())]
    except (RuntimeError, ValueError):
        return  # no usable positions: nothing to compare
    steps = np.abs(np.diff(positions))
    typical = float(np.median(steps))
    files = reader.GetFileNames()
    if steps.min() < max(0.01 * typical, 1e-3):
        where = int(np.argmin(steps))
        raise VolumeReadError(
            f"cannot read {folder}: {Path(files[where]).name} and {Path(files[where + 1]).name} are slices at the same "
            f"position ({positions[where]:.4g} mm); the folder holds a slice twice or two series: keep one copy")
    if steps.max() > 1.5 * typical + 1e-3:
        where = int(np.argmax(steps))
        raise VolumeReadError(
            f"cannot read {folder}: slices are missing from the series (a {steps[where]:.3g} mm gap after slice "
            f"{where + 1} where the others are {typical:.3g} mm apart); copy the whole series"
        )
    if np.abs(steps - typical).max() > max(0.05 * typical, 1e-3):
        raise VolumeReadError(
            f"cannot read {folder}: the slices are unevenly spaced ({steps.min():.3g} to {steps.max():.3g} mm apart), "
            "which a volume cannot represent; resample the series to even spacing first")


def _check_nifti_file(path: Path) -> None:
    """ITK fills the missing part of a truncated NIfTI file with zeros and says nothing, reads NaN and infinite
    voxels as 0 (which looks like water) and a voxel size of 0 as 1 mm: compare the data length the header
    announces with what the file holds (streamed, before ITK allocates the volume), look for non-finite values in
    float data, and check the voxel size."""
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return
    opener = gzip.open if name.endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            header = stream.read(540)
            layout = _nifti_layout(header)
            chunks = _chunks_after(header, stream, layout.offset if layout else len(header))
            data_bytes, non_finite = _scan_data(chunks, layout.float_dtype if layout else None)
    except (OSError, EOFError, zlib.error) as error:
        raise VolumeReadError(f"cannot read {path}: the file is damaged or truncated ({error})") from error
    if layout is not None and not all(math.isfinite(size) and size > 0 for size in layout.voxel_size):
        raise VolumeReadError(f"{path} gives the voxel size {list(layout.voxel_size)} mm (NIfTI pixdim); a size of 0 "
                              "would be read as 1 mm and every area and volume would be wrong: write the file again "
                              "with its true voxel size")
    if layout is not None and layout.offset + data_bytes < layout.byte_count:
        raise VolumeReadError(f"cannot read {path}: the file is truncated ({layout.offset + data_bytes} of "
                              f"{layout.byte_count} bytes); copy it again")
    if non_finite:
        raise VolumeReadError(
            f"{path} has {non_finite} NaN or infinite voxels (often outside a resampled field of view); "
            "replace them, for example with -1000 HU, and save it again"
        )


@dataclass(frozen=True)
class _NiftiLayout:
    offset: int  # where the voxel data start
    byte_count: int  # header plus voxel data, as announced
    float_dtype: Optional[np.dtype]  # the voxel type when it is floating point
    voxel_size: tuple  # pixdim of each image axis, mm


def _nifti_layout(header: bytes) -> Optional[_NiftiLayout]:
    """What a NIfTI-1 or NIfTI-2 header announces; None if unrecognised."""
    for order in "<>":
        size = struct.unpack_from(order + "i", header)[0] if len(header) >= 4 else None
        if size == 348 and len(header) >= 348:
            dims = struct.unpack_from(order + "8h", header, 40)
            datatype, bitpix = struct.unpack_from(order + "2h", header, 70)
            pixdim = struct.unpack_from(order + "8f", header, 76)
            offset = int(struct.unpack_from(order + "f", header, 108)[0])
        elif size == 540 and len(header) >= 540:
            datatype, bitpix = struct.unpack_from(order + "2h", header, 12)
            dims = struct.unpack_from(order + "8q", header, 16)
            pixdim = struct.unpack_from(order + "8d", header, 104)
            offset = struct.unpack_from(order + "q", header, 168)[0]
        else:
            continue
        axes = min(max(int(dims[0]), 0), 7)
        voxels = math.prod(max(int(d), 1) for d in dims[1:1 + axes])
        offset = max(offset, size)
        float_type = {16: "f4", 64: "f8"}.get(datatype)
        return _NiftiLayout(offset, offset + voxels * bitpix // 8,
                            np.dtype(order + float_type) if float_type else None, tuple(pixdim[1:1 + min(axes, 3)]))
    return None


def _chunks_after(header: bytes, stream, offset: int):
    """The file's bytes from `offset` on, in chunks, given its first bytes already read into `header`."""
    if offset < len(header):
        yield header[offset:]
    skip = max(offset - len(header), 0)
    for chunk in iter(lambda: stream.read(1 << 22), b""):
        if skip:
            skip, chunk = max(skip - len(chunk), 0), chunk[skip:]
        yield chunk


def _scan_data(chunks, float_dtype: Optional[np.dtype]) -> tuple:
    """(byte count, non-finite value count) of the voxel data; values are only looked at for float data."""
    count, non_finite, pending = 0, 0, b""
    for chunk in chunks:
        count += len(chunk)
        if float_dtype is None:
            continue
        pending += chunk
        usable = len(pending) - len(pending) % float_dtype.itemsize
        values = np.frombuffer(pending[:usable], float_dtype)
        non_finite += values.size - int(np.count_nonzero(np.isfinite(values)))
        pending = pending[usable:]
    return count, non_finite


def volume_from_sitk(image: sitk.Image) -> Volume:
    ijk_to_lps = np.eye(4)
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    ijk_to_lps[:3, :3] = direction @ np.diag(image.GetSpacing())
    ijk_to_lps[:3, 3] = image.GetOrigin()
    return Volume(_compact_array(image), LPS_TO_RAS @ ijk_to_lps)


def _compact_array(image: sitk.Image) -> np.ndarray:
    """The voxel array, as int16 where wider integers fit in it: DICOM series of 12-bit CT come back as
    int32 after the rescale, which would double the memory of the volume and of every slice read from it."""
    view = sitk.GetArrayViewFromImage(image)
    if view.dtype.kind in "iu" and view.dtype.itemsize > 2 and view.size and \
            view.min() >= np.iinfo(np.int16).min and view.max() <= np.iinfo(np.int16).max:
        return view.astype(np.int16)
    return np.array(view)  # a copy: the view is only valid while the image lives


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
