"""Static checks of the Slicer extension packaging: the CMake scripts list every file that exists (so a build
never misses one) and nothing that does not, the extension metadata is complete, and the icons are in place."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from make_icon import ICON_PATHS, draw_icon

ROOT = Path(__file__).resolve().parent.parent
MODULE_DIR = ROOT / "LegSegNet"
MODULE_SOURCE_PATH = MODULE_DIR / "LegSegNet.py"


def cmake_list(text: str, variable: str) -> list[str]:
    """Entries of a `set(VARIABLE ...)` block, with ${MODULE_NAME} expanded."""
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} is not set"
    return [entry.replace("${MODULE_NAME}", "LegSegNet") for entry in match.group(1).split()]


def module_cmake() -> str:
    return (MODULE_DIR / "CMakeLists.txt").read_text()


def files_under(folder: Path, pattern: str, base: Path) -> set[str]:
    return {path.relative_to(base).as_posix() for path in folder.rglob(pattern)
            if path.is_file() and "__pycache__" not in path.parts}


def test_module_cmake_lists_every_module_script_and_resource():
    scripts = set(cmake_list(module_cmake(), "MODULE_PYTHON_SCRIPTS"))
    resources = set(cmake_list(module_cmake(), "MODULE_PYTHON_RESOURCES"))
    assert scripts == {path.name for path in MODULE_DIR.glob("*.py")} | files_under(
        MODULE_DIR / "SlicerLegSegNetLib", "*.py", MODULE_DIR)
    assert resources == files_under(MODULE_DIR / "Resources", "*", MODULE_DIR)


def test_module_cmake_lists_every_library_file_and_the_model_registry():
    listed = cmake_list(module_cmake(), "LIBRARY_PYTHON_SCRIPTS")
    existing = files_under(ROOT / "LegSegNetLib", "*.py", ROOT)
    missing = sorted(existing - set(listed))
    assert not missing, "add to LIBRARY_PYTHON_SCRIPTS in LegSegNet/CMakeLists.txt:\n  " + "\n  ".join(missing)
    assert sorted(set(listed) - existing) == [], "listed but not in the repository"
    assert listed == sorted(listed), "keep LIBRARY_PYTHON_SCRIPTS sorted"
    resources = set(cmake_list(module_cmake(), "LIBRARY_PYTHON_RESOURCES"))
    assert resources == files_under(ROOT / "Resources", "*", ROOT)


def test_library_lands_where_the_module_and_resources_dir_find_it():
    text = module_cmake()
    assert "SOURCE_DIR ${CMAKE_CURRENT_SOURCE_DIR}/.." in text
    assert "DESTINATION_DIR ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}" in text
    assert "NO_INSTALL_SUBDIR" in text  # LegSegNetLib/ and Resources/ beside LegSegNet.py, not in a subfolder


def test_extension_cmake_has_complete_metadata_and_depends_on_pytorch():
    text = (ROOT / "CMakeLists.txt").read_text()
    fields = dict(re.findall(r'set\((EXTENSION_\w+)\s+"(.*?)"\)', text, re.S))
    for name in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert fields.get(f"EXTENSION_{name}"), f"EXTENSION_{name} is empty"
    assert fields["EXTENSION_DEPENDS"] == "PyTorch"
    assert fields["EXTENSION_ICONURL"].endswith("/LegSegNet.png")
    assert "add_subdirectory(LegSegNet)" in text
    assert fields["EXTENSION_HOMEPAGE"] in (MODULE_DIR / "LegSegNet.py").read_text(), "module help links elsewhere"
    assert fields["EXTENSION_HOMEPAGE"] in json.loads((ROOT / "LegSegNet.json").read_text())["scm_url"]


def test_extensions_index_description():
    entry = json.loads((ROOT / "LegSegNet.json").read_text())
    assert entry["build_dependencies"] == ["PyTorch"]
    assert entry["category"] == "Segmentation"
    assert entry["scm_url"].endswith(".git") and entry["build_subdirectory"] == "."


def test_icons_are_128_pixel_rgba_and_reproducible():
    for path in ICON_PATHS:
        image = sitk.ReadImage(str(path))
        assert image.GetSize() == (128, 128) and image.GetNumberOfComponentsPerPixel() == 4
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), draw_icon())


def test_extensions_index_description_fits_the_catalog_entry_schema():
    """Fields of Slicer's Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json (no others are allowed)."""
    entry = json.loads((ROOT / "LegSegNet.json").read_text())
    allowed = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
               "build_subdirectory", "enabled", "tier"}
    assert set(entry) <= allowed
    assert {"$schema", "category", "scm_url"} <= set(entry)
    assert entry["$schema"].endswith("/slicer-extension-catalog-entry-schema-v1.0.1.json#")
    assert isinstance(entry["tier"], int) and 1 <= entry["tier"] <= 5


def test_wheel_lists_every_library_subpackage_and_the_resources():
    """pyproject lists packages by hand (Resources/ is mapped into the package); a new subpackage must be added."""
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    existing = {init.parent.relative_to(ROOT).as_posix().replace("/", ".")
                for init in (ROOT / "LegSegNetLib").rglob("__init__.py")}
    assert set(setuptools["packages"]) == existing | {"LegSegNetLib.Resources"}
    assert setuptools["package-dir"]["LegSegNetLib.Resources"] == "Resources"
    shipped = setuptools["package-data"]["LegSegNetLib.Resources"]
    resources = files_under(ROOT / "Resources", "*", ROOT / "Resources")
    unshipped = [name for name in resources if not any(Path(name).match(pattern) for pattern in shipped)]
    assert not unshipped, f"add patterns to [tool.setuptools.package-data] for {unshipped}"


def imported_top_level_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


SLICER_SIDE = {"slicer", "vtk", "qt", "ctk", "PythonQt", "mrml", "SlicerLegSegNetLib"}


def test_the_core_imports_nothing_from_slicer_vtk_or_qt():
    offenders = {path.relative_to(ROOT).as_posix(): sorted(imported_top_level_names(ast.parse(path.read_text(encoding="utf-8"))) & SLICER_SIDE)
                 for path in (ROOT / "LegSegNetLib").rglob("*.py")}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_widget_reaches_the_core_only_through_its_logic_classes():
    tree = ast.parse(MODULE_SOURCE_PATH.read_text(encoding="utf-8"))
    widget_code = [node for node in tree.body if not (isinstance(node, ast.ClassDef) and node.name.endswith("Test"))]
    used = set().union(*(imported_top_level_names(node) for node in widget_code))
    assert "LegSegNetLib" not in used and "SlicerLegSegNetLib" in used


def test_the_script_passes_on_main_s_status_and_freezes_objects_out_of_the_last_collection():
    import subprocess
    import sys
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts["legsegnet"] == "LegSegNetLib.cli:command"
    code = ("import atexit, gc, sys; atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0)); "
            "from LegSegNetLib.cli import command; sys.argv = ['legsegnet', 'segment', 'missing.nii.gz']; command()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2 and "input not found" in result.stderr  # main's one-line error and status
    assert "frozen True" in result.stdout
