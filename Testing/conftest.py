import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import realct  # noqa: E402


@pytest.fixture(scope="session")
def visible_human_dicom_dir():
    return realct.visible_human_dicom_dir()
