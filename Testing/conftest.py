import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The Slicer-side package lives beside the module's LegSegNet.py, where Slicer finds it too.
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "LegSegNet"))

import realct  # noqa: E402


@pytest.fixture(scope="session")
def visible_human_dicom_dir():
    return realct.visible_human_dicom_dir()
