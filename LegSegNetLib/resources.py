"""Where the extension's top-level Resources/ folder is, in a source checkout, a Slicer install or a wheel."""

from pathlib import Path


def resources_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "Resources", here.parent / "Resources"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"LegSegNet's Resources folder is missing next to {here}; reinstall the package")
