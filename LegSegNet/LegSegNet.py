"""LegSegNet 3D Slicer module: lower-leg CT -> SAT, muscle, IMAT and bone segments plus measurements.

The widget only collects settings and shows results. The work is done by the logic classes in
SlicerLegSegNetLib (segmentation and measurements on the scene, model weights and packages), which are tested
outside Slicer on PyPI slicer-core. Segmentation runs in a worker thread, so the views stay responsive and
Cancel answers at once; the scene is changed on the main thread when the work is done.
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

from SlicerLegSegNetLib import status_texts  # noqa: E402
from SlicerLegSegNetLib.model_logic import THRESHOLD_CHOICE, ModelLogic, engine_choices  # noqa: E402
from SlicerLegSegNetLib.segmentation_logic import (  # noqa: E402
    DEFAULT_IMAT_FAT_FRACTION, EXPORT_FORMATS, EXPORT_SLICES, Cancelled, InputError, MeasurementSettings,
    SegmentationLogic, detect_devices,
)

TASK_POLL_MS = 100  # how often the widget looks at a running segmentation


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
    engineChoice: str = ""  # EngineChoice.key of the chosen engine/model (the engine list's item data)
    device: str = "auto"
    tta: bool = False
    folds: str = ""
    preprocessing: str = ""  # "": what the model declares; else legsegnet or native
    fatVolume: vtkMRMLScalarVolumeNode  # MR Dixon images, for fat fraction per label and IMAT inside muscle
    waterVolume: vtkMRMLScalarVolumeNode
    imatFatFraction: Annotated[float, WithinRange(0.0, 1.0)] = DEFAULT_IMAT_FAT_FRACTION
    muscleBands: str = ""  # LOW:HIGH,... HU; empty: the defaults
    userSites: str = ""  # NAME=S_MM,...
    heightM: Annotated[float, WithinRange(0.0, 2.6)] = 0.0  # 0: from the DICOM PatientSize
    useAxialRange: bool = False
    # Bounded on purpose: for an unbounded float the wrapper sets its spin box's range to -inf..inf.
    rangeFromMm: Annotated[float, WithinRange(-AXIAL_POSITION_LIMIT_MM, AXIAL_POSITION_LIMIT_MM)] = 0.0
    rangeToMm: Annotated[float, WithinRange(-AXIAL_POSITION_LIMIT_MM, AXIAL_POSITION_LIMIT_MM)] = 0.0
    exportFolder: str = ""
    exportFormat: str = EXPORT_FORMATS[0]
    exportSlices: str = EXPORT_SLICES[0]
    exportRangeFromMm: Annotated[float, WithinRange(-AXIAL_POSITION_LIMIT_MM, AXIAL_POSITION_LIMIT_MM)] = 0.0
    exportRangeToMm: Annotated[float, WithinRange(-AXIAL_POSITION_LIMIT_MM, AXIAL_POSITION_LIMIT_MM)] = 0.0
    compareReference: vtkMRMLSegmentationNode  # None: the labels LegSegNet first wrote


class LegSegNetWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._choices = {}  # EngineChoice.key -> EngineChoice
        self._devicesDetected = False
        self._shownChoiceKey = None  # the engine whose model status the model section shows
        self._task = None  # the running SegmentationTask
        self._sitePoints = None  # the markup points of the shown sites, observed for moves
        self._taskTimer = None
        self._started = 0.0
        self._downloading = False
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

        self._fillCombo(self.ui.exportFormatComboBox, status_texts.EXPORT_FORMAT_LABELS)
        self._fillCombo(self.ui.preprocessingComboBox, status_texts.PREPROCESSING_LABELS)
        self.ui.preprocessingComboBox.currentIndexChanged.connect(
            lambda: self._storeComboData(self.ui.preprocessingComboBox, "preprocessing"))
        self._fillCombo(self.ui.exportSlicesComboBox, status_texts.EXPORT_SLICE_LABELS)
        self.ui.engineComboBox.currentIndexChanged.connect(self.onEngineChanged)
        self.ui.deviceComboBox.currentIndexChanged.connect(self.onDeviceChanged)
        self.ui.exportFormatComboBox.currentIndexChanged.connect(
            lambda: self._storeComboData(self.ui.exportFormatComboBox, "exportFormat"))
        self.ui.exportSlicesComboBox.currentIndexChanged.connect(
            lambda: self._storeComboData(self.ui.exportSlicesComboBox, "exportSlices"))
        self.ui.exportFolderPathLineEdit.currentPathChanged.connect(self.onExportFolderChanged)
        self.ui.downloadModelButton.clicked.connect(self.onDownloadModel)
        self.ui.installModelButton.clicked.connect(self.onInstallModel)
        self.ui.removeModelButton.clicked.connect(self.onRemoveModel)
        self.ui.installDependenciesButton.clicked.connect(self.onInstallDependencies)
        self.ui.setRangeFromButton.clicked.connect(lambda: self.onSetRangeFromSliceView("rangeFromMm"))
        self.ui.setRangeToButton.clicked.connect(lambda: self.onSetRangeFromSliceView("rangeToMm"))
        self.ui.applyButton.clicked.connect(self.onApplyButton)
        self.ui.updateMeasurementsButton.clicked.connect(self.onUpdateMeasurements)
        self.ui.show3DButton.toggled.connect(self.onShow3D)
        self.ui.setExportRangeFromButton.clicked.connect(lambda: self.onSetExportRangeFromSliceView("exportRangeFromMm"))
        self.ui.setExportRangeToButton.clicked.connect(lambda: self.onSetExportRangeFromSliceView("exportRangeToMm"))
        self.ui.exportButton.clicked.connect(self.onExportTrainingPairs)
        self.ui.compareButton.clicked.connect(lambda: self.onCompare(self._parameterNode.compareReference))
        self.ui.compareFileButton.clicked.connect(self.onCompareWithFile)

        self._populateEngineChoices()
        self.initializeParameterNode()

    def cleanup(self):
        if self._task is not None:
            self._task.cancel()
        self.removeObservers()

    def onReload(self):
        """Developer mode's Reload re-reads only this file: drop the libraries so that edits to them load too."""
        for name in [name for name in sys.modules if name.split(".")[0] in ("LegSegNetLib", "SlicerLegSegNetLib")]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def enter(self):
        self.initializeParameterNode()
        self._populateDevices()
        self._updateModelSection()

    def exit(self):
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event):
        if self._task is not None:
            self._task.cancel()
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
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateFromParameterNode)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateFromParameterNode)
            self._updateFromParameterNode()

    def _updateFromParameterNode(self, caller=None, event=None):
        """Show the settings the parameter node holds in the widgets it does not connect itself."""
        node = self._parameterNode
        if not node:
            return
        self._selectComboData(self.ui.engineComboBox, node.engineChoice)
        self._selectComboData(self.ui.deviceComboBox, node.device)
        self._selectComboData(self.ui.exportFormatComboBox, node.exportFormat)
        self._selectComboData(self.ui.preprocessingComboBox, node.preprocessing)
        self._selectComboData(self.ui.exportSlicesComboBox, node.exportSlices)
        if self.ui.exportFolderPathLineEdit.currentPath != node.exportFolder:
            self.ui.exportFolderPathLineEdit.currentPath = node.exportFolder
        if self._shownChoiceKey != self._currentChoice().key:  # not on every keystroke: it reads the model folder
            self._updateModelSection()
        self._updateButtons()

    def _updateButtons(self):
        node = self._parameterNode
        running = self._task is not None or self._downloading
        hasInput = bool(node and node.inputVolume)
        hasResult = bool(node and node.outputSegmentation and node.inputVolume)
        self.ui.applyButton.enabled = hasInput or running
        self.ui.applyButton.text = "Cancel" if running else "Segment leg"
        self.ui.applyButton.toolTip = ("Stop after the current batch of slices; nothing is changed." if running
                                       else "Segment every axial slice of the CT into SAT, muscle, IMAT and bone.")
        for widget in (self.ui.inputsCollapsibleButton, self.ui.modelCollapsibleButton,
                       self.ui.optionsCollapsibleButton, self.ui.measuringCollapsibleButton,
                       self.ui.outputsCollapsibleButton,
                       self.ui.compareCollapsibleButton, self.ui.trainingCollapsibleButton):
            widget.enabled = not running
        self.ui.updateMeasurementsButton.enabled = hasResult and not running
        self.ui.show3DButton.enabled = hasResult and not running
        self.ui.exportButton.enabled = hasResult and not running
        self.ui.compareButtonsWidget.enabled = hasResult and not running
        self.ui.axialRangeWidget.enabled = bool(node and node.useAxialRange)
        self.ui.exportRangeWidget.enabled = bool(node and node.exportSlices == "range")

    # ---- combo boxes carry their keys as item data ------------------------------------------------------------

    @staticmethod
    def _fillCombo(combo, labelsByKey):
        wasBlocked = combo.blockSignals(True)  # refilling must not overwrite the saved choice
        combo.clear()
        for key, label in labelsByKey.items():
            combo.addItem(label, key)
        combo.blockSignals(wasBlocked)

    @staticmethod
    def _selectComboData(combo, key):
        index = combo.findData(key)
        if index >= 0 and index != combo.currentIndex:
            wasBlocked = combo.blockSignals(True)
            combo.currentIndex = index
            combo.blockSignals(wasBlocked)

    def _storeComboData(self, combo, parameterName):
        if self._parameterNode and combo.currentData is not None:
            setattr(self._parameterNode, parameterName, combo.currentData)

    def onExportFolderChanged(self, path):
        if self._parameterNode:
            self._parameterNode.exportFolder = path

    # ---- engine, model weights and dependencies ---------------------------------------------------------------

    def _populateEngineChoices(self):
        try:
            choices = engine_choices()
        except ValueError as error:  # a broken site registry file: still offer the threshold engine
            slicer.util.errorDisplay(f"LegSegNet model registry: {error}")
            choices = [THRESHOLD_CHOICE]
        self._choices = {choice.key: choice for choice in choices}
        self._fillCombo(self.ui.engineComboBox, {choice.key: choice.label for choice in choices})
        if self._parameterNode:
            self._updateFromParameterNode()

    def _currentChoice(self):
        return self._choices.get(self.ui.engineComboBox.currentData, THRESHOLD_CHOICE)

    def onEngineChanged(self, index=None):
        if self._parameterNode:
            self._parameterNode.engineChoice = self._currentChoice().key
        self._updateModelSection()

    def _updateModelSection(self):
        choice = self._currentChoice()
        self._shownChoiceKey = choice.key
        status = status_texts.engine_status(choice)
        self.ui.modelStatusLabel.text = status.text
        self.ui.modelButtonsWidget.visible = choice.needs_model
        self.ui.downloadModelButton.text = status.download_action or "Download"
        self.ui.downloadModelButton.enabled = status.download_action is not None
        self.ui.removeModelButton.enabled = status.removable
        self.ui.ttaCheckBox.enabled = choice.needs_model
        self.ui.preprocessingComboBox.enabled = choice.needs_model
        self.ui.foldsLineEdit.enabled = choice.needs_model
        missing = self.logic.models.missingRequirements(choice)
        self.ui.dependenciesLabel.text = ("All installed." if not missing else
                                          "Missing: " + ", ".join(r.pip_spec for r in missing))
        self.ui.installDependenciesButton.visible = bool(missing)

    def _populateDevices(self):
        if self._devicesDetected:
            return
        with slicer.util.WaitCursor():
            report = detect_devices()
        self._fillCombo(self.ui.deviceComboBox, dict(report.choices))
        self.ui.deviceInfoLabel.text = report.summary
        self._devicesDetected = True
        if self._parameterNode and self.ui.deviceComboBox.findData(self._parameterNode.device) < 0:
            self._parameterNode.device = "auto"  # a device this machine lacks (a scene saved elsewhere)
        self._updateFromParameterNode()

    def onDeviceChanged(self, index=None):
        self._storeComboData(self.ui.deviceComboBox, "device")

    def onInstallDependencies(self):
        return self._installDependencies(self._currentChoice())

    def _installDependencies(self, choice):
        return self._installPackages(self.logic.models.missingRequirements(choice))

    def _installPackages(self, missing):
        """Ask, then install what is missing; True when everything is ready to use without a restart."""
        models = self.logic.models
        if not missing:
            return True
        if not slicer.util.confirmOkCancelDisplay(models.consentMessage(missing),
                                                  windowTitle="LegSegNet: install Python packages"):
            return False
        try:
            with slicer.util.WaitCursor():
                restartNeeded = models.installRequirements(missing, self._showStatus)
        except Exception as error:
            slicer.util.errorDisplay(f"Installing Python packages failed: {error}\nCheck the network connection "
                                     "(or proxy settings) and try again.", detailedText=traceback.format_exc())
            return False
        finally:
            self._updateModelSection()
        self._showStatus("Python packages installed.")
        self._devicesDetected = False  # torch may be new: detect the devices again
        self._populateDevices()
        if restartNeeded:
            if slicer.util.confirmYesNoDisplay("Slicer must restart to use the newly installed packages. "
                                               "Restart now?"):
                slicer.util.restart()
            return False
        return True

    def onDownloadModel(self):
        return self._downloadModel(self._currentChoice())

    def _downloadModel(self, choice):
        """Ask, then download (or update/repair) the chosen registry model; True when it is installed."""
        action = status_texts.engine_status(choice).download_action
        if action is None or not self._installDependencies(choice):  # verifying the weights needs PyTorch
            return False
        if not slicer.util.confirmOkCancelDisplay(self.logic.models.downloadQuestion(choice, action),
                                                  windowTitle="LegSegNet: download model"):
            return False
        self._setDownloading(True)
        try:
            self.logic.models.download(choice, action, folds=self._parameterNode.folds,
                                       progress=self._onDownloadProgress, cancel=lambda: self._cancelRequested)
            self._showStatus("Model downloaded and verified.")
            return True
        except Cancelled:
            self._showStatus("Download stopped; the next download resumes where it stopped.")
        except Exception as error:
            slicer.util.errorDisplay(f"Downloading the model failed: {error}", detailedText=traceback.format_exc())
        finally:
            self._setDownloading(False)
            self._updateModelSection()
        return False

    def _onDownloadProgress(self, progress):
        self.ui.progressBar.maximum = 1000
        self.ui.progressBar.value = int(1000 * progress.done / progress.total) if progress.total else 0
        self._showStatus(status_texts.download_progress_text(progress))
        slicer.app.processEvents()  # keeps the application alive and lets the user click Cancel

    def onInstallModel(self):
        choice = self._currentChoice()
        if not self._installDependencies(choice):  # validating the checkpoint needs PyTorch
            return
        source = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), "Model .zip (Cancel to pick a folder instead)", "", "Zip archives (*.zip)")
        if not source:
            source = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Model folder (with plans.json)")
        if not source:
            return
        try:
            with slicer.util.WaitCursor():
                folder = self.logic.models.installFrom(source, choice, confirm_replace=lambda: slicer.util.confirmYesNoDisplay(
                    f"Model '{choice.model}' is already installed. Replace it?"))
            if folder is not None:
                self._showStatus(f"Model installed in {folder}")
        except Exception as error:
            slicer.util.errorDisplay(f"Installing the model failed: {error}", detailedText=traceback.format_exc())
        finally:
            self._updateModelSection()

    def onRemoveModel(self):
        choice = self._currentChoice()
        if not slicer.util.confirmYesNoDisplay(f"Delete the installed weights of '{choice.model}'?"):
            return
        with slicer.util.tryWithErrorDisplay("Removing the model failed."):
            self.logic.models.remove(choice)
        self._populateEngineChoices()  # a model installed under its own name leaves the list

    def _ensureReady(self, choice):
        """Dependencies installed and model weights present (offering to get them); True when ready to run."""
        if not self._installDependencies(choice):
            return False
        if status_texts.engine_status(choice).ready:
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
            self._parameterNode.exportSlices = "range"

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
        if self._task is not None or self._downloading:
            self._cancel()
            return
        choice = self._currentChoice()
        try:
            settings = self._settings(choice)
            self.logic.segmentation.checkInput(self._parameterNode.inputVolume)  # before any install or download
        except InputError as error:  # the message says what is wrong with the volume and what to do
            slicer.util.errorDisplay(f"Cannot segment this volume: {error}")
            return
        except ValueError as error:  # settings that cannot work: the message says what to change
            slicer.util.errorDisplay(str(error))
            return
        if not self._ensureReady(choice):
            return
        self._start(settings)

    def _settings(self, choice):
        """The one settings object the logic gets, from the parameter node."""
        node = self._parameterNode
        rangeMm = (node.rangeFromMm, node.rangeToMm) if node.useAxialRange else None
        return choice.settings(device=node.device, tta=node.tta, folds=node.folds, range_mm=rangeMm,
                               preprocessing=node.preprocessing or None, imat_fat_fraction=node.imatFatFraction,
                               measurement=self._measurementSettings())

    def _measurementSettings(self):
        node = self._parameterNode
        return MeasurementSettings.from_text(node.muscleBands, node.userSites, node.heightM or None)

    def _start(self, settings):
        try:
            node = self._parameterNode
            self._task = self.logic.segmentation.startSegmentation(node.inputVolume, settings, fatVolume=node.fatVolume,
                                                                   waterVolume=node.waterVolume)
        except ValueError as error:
            slicer.util.errorDisplay(f"Cannot segment this volume: {error}")
            return
        self._started = time.monotonic()
        self.ui.progressBar.value = 0
        self._showStatus("Starting...")
        self._updateButtons()
        self._task.start()
        self._taskTimer = qt.QTimer()
        self._taskTimer.timeout.connect(self._pollTask)
        self._taskTimer.start(TASK_POLL_MS)

    def _pollTask(self):
        task = self._task
        done, total = task.progress()
        self.ui.progressBar.maximum = max(total, 1)
        self.ui.progressBar.value = done
        if not task.done():
            self._showStatus(status_texts.segmentation_progress_text(done, total, time.monotonic() - self._started))
            return
        self._taskTimer.stop()
        self._task = None
        node = self.logic.getParameterNode()  # also when the user has left the module meanwhile
        try:
            segmentation, table = self.logic.segmentation.finishSegmentation(task, node.outputSegmentation,
                                                                             node.outputTable)
        except Cancelled:
            self._showStatus("Cancelled; nothing was changed.")
            return
        except Exception as error:
            self._showStatus("Segmentation failed; nothing was changed.")
            slicer.util.errorDisplay(f"Segmentation failed: {error}", detailedText=traceback.format_exc())
            return
        finally:
            self._updateButtons()
        node.outputSegmentation = segmentation
        node.outputTable = table
        self._showStatus(status_texts.segmentation_done_text(time.monotonic() - self._started,
                                                             self.logic.segmentation.lastWarnings))
        self._showResults(table)

    def _cancel(self):
        self._cancelRequested = True  # read by a download's cancel check
        if self._task is not None:
            self._task.cancel()
        self._showStatus("Cancelling after the current batch...")

    def isRunning(self):
        return self._task is not None

    def _setDownloading(self, downloading):
        self._downloading = downloading
        self._cancelRequested = False
        if downloading:
            self.ui.progressBar.value = 0
        self._updateButtons()

    def _showStatus(self, text):
        self.ui.statusLabel.text = text

    def _showResults(self, table):
        """Show the tissue table and the slice-area plot beside the slice views; follow moves of the site points."""
        self._observeSitePoints(self.logic.segmentation.sitePoints(table))
        layoutManager = slicer.app.layoutManager()
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotTableView)
        slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(table.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()
        chart = self.logic.segmentation.sliceAreaChart(table)
        if chart is not None:
            slicer.modules.plots.logic().ShowChartInLayout(chart)

    def onUpdateMeasurements(self):
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Measuring the segmentation failed.", waitCursor=True):
            node.outputTable = self.logic.segmentation.computeMeasurements(
                node.outputSegmentation, node.inputVolume, node.outputTable, self._measurementSettings())
            self._showStatus("Measurements updated from the segments as they are now.")
            self._showResults(node.outputTable)

    # ---- landmark sites -----------------------------------------------------------------------------------------

    def _observeSitePoints(self, points):
        if self._sitePoints is not None:
            self.removeObserver(self._sitePoints, slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent,
                                self.onSitePointMoved)
        self._sitePoints = points
        if points is not None:
            self.addObserver(points, slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent, self.onSitePointMoved)

    @vtk.calldata_type(vtk.VTK_INT)
    def onSitePointMoved(self, caller, event, pointIndex):
        """A site point was dragged: measure that site again on the slice nearest to where it was dropped."""
        try:
            row = self.logic.segmentation.remeasureSite(caller, pointIndex)
        except ValueError as error:  # a point renamed or added by the user: not a site
            self._showStatus(f"Not measured again: {error}")
            return
        where = f"at S = {row['slice_S_mm']:.1f} mm" if row["measured"] else f"not measured: {row['reason']}"
        self._showStatus(f"Site {row['site']} ({row['side']} leg) measured again {where}.")

    # ---- training pairs ---------------------------------------------------------------------------------------

    def onExportTrainingPairs(self):
        node = self._parameterNode
        if not node.exportFolder:
            slicer.util.errorDisplay("Choose the output folder for the training pairs first.")
            return
        rangeMm = (node.exportRangeFromMm, node.exportRangeToMm) if node.exportSlices == "range" else None
        try:
            with slicer.util.WaitCursor():
                result = self.logic.segmentation.exportTrainingPairs(
                    node.outputSegmentation, node.inputVolume, node.exportFolder, format=node.exportFormat,
                    slices=node.exportSlices, range_mm=rangeMm)
        except ValueError as error:  # export and range errors say what to change
            self.ui.exportStatusLabel.text = f"Nothing was exported: {error}"
            return
        except Exception as error:
            slicer.util.errorDisplay(f"Exporting training pairs failed: {error}", detailedText=traceback.format_exc())
            return
        self.ui.exportFolderPathLineEdit.addCurrentPathToHistory()
        skipped = f"; {len(result.skipped_empty)} selected slices had no tissue" if result.skipped_empty else ""
        self.ui.exportStatusLabel.text = (f"Exported {len(result.slices)} slices ({len(result.files)} files) "
                                          f"to {node.exportFolder}{skipped}.")

    # ---- comparison with a reference --------------------------------------------------------------------------

    def onCompareWithFile(self):
        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), "Reference label map or segmentation", "",
                                              "Label maps (*.seg.nrrd *.nii.gz *.nii *.nrrd *.mha)")
        if path:
            self.onCompare(path)

    def onCompare(self, reference):
        """Compare the segments as they are now with `reference` (a segmentation node, a file, or None: the labels
        LegSegNet first wrote) and show the table."""
        node = self._parameterNode
        if not self._installPackages(self.logic.models.missingComparisonRequirements()):
            return
        try:
            with slicer.util.WaitCursor():
                table = self.logic.segmentation.compareWithReference(node.outputSegmentation, node.inputVolume,
                                                                     reference)
        except ValueError as error:  # a reference that cannot be compared: the message says what to pick
            self.ui.compareStatusLabel.text = f"Not compared: {error}"
            return
        except Exception as error:
            slicer.util.errorDisplay(f"Comparing with the reference failed: {error}", detailedText=traceback.format_exc())
            return
        self.ui.compareStatusLabel.text = f"Comparison in table '{table.GetName()}'."
        self._showResults(table)

    def onShow3D(self, on):
        if self._parameterNode and self._parameterNode.outputSegmentation:
            with slicer.util.tryWithErrorDisplay("Showing the 3D surfaces failed.", waitCursor=True):
                self.logic.segmentation.showSurface(self._parameterNode.outputSegmentation, on)


class LegSegNetLogic(ScriptedLoadableModuleLogic):
    """Slicer's logic class for the module: the parameter node, plus the logics that do the work."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.segmentation = SegmentationLogic(slicer.mrmlScene)
        self.models = ModelLogic(pip_install=slicer.util.pip_install, pytorch_utils=self._pyTorchUtilsLogic())

    def getParameterNode(self):
        return LegSegNetParameterNode(super().getParameterNode())

    @staticmethod
    def _pyTorchUtilsLogic():
        try:
            import PyTorchUtils
        except ImportError:
            return None
        return PyTorchUtils.PyTorchUtilsLogic()


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
        from LegSegNetLib.tissues import TISSUE_BY_KEY, TISSUES
        from SlicerLegSegNetLib import mrml_segmentation

        self.delayDisplay("Segmenting a synthetic leg phantom")
        volumeNode, truth = self._phantomVolume()
        logic = SegmentationLogic(slicer.mrmlScene)
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

    @staticmethod
    def _waitWhileRunning(widget, timeoutS=120):
        deadline = time.monotonic() + timeoutS
        while widget.isRunning() and time.monotonic() < deadline:
            slicer.app.processEvents()
            time.sleep(0.02)

    def test_widget_runs_and_cancels(self):
        self.delayDisplay("Running the module from its widget")
        volumeNode, _ = self._phantomVolume()
        slicer.util.selectModule("LegSegNet")  # entering the module connects its parameter node
        widget = slicer.modules.legsegnet.widgetRepresentation().self()
        parameters = widget._parameterNode
        parameters.inputVolume = volumeNode
        parameters.engineChoice = THRESHOLD_CHOICE.key
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()

        widget.ui.applyButton.click()
        self.assertTrue(widget.isRunning())
        widget.ui.applyButton.click()  # a second click while running cancels
        self._waitWhileRunning(widget)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)
        self.assertIsNone(parameters.outputSegmentation)

        widget.ui.applyButton.click()
        self._waitWhileRunning(widget)
        self.assertIsNotNone(parameters.outputSegmentation)
        self.assertIsNotNone(parameters.outputTable)
        self.assertEqual(parameters.outputSegmentation.GetSegmentation().GetNumberOfSegments(), 4)
        self.delayDisplay("Widget run and cancel: passed")
