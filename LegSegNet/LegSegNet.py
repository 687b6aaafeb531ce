"""LegSegNet 3D Slicer module: lower-leg CT -> SAT, muscle, IMAT and bone segments plus measurements.

The widget only collects settings and shows results; the work is done by LegSegNetLib (segmentation, model
weights, dependency checks) and SlicerLegSegNetLib.segmentation_logic (the MRML side), which are tested outside Slicer.
"""

import os
import sys
import time
import traceback
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.util import VTKObservationMixin


def _addLibraryPath():
    """Installed, LegSegNetLib sits beside this file; in a source checkout it is one folder up."""
    here = os.path.dirname(os.path.abspath(__file__))
    for folder in (here, os.path.dirname(here)):
        if os.path.isdir(os.path.join(folder, "LegSegNetLib")):
            if folder not in sys.path:
                sys.path.insert(0, folder)
            return


_addLibraryPath()

from SlicerLegSegNetLib import dependencies, status_texts as module_support  # noqa: E402
from SlicerLegSegNetLib import segmentation_logic as legsegnet_logic  # noqa: E402
from LegSegNetLib.progress import Cancelled  # noqa: E402
from LegSegNetLib.training.export import FORMATS as EXPORT_FORMATS  # noqa: E402
from LegSegNetLib.reading.validation import InputError  # noqa: E402


class LegSegNet(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "LegSegNet"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["LegSegNet for 3D Slicer contributors"]
        self.parent.helpText = (
            "Segments every axial slice of a lower-extremity CT into subcutaneous fat (SAT), skeletal muscle (SM), "
            "inter/intramuscular fat (IMAT) and bone with LegSegNet (a 2D nnU-Net), and measures body composition "
            "(volumes, mean HU, fat ratios, per-slice areas, right and left leg).<br>"
            "Pick the CT, click <b>Segment leg</b>, correct the result in Segment Editor if needed, then click "
            "<b>Update measurements</b>. The model weights are downloaded once (or installed offline from a "
            "folder or .zip); PyTorch is installed only after you agree.<br>"
            'See the <a href="https://github.com/legsegnet-slicer/SlicerLegSegNet">project page</a>.'
        )
        self.parent.acknowledgementText = (
            "LegSegNet: Chen Y, Chen Y, Colglazier R, Dong H, Gu H, Mazurowski M, Southerland K. LegSegNet: A Public "
            "Deep Learning System for Lower Extremity CT Tissue Segmentation and Quantification. arXiv:2605.30829. "
            "Model weights are the authors' (GogoChen/LegSegNet on Hugging Face); check their licence before use. "
            "Network architecture: nnU-Net (Isensee et al., Nature Methods 2021)."
        )


AXIAL_POSITION_LIMIT_MM = 100000.0


@parameterNodeWrapper
class LegSegNetParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    outputTable: vtkMRMLTableNode
    engineChoice: str = ""  # index-free key of the chosen engine/model, see LegSegNetWidget._choiceKey
    device: str = "auto"
    tta: bool = False
    folds: str = ""
    useAxialRange: bool = False
    # Bounded on purpose: for an unbounded float the wrapper sets its spin box's range to -inf..inf.
    rangeFromMm: Annotated[float, WithinRange(-AXIAL_POSITION_LIMIT_MM, AXIAL_POSITION_LIMIT_MM)] = 0.0
    rangeToMm: Annotated[float, WithinRange(-AXIAL_POSITION_LIMIT_MM, AXIAL_POSITION_LIMIT_MM)] = 0.0
    exportRangeFromMm: Annotated[float, WithinRange(-AXIAL_POSITION_LIMIT_MM, AXIAL_POSITION_LIMIT_MM)] = 0.0
    exportRangeToMm: Annotated[float, WithinRange(-AXIAL_POSITION_LIMIT_MM, AXIAL_POSITION_LIMIT_MM)] = 0.0


# The logic's export choices (EXPORT_FORMATS too), in the order of the .ui's exportFormatComboBox and
# exportSlicesComboBox items.
EXPORT_SLICES = legsegnet_logic.EXPORT_SLICES


class LegSegNetWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._engineChoices = []
        self._deviceReport = None
        self._running = False
        self._cancelRequested = False

    # ---- set-up and parameter node ----------------------------------------------------------------------------

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LegSegNet.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = LegSegNetLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.engineComboBox.currentIndexChanged.connect(self.onEngineChanged)
        self.ui.deviceComboBox.currentIndexChanged.connect(self.onDeviceChanged)
        self.ui.downloadModelButton.clicked.connect(self.onDownloadModel)
        self.ui.installModelButton.clicked.connect(self.onInstallModel)
        self.ui.removeModelButton.clicked.connect(self.onRemoveModel)
        self.ui.installDependenciesButton.clicked.connect(self.onInstallDependencies)
        self.ui.setRangeFromButton.clicked.connect(lambda: self.onSetRangeFromSliceView("rangeFromMm"))
        self.ui.setRangeToButton.clicked.connect(lambda: self.onSetRangeFromSliceView("rangeToMm"))
        self.ui.applyButton.clicked.connect(self.onApplyButton)
        self.ui.updateMeasurementsButton.clicked.connect(self.onUpdateMeasurements)
        self.ui.show3DButton.toggled.connect(self.onShow3D)
        self.ui.exportSlicesComboBox.currentIndexChanged.connect(self._updateButtons)
        self.ui.setExportRangeFromButton.clicked.connect(lambda: self.onSetExportRangeFromSliceView("exportRangeFromMm"))
        self.ui.setExportRangeToButton.clicked.connect(lambda: self.onSetExportRangeFromSliceView("exportRangeToMm"))
        self.ui.exportButton.clicked.connect(self.onExportTrainingPairs)

        self._populateEngineChoices()
        self.initializeParameterNode()

    def cleanup(self):
        self.removeObservers()

    def onReload(self):
        """Developer mode's Reload re-reads only this file: drop LegSegNetLib so that edits to it are loaded too."""
        for name in [name for name in sys.modules if name.split(".")[0] == "LegSegNetLib"]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def enter(self):
        self.initializeParameterNode()
        self._populateDevices()
        self._updateModelSection()

    def exit(self):
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume and not firstVolume.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = firstVolume

    def setParameterNode(self, parameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
            self._selectEngineFromParameterNode()
            self._selectDeviceFromParameterNode()
            self._updateButtons()

    def _updateButtons(self, caller=None, event=None):
        node = self._parameterNode
        hasInput = bool(node and node.inputVolume)
        hasResult = bool(node and node.outputSegmentation and node.inputVolume)
        self.ui.applyButton.enabled = hasInput or self._running
        self.ui.applyButton.text = "Cancel" if self._running else "Segment leg"
        self.ui.applyButton.toolTip = ("Stop after the current batch of slices; nothing is changed." if self._running
                                       else "Segment every axial slice of the CT into SAT, muscle, IMAT and bone.")
        for widget in (self.ui.inputsCollapsibleButton, self.ui.modelCollapsibleButton,
                       self.ui.optionsCollapsibleButton, self.ui.outputsCollapsibleButton,
                       self.ui.trainingCollapsibleButton):
            widget.enabled = not self._running
        self.ui.updateMeasurementsButton.enabled = hasResult and not self._running
        self.ui.show3DButton.enabled = hasResult and not self._running
        self.ui.exportButton.enabled = hasResult and not self._running
        self.ui.axialRangeWidget.enabled = bool(node and node.useAxialRange)
        self.ui.exportRangeWidget.enabled = self._exportSlices() == "range"

    # ---- engine, model weights and dependencies ---------------------------------------------------------------

    @staticmethod
    def _choiceKey(choice):
        return f"{choice.engine}:{choice.model or ''}"

    def _populateEngineChoices(self):
        try:
            self._engineChoices = module_support.engine_choices()
        except ValueError as error:  # a broken site registry file: still offer the threshold engine
            slicer.util.errorDisplay(f"LegSegNet model registry: {error}")
            self._engineChoices = [module_support.EngineChoice(module_support.THRESHOLD_ENGINE, None, "HU thresholds")]
        combo = self.ui.engineComboBox
        wasBlocked = combo.blockSignals(True)  # refilling must not overwrite the saved choice; the caller selects
        combo.clear()
        for choice in self._engineChoices:
            combo.addItem(choice.label)
        combo.blockSignals(wasBlocked)

    def _selectEngineFromParameterNode(self):
        keys = [self._choiceKey(choice) for choice in self._engineChoices]
        if self._parameterNode.engineChoice in keys:
            self.ui.engineComboBox.currentIndex = keys.index(self._parameterNode.engineChoice)
        self.onEngineChanged()

    def _currentChoice(self):
        return self._engineChoices[max(self.ui.engineComboBox.currentIndex, 0)]

    def onEngineChanged(self, index=None):
        if self._parameterNode:
            self._parameterNode.engineChoice = self._choiceKey(self._currentChoice())
        self._updateModelSection()

    def _requirements(self, choice):
        if choice.needs_model:
            return dependencies.MODEL_ENGINE_REQUIREMENTS
        return dependencies.THRESHOLD_ENGINE_REQUIREMENTS

    def _updateModelSection(self):
        choice = self._currentChoice()
        status = module_support.engine_status(choice)
        self.ui.modelStatusLabel.text = status.text
        self.ui.modelButtonsWidget.visible = choice.needs_model
        self.ui.downloadModelButton.text = status.download_action or "Download"
        self.ui.downloadModelButton.enabled = status.download_action is not None
        self.ui.removeModelButton.enabled = status.removable
        self.ui.ttaCheckBox.enabled = choice.needs_model
        self.ui.foldsLineEdit.enabled = choice.needs_model
        missing = dependencies.missing_requirements(self._requirements(choice))
        self.ui.dependenciesLabel.text = ("All installed." if not missing else
                                          "Missing: " + ", ".join(r.pip_spec for r in missing))
        self.ui.installDependenciesButton.visible = bool(missing)

    def _populateDevices(self):
        if self._deviceReport is not None:
            return
        with slicer.util.WaitCursor():
            self._deviceReport = dependencies.detect_devices()
        combo = self.ui.deviceComboBox
        wasBlocked = combo.blockSignals(True)  # filling the list must not overwrite the saved choice
        combo.clear()
        for _, label in self._deviceReport.choices:
            combo.addItem(label)
        combo.blockSignals(wasBlocked)
        self.ui.deviceInfoLabel.text = self._deviceReport.summary
        self._selectDeviceFromParameterNode()

    def _selectDeviceFromParameterNode(self):
        """Show the parameter node's device; one this machine lacks (a scene saved elsewhere) becomes Auto."""
        if self._deviceReport is None or not self._parameterNode:
            return
        values = [value for value, _ in self._deviceReport.choices]
        device = self._parameterNode.device
        self.ui.deviceComboBox.currentIndex = values.index(device) if device in values else 0
        self.onDeviceChanged()

    def onDeviceChanged(self, index=None):
        # The index is read from the combo box: Qt 5's currentIndexChanged also has a QString overload.
        index = self.ui.deviceComboBox.currentIndex
        if self._parameterNode and index >= 0 and self._deviceReport is not None:
            self._parameterNode.device = self._deviceReport.choices[index][0]

    def onInstallDependencies(self):
        return self._installDependencies(self._currentChoice())

    def _installDependencies(self, choice):
        """Ask, then install what is missing; True when everything is ready to use without a restart."""
        missing = dependencies.missing_requirements(self._requirements(choice))
        if not missing:
            return True
        # Decided before installing: PyTorchUtils imports torch once it has installed it, and that import is usable.
        restartNeeded = dependencies.restart_needed(missing, sys.modules)
        pyTorchUtils = self._pyTorchUtilsLogic()
        if not slicer.util.confirmOkCancelDisplay(dependencies.consent_message(missing, pyTorchUtils is not None),
                                                  windowTitle="LegSegNet: install Python packages"):
            return False
        try:
            with slicer.util.WaitCursor():
                for requirement in missing:
                    self._showStatus(f"Installing {requirement.pip_spec}... (this can take several minutes)")
                    self._installRequirement(requirement, pyTorchUtils)
        except Exception as error:
            slicer.util.errorDisplay(f"Installing Python packages failed: {error}\nCheck the network connection "
                                     "(or proxy settings) and try again.", detailedText=traceback.format_exc())
            return False
        finally:
            self._updateModelSection()
        self._showStatus("Python packages installed.")
        self._deviceReport = None  # torch may be new: detect the devices again
        self._populateDevices()
        if restartNeeded:
            if slicer.util.confirmYesNoDisplay("Slicer must restart to use the newly installed packages. "
                                               "Restart now?"):
                slicer.util.restart()
            return False
        return True

    @staticmethod
    def _pyTorchUtilsLogic():
        try:
            import PyTorchUtils
        except ImportError:
            return None
        return PyTorchUtils.PyTorchUtilsLogic()

    @staticmethod
    def _installRequirement(requirement, pyTorchUtils):
        if requirement.via_pytorch_utils and pyTorchUtils is not None:
            if pyTorchUtils.installTorch(askConfirmation=False, torchVersionRequirement=requirement.specifier) is None:
                raise RuntimeError("the PyTorch extension could not install PyTorch")
        else:
            slicer.util.pip_install(requirement.pip_arguments())

    def onDownloadModel(self):
        return self._downloadModel(self._currentChoice())

    def _downloadModel(self, choice):
        """Ask, then download (or update/repair) the chosen registry model; True when it is installed."""
        action = module_support.engine_status(choice).download_action
        if action is None or not self._installDependencies(choice):  # verifying the weights needs PyTorch
            return False
        from LegSegNetLib.models.download import download_model
        from LegSegNetLib.models.registry import get_model_spec

        spec = get_model_spec(choice.model)
        licence = spec.licence.get("advice") or spec.licence.get("weights", "")
        question = (f"{action} the {spec.title} weights (version {spec.version}) from {spec.homepage}?\n\n{licence}\n\n"
                    "Behind a firewall, set LEGSEGNET_WEIGHTS_URL to a mirror, or use 'Install from file...'.")
        if not slicer.util.confirmOkCancelDisplay(question, windowTitle="LegSegNet: download model"):
            return False
        self._setRunning(True)
        try:
            download_model(choice.model, folds=self._folds(), progress=self._onDownloadProgress,
                           cancel=lambda: self._cancelRequested, replace=action != "Download")
            self._showStatus("Model downloaded and verified.")
            return True
        except Cancelled:
            self._showStatus("Download stopped; the next download resumes where it stopped.")
        except Exception as error:
            slicer.util.errorDisplay(f"Downloading the model failed: {error}", detailedText=traceback.format_exc())
        finally:
            self._setRunning(False)
            self._updateModelSection()
        return False

    def _onDownloadProgress(self, progress):
        self.ui.progressBar.maximum = 1000
        self.ui.progressBar.value = int(1000 * progress.done / progress.total) if progress.total else 0
        self._showStatus(module_support.download_progress_text(progress))
        slicer.app.processEvents()

    def onInstallModel(self):
        choice = self._currentChoice()
        if not self._installDependencies(choice):  # validating the checkpoint needs PyTorch
            return
        from LegSegNetLib.models.install import ModelExistsError, install_model_from

        source = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), "Model .zip (Cancel to pick a folder instead)", "", "Zip archives (*.zip)")
        if not source:
            source = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Model folder (with plans.json)")
        if not source:
            return
        try:
            with slicer.util.WaitCursor():
                try:
                    folder = install_model_from(source, choice.model)
                except ModelExistsError:
                    if not slicer.util.confirmYesNoDisplay(f"Model '{choice.model}' is already installed. Replace it?"):
                        return
                    folder = install_model_from(source, choice.model, replace=True)
            self._showStatus(f"Model installed in {folder}")
        except Exception as error:
            slicer.util.errorDisplay(f"Installing the model failed: {error}", detailedText=traceback.format_exc())
        finally:
            self._updateModelSection()

    def onRemoveModel(self):
        choice = self._currentChoice()
        if not slicer.util.confirmYesNoDisplay(f"Delete the installed weights of '{choice.model}'?"):
            return
        from LegSegNetLib.models.install import remove_model

        with slicer.util.tryWithErrorDisplay("Removing the model failed."):
            remove_model(choice.model)
        self._populateEngineChoices()  # a model installed under its own name leaves the list
        self._selectEngineFromParameterNode()

    def _folds(self):
        from LegSegNetLib.models.folds import parse_folds

        return parse_folds(self._parameterNode.folds)

    def _ensureReady(self, choice):
        """Dependencies installed and model weights present (offering to get them); True when ready to run."""
        if not self._installDependencies(choice):
            return False
        if module_support.engine_status(choice).ready:
            return True
        return self._downloadModel(choice)

    # ---- axial range ------------------------------------------------------------------------------------------

    def onSetRangeFromSliceView(self, parameterName):
        position = self._axialViewPosition()
        if position is not None:
            setattr(self._parameterNode, parameterName, position)
            self._parameterNode.useAxialRange = True

    def onSetExportRangeFromSliceView(self, parameterName):
        position = self._axialViewPosition()
        if position is not None:
            setattr(self._parameterNode, parameterName, position)
            self.ui.exportSlicesComboBox.currentIndex = EXPORT_SLICES.index("range")

    @staticmethod
    def _axialViewPosition():
        """The superior-inferior position of the axial (red) slice view, or None (after saying what to do)."""
        sliceWidget = slicer.app.layoutManager().sliceWidget("Red")
        if sliceWidget is None or sliceWidget.mrmlSliceNode().GetOrientation() != "Axial":
            slicer.util.errorDisplay("Show an axial view in the red slice view, scroll it to the end of the range, "
                                     "then click again (or type the S position in mm).")
            return None
        return sliceWidget.sliceLogic().GetSliceOffset()

    # ---- run --------------------------------------------------------------------------------------------------

    def onApplyButton(self):
        if self._running:
            self._cancelRequested = True
            self._showStatus("Cancelling after the current batch...")
            return
        choice = self._currentChoice()
        try:
            options = self._processOptions(choice)
            self.logic.checkInput(self._parameterNode.inputVolume)  # before any install or download is offered
        except InputError as error:  # the message says what is wrong with the volume and what to do
            slicer.util.errorDisplay(f"Cannot segment this volume: {error}")
            return
        except ValueError as error:
            slicer.util.errorDisplay(str(error))
            return
        if not self._ensureReady(choice):
            return
        self._run(options)

    def _processOptions(self, choice):
        node = self._parameterNode
        axialRange = (node.rangeFromMm, node.rangeToMm) if node.useAxialRange else None
        return module_support.process_options(choice, node.device, node.tta, node.folds, axialRange)

    def _run(self, options):
        node = self._parameterNode
        started = time.monotonic()

        def onProgress(done, total):
            self.ui.progressBar.maximum = max(total, 1)
            self.ui.progressBar.value = done
            self._showStatus(module_support.segmentation_progress_text(done, total, time.monotonic() - started))
            slicer.app.processEvents()  # keeps the view alive and lets the user click Cancel
            return not self._cancelRequested

        self._setRunning(True)
        try:
            segmentation, table = self.logic.process(node.inputVolume, node.outputSegmentation, node.outputTable,
                                                     progress=onProgress, **options)
        except Cancelled:
            self._showStatus("Cancelled; nothing was changed.")
            return
        except Exception as error:
            self._showStatus("Segmentation failed; nothing was changed.")
            slicer.util.errorDisplay(f"Segmentation failed: {error}", detailedText=traceback.format_exc())
            return
        finally:
            self._setRunning(False)
        node.outputSegmentation = segmentation
        node.outputTable = table
        self._showStatus(module_support.segmentation_done_text(time.monotonic() - started, self.logic.lastWarnings))
        self._showResults(table)

    def _setRunning(self, running):
        self._running = running
        self._cancelRequested = False
        if running:
            self.ui.progressBar.value = 0
        self._updateButtons()

    def _showStatus(self, text):
        self.ui.statusLabel.text = text

    def _showResults(self, table):
        """Show the tissue table and the slice-area plot beside the slice views."""
        layoutManager = slicer.app.layoutManager()
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotTableView)
        slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(table.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()
        chart = self.logic.sliceAreaChart(table)
        if chart is not None:
            slicer.modules.plots.logic().ShowChartInLayout(chart)

    def onUpdateMeasurements(self):
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Measuring the segmentation failed.", waitCursor=True):
            node.outputTable = self.logic.computeMeasurements(node.outputSegmentation, node.inputVolume,
                                                              node.outputTable)
            self._showStatus("Measurements updated from the segments as they are now.")
            self._showResults(node.outputTable)

    # ---- training pairs ---------------------------------------------------------------------------------------

    def _exportSlices(self):
        return EXPORT_SLICES[max(self.ui.exportSlicesComboBox.currentIndex, 0)]

    def onExportTrainingPairs(self):
        node = self._parameterNode
        folder = self.ui.exportFolderPathLineEdit.currentPath
        if not folder:
            slicer.util.errorDisplay("Choose the output folder for the training pairs first.")
            return
        slices = self._exportSlices()
        rangeMm = (node.exportRangeFromMm, node.exportRangeToMm) if slices == "range" else None
        try:
            with slicer.util.WaitCursor():
                result = self.logic.exportTrainingPairs(
                    node.outputSegmentation, node.inputVolume, folder,
                    format=EXPORT_FORMATS[self.ui.exportFormatComboBox.currentIndex], slices=slices, range_mm=rangeMm)
        except ValueError as error:  # export and range errors say what to change
            self.ui.exportStatusLabel.text = f"Nothing was exported: {error}"
            return
        except Exception as error:
            slicer.util.errorDisplay(f"Exporting training pairs failed: {error}", detailedText=traceback.format_exc())
            return
        self.ui.exportFolderPathLineEdit.addCurrentPathToHistory()
        skipped = f"; {len(result.skipped_empty)} selected slices had no tissue" if result.skipped_empty else ""
        self.ui.exportStatusLabel.text = (f"Exported {len(result.slices)} slices ({len(result.files)} files) "
                                          f"to {folder}{skipped}.")

    def onShow3D(self, on):
        if self._parameterNode and self._parameterNode.outputSegmentation:
            with slicer.util.tryWithErrorDisplay("Showing the 3D surfaces failed.", waitCursor=True):
                self.logic.showSurface(self._parameterNode.outputSegmentation, on)


class LegSegNetLogic(ScriptedLoadableModuleLogic, legsegnet_logic.LegSegNetLogic):
    """Slicer's logic class for the module: SlicerLegSegNetLib.segmentation_logic.LegSegNetLogic plus the parameter node."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        legsegnet_logic.LegSegNetLogic.__init__(self, slicer.mrmlScene)

    def getParameterNode(self):
        return LegSegNetParameterNode(super().getParameterNode())


class LegSegNetTest(ScriptedLoadableModuleTest):
    """Whole workflow on a synthetic two-leg phantom with the threshold engine: no download, no PyTorch."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_segment_edit_measure()
        self.setUp()
        self.test_widget_runs_and_cancels()

    def _phantomVolume(self):
        from LegSegNetLib.synthetic.leg_phantom import make_leg_phantom

        ct, truth = make_leg_phantom(seed=0, shape=(12, 160, 160), orientation="LPS")
        volumeNode = slicer.util.addVolumeFromArray(ct.array, ijkToRAS=ct.ijk_to_ras, name="Leg phantom")
        return volumeNode, truth

    def test_segment_edit_measure(self):
        import numpy as np
        from SlicerLegSegNetLib import mrml_segmentation
        from LegSegNetLib.tissues import TISSUE_BY_KEY, TISSUES

        self.delayDisplay("Segmenting a synthetic leg phantom")
        volumeNode, truth = self._phantomVolume()
        logic = LegSegNetLogic()
        segmentation, table = logic.process(volumeNode, engine="threshold")
        labels = mrml_segmentation.labels_from_segmentation(segmentation, volumeNode)
        for tissue in TISSUES:
            found, expected = labels == tissue.value, truth.array == tissue.value
            dice = 2 * np.sum(found & expected) / (np.sum(found) + np.sum(expected))
            # Thin IMAT streaks are only roughly found by thresholds (about 0.84 here; the rest about 0.97).
            self.assertGreater(dice, 0.7 if tissue.key == "IMAT" else 0.9, f"{tissue.name} Dice {dice:.2f}")

        self.delayDisplay("Erasing muscle in one slice, as Segment Editor would, and measuring again")
        muscle = mrml_segmentation.segment_id(TISSUE_BY_KEY["SM"])
        muscleVoxels = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, muscle, volumeNode)
        erased = int(muscleVoxels[5].sum())
        muscleVoxels[5] = 0
        slicer.util.updateSegmentBinaryLabelmapFromArray(muscleVoxels, segmentation, muscle, volumeNode)
        before = self._muscleVolume(table)
        logic.computeMeasurements(segmentation, volumeNode, table)
        voxelCm3 = truth.voxel_volume_mm3 / 1000
        self.assertAlmostEqual(self._muscleVolume(table), before - erased * voxelCm3, places=3)

        logic.showSurface(segmentation, True)
        self.assertTrue(segmentation.GetSegmentation().ContainsRepresentation("Closed surface"))
        self._exportEditedSlice(logic, segmentation, volumeNode)
        self.delayDisplay("Segment, edit, measure: passed")

    def _exportEditedSlice(self, logic, segmentation, volumeNode):
        import tempfile

        self.delayDisplay("Exporting the edited slice as a training pair")
        with tempfile.TemporaryDirectory() as folder:
            result = logic.exportTrainingPairs(segmentation, volumeNode, folder, format="nifti", slices="edited")
        self.assertEqual(len(result.slices), 1)  # only slice 5 was edited
        self.assertEqual(len(result.files), 2)

    @staticmethod
    def _muscleVolume(table):
        values = table.GetTable()
        for row in range(values.GetNumberOfRows()):
            if values.GetValueByName(row, "tissue").ToString() == "SM" and \
                    values.GetValueByName(row, "side").ToString() == "both":
                return values.GetValueByName(row, "volume_cm3").ToDouble()
        raise AssertionError("no muscle row in the table")

    def test_widget_runs_and_cancels(self):
        self.delayDisplay("Running the module from its widget")
        volumeNode, _ = self._phantomVolume()
        slicer.util.selectModule("LegSegNet")  # entering the module connects its parameter node
        widget = slicer.modules.legsegnet.widgetRepresentation().self()
        parameters = widget._parameterNode
        parameters.inputVolume = volumeNode
        keys = [widget._choiceKey(choice) for choice in widget._engineChoices]
        widget.ui.engineComboBox.currentIndex = keys.index("threshold:")
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()

        qt.QTimer.singleShot(0, widget.ui.applyButton.click)  # a second click while running cancels
        widget.ui.applyButton.click()
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)
        self.assertIsNone(parameters.outputSegmentation)

        widget.ui.applyButton.click()
        self.assertIsNotNone(parameters.outputSegmentation)
        self.assertIsNotNone(parameters.outputTable)
        self.assertEqual(parameters.outputSegmentation.GetSegmentation().GetNumberOfSegments(), 4)
        self.delayDisplay("Widget run and cancel: passed")
