"""Static checks that the module's Python code and its Designer file agree, and that the .ui uses only widget
classes Slicer provides (an unknown class makes Slicer's UI loader silently drop the widget)."""

from __future__ import annotations

import ast
import importlib.util
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

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

# Designer properties and signals of the classes the .ui uses, as their headers declare them: Qt 5.15 (the Qt of
# Slicer 5.8 to 5.12), CTK Libs/Widgets/ctkCollapsibleButton.h and ctkPathLineEdit.h, Slicer
# Libs/MRML/Widgets/qMRMLNodeComboBox.h and qMRMLWidget.h (v5.8.0). A property Qt does not know is dropped by the
# UI loader with only a console warning; a signal name that does not exist fails only when the module is opened.
BASE_CLASS = {
    "QFrame": "QWidget", "QLabel": "QFrame", "QAbstractButton": "QWidget", "QPushButton": "QAbstractButton",
    "QCheckBox": "QAbstractButton", "QComboBox": "QWidget", "QLineEdit": "QWidget", "QAbstractSpinBox": "QWidget",
    "QDoubleSpinBox": "QAbstractSpinBox", "QProgressBar": "QWidget", "ctkCollapsibleButton": "QAbstractButton",
    "qMRMLNodeComboBox": "QWidget", "qMRMLWidget": "QWidget", "ctkPathLineEdit": "QWidget",
}
PROPERTIES = {
    "QWidget": {"enabled", "visible", "toolTip", "statusTip", "whatsThis", "geometry", "sizePolicy", "minimumSize",
                "maximumSize", "styleSheet", "font", "windowTitle", "accessibleName", "accessibleDescription"},
    "QFrame": {"frameShape", "frameShadow", "lineWidth", "midLineWidth"},
    "QLabel": {"text", "textFormat", "pixmap", "scaledContents", "alignment", "wordWrap", "margin", "indent",
               "openExternalLinks", "textInteractionFlags", "buddy"},
    "QAbstractButton": {"text", "icon", "iconSize", "shortcut", "checkable", "checked", "autoRepeat", "autoExclusive",
                        "autoRepeatDelay", "autoRepeatInterval", "down"},
    "QPushButton": {"autoDefault", "default", "flat"},
    "QCheckBox": {"tristate"},
    "QComboBox": {"editable", "currentText", "currentIndex", "currentData", "maxVisibleItems", "maxCount",
                  "insertPolicy", "sizeAdjustPolicy", "minimumContentsLength", "iconSize", "placeholderText",
                  "duplicatesEnabled", "frame", "modelColumn"},
    "QLineEdit": {"inputMask", "text", "maxLength", "frame", "echoMode", "cursorPosition", "alignment", "dragEnabled",
                  "readOnly", "placeholderText", "cursorMoveStyle", "clearButtonEnabled"},
    "QAbstractSpinBox": {"wrapping", "frame", "alignment", "readOnly", "buttonSymbols", "specialValueText",
                         "accelerated", "correctionMode", "keyboardTracking", "showGroupSeparator"},
    "QDoubleSpinBox": {"prefix", "suffix", "decimals", "minimum", "maximum", "singleStep", "stepType", "value"},
    "QProgressBar": {"minimum", "maximum", "value", "alignment", "textVisible", "orientation", "invertedAppearance",
                     "textDirection", "format"},
    "ctkCollapsibleButton": {"collapsed", "collapsedHeight", "flat", "contentsFrameShape", "contentsFrameShadow",
                             "contentsLineWidth", "contentsMidLineWidth", "buttonTextAlignment", "indicatorAlignment"},
    "qMRMLNodeComboBox": {"currentNodeID", "nodeTypes", "showHidden", "showChildNodeTypes", "hideChildNodeTypes",
                          "baseName", "noneEnabled", "addEnabled", "removeEnabled", "editEnabled", "renameEnabled",
                          "interactionNodeSingletonTag", "selectNodeUponCreation", "noneDisplay", "sizeAdjustPolicy"},
    "ctkPathLineEdit": {"label", "filters", "currentPath", "options", "settingKey", "showBrowseButton",
                        "showHistoryButton", "sizeAdjustPolicy", "minimumContentsLength", "nameFilters"},
    "qMRMLWidget": set(),
}
SIGNALS = {
    "QWidget": {"customContextMenuRequested", "windowTitleChanged"},
    "QFrame": set(),
    "QLabel": {"linkActivated", "linkHovered"},
    "QAbstractButton": {"clicked", "pressed", "released", "toggled"},
    "QPushButton": set(),
    "QCheckBox": {"stateChanged"},
    "QComboBox": {"activated", "currentIndexChanged", "currentTextChanged", "editTextChanged", "highlighted",
                  "textActivated", "textHighlighted"},
    "QLineEdit": {"cursorPositionChanged", "editingFinished", "inputRejected", "returnPressed", "selectionChanged",
                  "textChanged", "textEdited"},
    "QAbstractSpinBox": {"editingFinished"},
    "QDoubleSpinBox": {"valueChanged", "textChanged"},
    "QProgressBar": {"valueChanged"},
    "ctkCollapsibleButton": {"contentsCollapsed"},
    "qMRMLNodeComboBox": {"currentNodeChanged", "currentNodeIDChanged", "nodeActivated", "nodeAdded", "nodeAddedByUser",
                          "nodeAboutToBeRemoved", "currentNodeRenamed", "nodeAboutToBeEdited"},
    "ctkPathLineEdit": {"currentPathChanged", "validInputChanged"},
    "qMRMLWidget": {"mrmlSceneChanged"},
}

# What parameterNodeWrapper can connect (Base/Python/slicer/parameterNodeWrapper/guiConnectors.py, v5.8.0): widget
# class -> parameter type. The connectors compare type(widget) exactly, so a subclass does not connect.
PARAMETER_WIDGETS = {
    "qMRMLNodeComboBox": "vtkMRML",
    "QCheckBox": "bool",
    "QLineEdit": "str",
    "QDoubleSpinBox": "float",
    "ctkSliderWidget": "float",
    "QSpinBox": "int",
}


def inherited(table: dict[str, set], widget_class: str) -> set[str]:
    names = set()
    while widget_class is not None:
        assert widget_class in table, f"{widget_class}: add its properties and signals from its header"
        names |= table[widget_class]
        widget_class = BASE_CLASS.get(widget_class)
    return names


def ui_widgets() -> dict[str, ElementTree.Element]:
    return {widget.get("name"): widget for widget in ElementTree.parse(UI_FILE).iter("widget")}


def names_used_in_code() -> set[str]:
    return set(re.findall(r"\.ui\.(\w+)", MODULE_SOURCE.read_text()))


def parameter_annotations() -> dict[str, ast.expr]:
    tree = ast.parse(MODULE_SOURCE.read_text())
    parameter_class = next(node for node in tree.body
                           if isinstance(node, ast.ClassDef) and node.name == "LegSegNetParameterNode")
    return {statement.target.id: statement.annotation
            for statement in parameter_class.body if isinstance(statement, ast.AnnAssign)}


def _unannotated(annotation: ast.expr) -> str:
    """`Annotated[float, WithinRange(...)]` -> "float"."""
    if isinstance(annotation, ast.Subscript) and ast.unparse(annotation.value) == "Annotated":
        return ast.unparse(annotation.slice.elts[0])
    return ast.unparse(annotation)


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


def test_ui_properties_exist_on_their_widget_classes():
    unknown = [(name, widget.get("class"), prop.get("name"))
               for name, widget in ui_widgets().items() for prop in widget.findall("property")
               if prop.get("stdset") != "0" and prop.get("name") not in inherited(PROPERTIES, widget.get("class"))]
    assert not unknown, f"(widget, class, property) that the class does not have: {unknown}"


def test_signals_the_code_connects_exist_on_the_widget_classes():
    widgets = ui_widgets()
    connected = re.findall(r"\.ui\.(\w+)\.(\w+)\.connect\(", MODULE_SOURCE.read_text())
    assert len(connected) > 5
    unknown = [(name, signal) for name, signal in connected
               if signal not in inherited(SIGNALS, widgets[name].get("class"))]
    assert not unknown, f"(widget, signal) pairs whose widget class has no such signal: {unknown}"


def test_non_qt_classes_are_declared_as_custom_widgets():
    declared = {element.text for element in ElementTree.parse(UI_FILE).iter("class")}
    used = {widget.get("class") for widget in ui_widgets().values()}
    assert (used - QT_CLASSES) <= declared


def test_ui_parameter_names_match_the_parameter_node_and_widget_types():
    annotations = {parameter: _unannotated(annotation) for parameter, annotation in parameter_annotations().items()}
    for parameter, widget_class in slicer_parameter_names().items():
        assert parameter in annotations, f"SlicerParameterName {parameter!r} is not a LegSegNetParameterNode field"
        assert annotations[parameter].startswith(PARAMETER_WIDGETS[widget_class]), (parameter, widget_class)


def test_float_parameters_on_spin_boxes_and_sliders_are_bounded():
    """The float connector replaces the .ui range by the parameter's WithinRange, or by -inf..inf without one
    (and refuses a ctkSliderWidget), so the bounds must be stated in the parameter node."""
    raw = {parameter: ast.unparse(annotation) for parameter, annotation in parameter_annotations().items()}
    floats = [parameter for parameter, widget_class in slicer_parameter_names().items()
              if PARAMETER_WIDGETS[widget_class] == "float"]
    assert floats
    for parameter in floats:
        assert "WithinRange(" in raw[parameter], f"{parameter}: annotate it Annotated[float, WithinRange(low, high)]"


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


def test_slicer_util_calls_match_the_functions_in_slicer_util():
    """Every slicer.util function the module calls exists, with the keywords it is given, in Slicer's own
    Base/Python/slicer/util.py (the copy PyPI slicer-core ships; read as source, it needs Qt to import)."""
    spec = importlib.util.find_spec("slicer")
    if spec is None or spec.submodule_search_locations is None:
        pytest.skip("slicer-core is not installed")
    util_source = Path(next(iter(spec.submodule_search_locations))) / "util.py"
    definitions = {node.name: node for node in ast.parse(util_source.read_text()).body
                   if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    calls = [node for node in ast.walk(ast.parse(MODULE_SOURCE.read_text()))
             if isinstance(node, ast.Call) and ast.unparse(node.func).startswith("slicer.util.")]
    assert len(calls) > 10
    for call in calls:
        name = ast.unparse(call.func).removeprefix("slicer.util.")
        assert name in definitions, f"slicer.util has no {name}"
        function = definitions[name]
        if isinstance(function, ast.ClassDef):
            function = next(node for node in function.body if isinstance(node, ast.FunctionDef) and node.name == "__init__")
        parameters = {argument.arg for argument in function.args.args + function.args.kwonlyargs}
        for keyword in call.keywords:
            assert keyword.arg in parameters or function.args.kwarg is not None, f"slicer.util.{name}({keyword.arg}=)"
