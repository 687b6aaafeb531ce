"""A working MRML scene on PyPI `slicer-core`, without the Slicer application (test-only).

Slicer's application wires each module logic to the scene and the application logic at start-up; here the same
real logic classes are created and registered by hand, so volumes, segmentations, tables and the subject
hierarchy behave as they do inside Slicer.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import slicer

MODULE_LOGICS = {
    "Volumes": "vtkSlicerVolumesLogic",
    "Segmentations": "vtkSlicerSegmentationsModuleLogic",
    "Tables": "vtkSlicerTablesLogic",
    "SubjectHierarchy": "vtkSlicerSubjectHierarchyModuleLogic",
}


class SlicerScene:
    """A fresh scene with its application logic and module logics; set as `slicer.mrmlScene`."""

    def __init__(self):
        self.scene = slicer.vtkMRMLScene()
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        # No colour files ship with slicer-core; pointing at an empty folder makes the colour logic skip them quietly.
        self._empty_dir = tempfile.TemporaryDirectory()
        (Path(self._empty_dir.name) / "share" / "ColorFiles").mkdir(parents=True)
        self.app_logic.SetHomeDirectory(self._empty_dir.name)
        self.app_logic.SetShareDirectory("share")
        self.app_logic.SetMRMLScene(self.scene)
        # The colour logic needs the application logic before the scene, to create its default colour nodes.
        self.color_logic = slicer.vtkSlicerColorLogic()
        self.color_logic.SetMRMLApplicationLogic(self.app_logic)
        self.color_logic.SetMRMLScene(self.scene)
        self.app_logic.SetColorLogic(self.color_logic)
        self.app_logic.SetModuleLogic("Colors", self.color_logic)
        self.logics = {}
        for name, class_name in MODULE_LOGICS.items():
            logic = getattr(slicer, class_name)()
            logic.SetMRMLApplicationLogic(self.app_logic)
            logic.SetMRMLScene(self.scene)
            self.app_logic.SetModuleLogic(name, logic)
            self.logics[name] = logic
        slicer.mrmlScene = self.scene

    @property
    def volumes_logic(self):
        return self.logics["Volumes"]

    def close(self):
        self.scene.Clear(True)
        if getattr(slicer, "mrmlScene", None) is self.scene:
            del slicer.mrmlScene
        self._empty_dir.cleanup()


@pytest.fixture
def mrml_scene():
    """pytest fixture: a fresh SlicerScene for one test (import it into a test module to use it)."""
    scene = SlicerScene()
    yield scene
    scene.close()
