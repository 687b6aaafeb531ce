"""Static checks that the module's Python code and its Designer file agree, and that the .ui uses only widget
classes Slicer provides (an unknown class makes Slicer's UI loader silently drop the widget)."""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULE_SOURCE = ROOT / "LegSegNet" / "LegSegNet.py"
UI_FILE = ROOT / "LegSegNet" / "Resources" / "UI" / "LegSegNet.ui"

# Widget classes available to Slicer's UI loader: Qt widgets, CTK widgets and qMRML widgets Slicer ships.
QT_CLASSES = {
    "QWidget", "QLabel", "QPushButton", "QToolButton", "QCheckBox", "QRadioButton", "QComboBox", "QLineEdit",
    "QSpinBox", "QDoubleSpinBox", "QProgressBar", "QGroupBox", "QFrame", "QTextEdit", "QPlainTextEdit",
    "QTabWidget", "QStackedWidget", "QSlider", "QScrollArea", "QTableWidget", "QListWidget", "QTreeWidget",
}
CTK_CLASSES = {
    "ctkCollapsibleButton", "ctkCollapsibleGroupBox", "ctkSliderWidget", "ctkRangeWidget", "ctkDoubleSpinBox",
    "ctkPathLineEdit", "ctkDirectoryButton", "ctkCheckBox", "ctkComboBox", "ctkMenuButton", "ctkCheckableComboBox",
}
QMRML_CLASSES = {
    "qMRMLWidget", "qMRMLNodeComboBox", "qMRMLSubjectHierarchyComboBox", "qMRMLSubjectHierarchyTreeView",
    "qMRMLSegmentSelectorWidget", "qMRMLSliderWidget", "qMRMLSpinBox", "qMRMLTableView", "qMRMLPlotView",
}
SLICER_WIDGET_CLASSES = QT_CLASSES | CTK_CLASSES | QMRML_CLASSES

# What parameterNodeWrapper can connect: widget class -> parameter types it supports.
PARAMETER_WIDGETS = {
    "qMRMLNodeComboBox": "vtkMRML",
    "QCheckBox": "bool",
    "QLineEdit": "str",
    "QDoubleSpinBox": "float",
    "ctkSliderWidget": "float",
    "QSpinBox": "int",
}


def ui_widgets() -> dict[str, ElementTree.Element]:
    return {widget.get("name"): widget for widget in ElementTree.parse(UI_FILE).iter("widget")}


def names_used_in_code() -> set[str]:
    return set(re.findall(r"\.ui\.(\w+)", MODULE_SOURCE.read_text()))


def parameter_annotations() -> dict[str, str]:
    tree = ast.parse(MODULE_SOURCE.read_text())
    parameter_class = next(node for node in tree.body
                           if isinstance(node, ast.ClassDef) and node.name == "LegSegNetParameterNode")
    return {statement.target.id: ast.unparse(statement.annotation)
            for statement in parameter_class.body if isinstance(statement, ast.AnnAssign)}


def slicer_parameter_names() -> dict[str, str]:
    """SlicerParameterName -> widget class, from the .ui file."""
    found = {}
    for name, widget in ui_widgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                found[prop.find("string").text] = widget.get("class")
    return found


def test_every_widget_the_code_uses_is_in_the_ui():
    used = names_used_in_code()
    assert len(used) > 20
    missing = sorted(used - set(ui_widgets()))
    assert not missing, f"LegSegNet.py uses self.ui.X names missing from LegSegNet.ui: {missing}"


def test_every_ui_widget_class_is_one_slicer_provides():
    classes = {widget.get("class") for widget in ui_widgets().values()}
    assert classes - SLICER_WIDGET_CLASSES == set()


def test_non_qt_classes_are_declared_as_custom_widgets():
    declared = {element.text for element in ElementTree.parse(UI_FILE).iter("class")}
    used = {widget.get("class") for widget in ui_widgets().values()}
    assert (used - QT_CLASSES) <= declared


def test_ui_parameter_names_match_the_parameter_node_and_widget_types():
    annotations = parameter_annotations()
    for parameter, widget_class in slicer_parameter_names().items():
        assert parameter in annotations, f"SlicerParameterName {parameter!r} is not a LegSegNetParameterNode field"
        assert annotations[parameter].startswith(PARAMETER_WIDGETS[widget_class]), (parameter, widget_class)


def test_node_selectors_set_their_scene_from_the_module_widget():
    connections = ElementTree.parse(UI_FILE).find("connections")
    receivers = {c.find("receiver").text for c in connections if c.find("slot").text == "setMRMLScene(vtkMRMLScene*)"}
    selectors = {name for name, widget in ui_widgets().items() if widget.get("class") == "qMRMLNodeComboBox"}
    assert selectors and selectors <= receivers


def test_module_declares_the_slicer_classes():
    tree = ast.parse(MODULE_SOURCE.read_text())
    classes = {node.name: [ast.unparse(base) for base in node.bases] for node in tree.body if isinstance(node, ast.ClassDef)}
    assert classes["LegSegNet"] == ["ScriptedLoadableModule"]
    assert classes["LegSegNetWidget"] == ["ScriptedLoadableModuleWidget", "VTKObservationMixin"]
    assert "ScriptedLoadableModuleLogic" in classes["LegSegNetLogic"]
    assert classes["LegSegNetTest"] == ["ScriptedLoadableModuleTest"]
    source = MODULE_SOURCE.read_text()
    assert "@parameterNodeWrapper" in source
    for attribute in ("title", "categories", "helpText", "acknowledgementText", "contributors"):
        assert f"self.parent.{attribute} =" in source


def test_nothing_is_installed_on_module_load():
    """pip and PyTorchUtils are called only from methods run by user actions, never at import or in setup()."""
    tree = ast.parse(MODULE_SOURCE.read_text())
    widget = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "LegSegNetWidget")
    setup = next(node for node in widget.body if isinstance(node, ast.FunctionDef) and node.name == "setup")
    module_level = [node for node in tree.body if not isinstance(node, (ast.ClassDef, ast.FunctionDef))]
    for code in [setup] + module_level:
        text = ast.unparse(code)
        assert "pip_install" not in text and "installTorch" not in text
