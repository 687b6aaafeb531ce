"""The MRML side of LegSegNet: a CT volume node in, a segmentation node and measurement tables out.

`SegmentationLogic` works wherever the `slicer` MRML API exists: inside 3D Slicer and on PyPI `slicer-core`.
It holds no Qt code; the Slicer module's widget only collects settings and calls it.

All computing (segmentation, measurements, new segments and table contents) happens before the scene is
touched, in a `SegmentationTask` that may run in a worker thread (torch and numpy release the GIL, so the
application stays responsive). Output nodes are then created or updated on the main thread in one step that is
rolled back on any error, so a cancel or a failure leaves the scene exactly as it was.

Each segmentation keeps the labels LegSegNet wrote into it (a hidden labelmap node it references), so that the
slices a user corrected in Segment Editor can be exported as training pairs on their own.
"""

from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import numpy as np
import slicer
import vtk

from LegSegNetLib.device import detect_devices  # noqa: F401 (re-exported for the widget)
from LegSegNetLib.measuring.label_measurements import CT, FatWater, measure_labels
from LegSegNetLib.measuring.sites import height_for_indexes, remeasure_site
from LegSegNetLib.progress import Cancelled  # noqa: F401 (re-exported for the widget)
from LegSegNetLib.reading.label_files import read_label_map
from LegSegNetLib.reading.layout import SliceRange, slice_layout
from LegSegNetLib.reading.validation import InputError, validate_ct
from LegSegNetLib.reading.volume import Volume
from LegSegNetLib.reading.volume_files import patient_height_from_dicom
from LegSegNetLib.segmenting.run import SegmentationResult, run_segmentation
from LegSegNetLib.settings import (  # noqa: F401 (re-exported for the widget)
    DEFAULT_IMAT_FAT_FRACTION, MeasurementSettings, SegmentationSettings, SettingsError,
)
from LegSegNetLib.tissues import LEGSEGNET_LABELS, LabelSet
from LegSegNetLib.training.export import ExportError, export_training_pairs
from LegSegNetLib.training.options import EXPORT_FORMATS
from SlicerLegSegNetLib import mrml_comparison, mrml_segmentation, mrml_sites, mrml_tables

SUMMARY_TABLE_ROLE = "LegSegNetSummaryTable"
SLICE_AREA_TABLE_ROLE = "LegSegNetSliceAreaTable"
SLICE_AREA_CHART_ROLE = "LegSegNetSliceAreaChart"
SITE_POINTS_ROLE = "LegSegNetSitePoints"
# A hidden labelmap node referenced from the segmentation: the labels as LegSegNet made them, before any edit.
ORIGINAL_LABELS_ROLE = "LegSegNetOriginalLabels"
EXPORT_SLICES = ("all", "range", "edited")
DICOM_INSTANCES_ATTRIBUTE = "DICOM.instanceUIDs"  # set by Slicer's DICOM plugins: the SOP instance UIDs, space-separated
PATIENT_SIZE_TAG = "0010,1020"  # DICOM Patient's Size (metres), as Slicer's DICOM database names tags


class InputVolumeError(InputError):
    """The input node cannot be segmented; the message says what to pick instead."""


class OutputNodeError(ValueError):
    """A node given as an output is of the wrong kind; the message says what to pick instead."""


def volume_from_node(volume_node) -> Volume:
    """The node's voxels ([k, j, i] view, not a copy) and IJK-to-RAS geometry in world coordinates: a linear parent
    transform is applied (so the axial direction and positions in mm are the ones shown); a non-linear one is
    refused (InputVolumeError)."""
    if volume_node is None:
        raise InputVolumeError("no input volume: select a CT volume")
    if not volume_node.IsA("vtkMRMLScalarVolumeNode") or volume_node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputVolumeError(f"'{volume_node.GetName()}' is not a scalar CT volume: select a CT volume in HU")
    image = volume_node.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        raise InputVolumeError(f"'{volume_node.GetName()}' holds no image data: load the CT again")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputVolumeError(f"'{volume_node.GetName()}' has several components per voxel: select a grey-level CT")
    return _node_volume(volume_node, volume_node)


def node_to_world(node) -> np.ndarray:
    """The 4x4 matrix of the node's parent transforms (identity without one); InputVolumeError when non-linear."""
    transform = node.GetParentTransformNode()
    if transform is None:
        return np.eye(4)
    if not transform.IsTransformToWorldLinear():
        raise InputVolumeError(
            f"'{node.GetName()}' is under the non-linear transform '{transform.GetName()}', which LegSegNet cannot "
            "follow slice by slice: harden it first (Data module: right-click the volume, Harden transform)")
    matrix = vtk.vtkMatrix4x4()
    transform.GetMatrixTransformToWorld(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def check_output_nodes(outputSegmentation=None, outputTable=None) -> None:
    """OutputNodeError for an output node of the wrong kind (say, a volume picked as the output table)."""
    for node, class_name, kind in ((outputSegmentation, "vtkMRMLSegmentationNode", "segmentation"),
                                   (outputTable, "vtkMRMLTableNode", "table")):
        if node is not None and not node.IsA(class_name):
            raise OutputNodeError(f"'{node.GetName()}' ({node.GetClassName()}) cannot hold the output {kind}: pick a "
                                  f"{kind} node, or none to have a new one created")


def _copy_of(volume_node) -> Volume:
    """The node's voxels, copied (the node may change while a task runs), and its world geometry."""
    volume = volume_from_node(volume_node)
    return Volume(volume.array.copy(), volume.ijk_to_ras)


def _node_volume(volume_node, placed_by) -> Volume:
    """The node's voxels and geometry in world coordinates, through the parent transforms of `placed_by` (the node
    itself, or the segmentation a hidden labels node belongs to)."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return Volume(slicer.util.arrayFromVolume(volume_node),
                  node_to_world(placed_by) @ slicer.util.arrayFromVTKMatrix(matrix))


def case_source_name(text: str) -> str:
    """A node name made safe for file names (it also names NIfTI pairs): runs of other characters become '_'."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_.") or "scan"


def settings_from_keywords(engine=None, slice_range=None, **fields) -> SegmentationSettings:
    """Settings from process()'s keywords: an engine name (a ready engine brings its own), slice_range as a
    (start, stop) pair, and any other SegmentationSettings field."""
    if isinstance(engine, str):
        fields["engine"] = engine
    if slice_range is not None:
        fields["slice_range"] = SliceRange(*slice_range)
    return SegmentationSettings(**fields)


class SegmentationTask:
    """One segmentation's computing, apart from the scene: run() builds the engine (loading a model), segments
    and measures a copy of the volume; it touches no MRML node, so it may run in a worker thread. cancel() asks it
    to stop after the current batch of slices; done(), progress() and result() may be read from any thread."""

    def __init__(self, volume: Volume, settings: SegmentationSettings, engine, volume_node,
                 world_to_node: Optional[np.ndarray] = None, fat_water: Optional[FatWater] = None):
        self.volume, self.settings, self.engine, self.volume_node = volume, settings, engine, volume_node
        # `volume` is in world coordinates (parent transforms applied); this matrix leads back to the node's own
        self.world_to_node = np.eye(4) if world_to_node is None else world_to_node
        self.fat_water = fat_water
        self._cancel = threading.Event()
        self._finished = threading.Event()
        self._progress = (0, 0)
        self._result: Optional[SegmentationResult] = None
        self._error: Optional[BaseException] = None

    def run(self, progress=None) -> None:
        """Do the work; errors are kept for result(). `progress(done, total)` returning False cancels too."""
        def report(done, total):
            self._progress = (done, total)
            if self._cancel.is_set():
                return False
            return None if progress is None else progress(done, total)

        try:
            engine = self.engine or _create_engine(self.settings)
            self._result = run_segmentation(self.volume, engine, self.settings, report, self.fat_water)
        except BaseException as error:  # kept and re-raised on the main thread by result()
            self._error = error
        finally:
            self._finished.set()

    def start(self) -> threading.Thread:
        """run() in a daemon worker thread; poll done() (for example from a Qt timer) and then finish."""
        thread = threading.Thread(target=self.run, name="legsegnet-segmentation", daemon=True)
        thread.start()
        return thread

    def cancel(self) -> None:
        self._cancel.set()

    def done(self) -> bool:
        return self._finished.is_set()

    def progress(self) -> tuple:
        """(slices done, slices to do) so far."""
        return self._progress

    def result(self) -> SegmentationResult:
        if not self.done():
            raise RuntimeError("the segmentation is still running: wait until done() is True")
        if self._error is not None:
            raise self._error
        return self._result


def _require_four_tissues(segmentation_node, error_class, what: str, instead: str) -> None:
    """Refuse (error_class) a segmentation holding a model's own labels where only the four tissues make sense."""
    label_set, _ = mrml_segmentation.label_set_of(segmentation_node)
    if not label_set.is_legsegnet_tissues:
        keys = ", ".join(label.key for label in label_set.labels)
        raise error_class(f"{what}; this segmentation holds a model's own labels ({keys}): {instead}")


def _create_engine(settings: SegmentationSettings):
    from LegSegNetLib.segmenting.engines.factory import create_engine  # torch is imported only for a model engine

    return create_engine(settings)


class _Transaction:
    """Undo log for one output step: nodes created are removed and node changes restored on error."""

    def __init__(self, scene):
        self.scene = scene
        self.created = []
        self.undo_steps = []

    def add_node(self, class_name: str, name: str):
        node = self.scene.AddNewNodeByClass(class_name, name)
        self.created.append(node)
        return node

    def apply(self, change) -> None:
        """Run change.apply(), remembering change.restore() for a rollback."""
        self.undo_steps.append(change.restore)
        change.apply()

    def rollback(self) -> None:
        for restore in reversed(self.undo_steps):
            restore()
        for node in reversed(self.created):  # none has a display node yet: those are added after the commit
            if node.GetScene() is not None:
                self.scene.RemoveNode(node)


def _application_dicom_value():
    """dicom_value through the application's DICOM database, or None where there is none (slicer-core)."""
    database = getattr(slicer, "dicomDatabase", None)
    if database is None:
        return None
    return lambda instance_uid, tag: database.fileValue(database.fileForInstance(instance_uid), tag)


class SegmentationLogic:
    """Segment a CT volume node into the four LegSegNet tissues and measure them.

    dicom_value(instance_uid, tag) -> str: a tag's value ("0010,1020") of a DICOM instance, "" when unknown, to read
    the patient's height of a volume loaded from DICOM; default: Slicer's DICOM database, when there is one."""

    def __init__(self, scene=None, dicom_value=None):
        self.scene = scene if scene is not None else slicer.mrmlScene
        self.dicom_value = dicom_value
        self.lastWarnings = ()  # messages about a suspicious input from the last process() (validation.validate_ct)

    def patientHeight(self, volumeNode) -> Optional[float]:
        """The DICOM PatientSize (metres) of a volume loaded from DICOM, from its first instance; None when unknown:
        a volume from a file, no DICOM database, no value, or an implausible one (which is also warned about)."""
        instances = (volumeNode.GetAttribute(DICOM_INSTANCES_ATTRIBUTE) or "").split()
        dicom_value = self.dicom_value or _application_dicom_value()
        if not instances or dicom_value is None:
            return None
        return patient_height_from_dicom(dicom_value(instances[0], PATIENT_SIZE_TAG), f"'{volumeNode.GetName()}'")

    def _with_patient_height(self, volume: Volume, volume_node) -> Volume:
        volume.patient_height_m = self.patientHeight(volume_node)
        return volume

    # ---- segmentation -----------------------------------------------------------------------------------------

    def process(self, inputVolume, outputSegmentation=None, outputTable=None, *, settings=None, engine=None,
                progress=None, fatVolume=None, waterVolume=None, **options):
        """Segment `inputVolume` and measure it; returns (segmentationNode, tissueTableNode).

        settings: a SegmentationSettings (engine, model, folds, TTA, device, axial range...); scripts may instead
        give its fields as keywords (engine="threshold", range_mm=(-120, -40), slice_range=(0, 10)...). engine may
        also be a ready SliceEngine, used with the settings' axial range. progress(done, total) is called after each
        batch of slices; returning False cancels (progress.Cancelled is raised, the scene is untouched).
        Given output nodes are reused: only their LegSegNet segments / table contents are replaced.
        The input is checked first (validation.InputError for a volume that is not a CT in HU); warnings about
        a merely suspicious input are in `lastWarnings` afterwards. fatVolume, waterVolume: the Dixon images of an
        MR input (same grid), for fat fractions per label and IMAT above settings.imat_fat_fraction in muscles.
        """
        check_output_nodes(outputSegmentation, outputTable)
        task = self.startSegmentation(inputVolume, settings, engine, fatVolume, waterVolume, **options)
        task.run(progress)
        return self.finishSegmentation(task, outputSegmentation, outputTable)

    def startSegmentation(self, inputVolume, settings=None, engine=None, fatVolume=None, waterVolume=None,
                          **options) -> "SegmentationTask":
        """Check the input and copy its voxels (main thread); the returned task's run() does the work and may run
        in a worker thread; finishSegmentation() then writes the results into the scene (main thread)."""
        self.lastWarnings = ()
        if settings is None:
            settings = settings_from_keywords(engine, **options)
        fat_water = None
        if (fatVolume is None) != (waterVolume is None):
            raise InputError("give both the fat and the water image (the fat fraction needs the two Dixon images)")
        if fatVolume is not None:
            fat_water = FatWater(_copy_of(fatVolume), _copy_of(waterVolume), settings.imat_fat_fraction)
        ready_engine = engine if engine is not None and not isinstance(engine, str) else None
        volume = self._with_patient_height(_copy_of(inputVolume), inputVolume)
        return SegmentationTask(volume, settings, ready_engine, inputVolume,
                                np.linalg.inv(node_to_world(inputVolume)), fat_water)

    def finishSegmentation(self, task: "SegmentationTask", outputSegmentation=None, outputTable=None):
        """Put a finished task's labels and measurements into the scene; re-raises the task's error (the scene is
        then untouched). Returns (segmentationNode, tissueTableNode). The segmentation is put under the input's parent
        transform, with the labels in the input node's own coordinates."""
        check_output_nodes(outputSegmentation, outputTable)
        result = task.result()
        inputVolume = task.volume_node
        labels = Volume(result.labels.array, task.world_to_node @ result.labels.ijk_to_ras)
        new_segments = mrml_segmentation.tissue_segments(labels, result.label_set, result.modality)
        with self._transaction() as transaction:
            segmentation_node = outputSegmentation or self._new_segmentation(transaction, inputVolume)
            transaction.apply(_ParentTransform(segmentation_node, inputVolume.GetTransformNodeID()))
            transaction.apply(mrml_segmentation.SegmentReplacement(segmentation_node, new_segments, result.label_set))
            self._keep_original_labels(transaction, segmentation_node, labels)
            table_node = self._write_tables(transaction, result.measurements, outputTable, inputVolume, result.warnings,
                                            result.label_set)
            self._write_sites(transaction, result.measurements, table_node, inputVolume, segmentation_node,
                              task.settings.measurement, result.label_set)
        self._make_displayable(segmentation_node, inputVolume)
        self._show_site_points(table_node)
        self.lastWarnings = result.warnings
        return segmentation_node, table_node

    def checkInput(self, inputVolume) -> tuple:
        """Raise validation.InputError for a volume that cannot be segmented, before any model is loaded;
        return the warnings about a suspicious one (process() checks again)."""
        return tuple(validate_ct(volume_from_node(inputVolume)))

    def _new_segmentation(self, transaction: _Transaction, volume_node):
        node = transaction.add_node("vtkMRMLSegmentationNode", f"{volume_node.GetName()} LegSegNet")
        self._place_beside(node, volume_node)
        return node

    @staticmethod
    def _make_displayable(segmentation_node, volume_node) -> None:
        """Give the segmentation a display node and the input's geometry as its reference geometry, where it has
        none: a segmentation made by a node selector ("Create new Segmentation") comes without either."""
        segmentation_node.CreateDefaultDisplayNodes()  # keeps an existing display node
        geometry = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
        if not segmentation_node.GetSegmentation().GetConversionParameter(geometry):
            segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)

    def _keep_original_labels(self, transaction: _Transaction, segmentation_node, labels: Volume) -> None:
        """Keep the labels as LegSegNet made them with the segmentation, so that slices the user edits later can
        be told apart: a labelmap node hidden from editors, under the segmentation in the subject hierarchy (saved
        with the scene), referenced by ORIGINAL_LABELS_ROLE. A re-run replaces its voxels."""
        node = segmentation_node.GetNodeReference(ORIGINAL_LABELS_ROLE)
        if node is None:
            node = transaction.add_node("vtkMRMLLabelMapVolumeNode", f"{segmentation_node.GetName()} original labels")
            node.SetHideFromEditors(True)
            self._place_under(node, segmentation_node)
            transaction.apply(_NodeReference(segmentation_node, ORIGINAL_LABELS_ROLE, node.GetID()))
        transaction.apply(_VolumeContent(node, labels))

    def originalLabels(self, segmentationNode):
        """The labels LegSegNet wrote into this segmentation (a Volume on the input's grid, in world coordinates like
        volume_from_node), or None when the segmentation was not made by process() (for example loaded from a
        .seg.nrrd file)."""
        node = segmentationNode.GetNodeReference(ORIGINAL_LABELS_ROLE)
        if node is None or node.GetImageData() is None:
            return None
        return _node_volume(node, segmentationNode)

    def showSurface(self, segmentationNode, on: bool = True) -> None:
        """Show the segments as 3D surfaces (built from the labelmaps), or hide them and free the surfaces."""
        display = segmentationNode.GetDisplayNode()
        if display is None:
            segmentationNode.CreateDefaultDisplayNodes()
            display = segmentationNode.GetDisplayNode()
        if on:
            segmentationNode.CreateClosedSurfaceRepresentation()
        else:
            segmentationNode.RemoveClosedSurfaceRepresentation()
        display.SetVisibility3D(bool(on))

    # ---- measurements -----------------------------------------------------------------------------------------

    def computeMeasurements(self, segmentationNode, volumeNode, outputTable=None, measurement=None):
        """Measure the LegSegNet segments as they are now (after any Segment Editor edits); returns the tissue
        table node (reused when given, with its summary, slice-area and sites tables, chart and site points). The
        input's warnings stay in the summary table and in `lastWarnings`.
        measurement: a MeasurementSettings (muscle bands, user sites, height); default: the defaults."""
        measurement = measurement or MeasurementSettings()
        check_output_nodes(outputTable=outputTable)
        volume = self._with_patient_height(volume_from_node(volumeNode), volumeNode)
        label_set, modality = mrml_segmentation.label_set_of(segmentationNode)
        labels = volume.with_array(
            mrml_segmentation.labels_from_segmentation(segmentationNode, volumeNode, label_set=label_set))
        measurements = measure_labels(volume, labels, label_set, modality, measurement=measurement)
        warnings = tuple(validate_ct(volume, hounsfield=modality == CT))  # still true of the input: kept in the table
        with self._transaction() as transaction:
            table_node = self._write_tables(transaction, measurements, outputTable, volumeNode, warnings, label_set)
            self._write_sites(transaction, measurements, table_node, volumeNode, segmentationNode, measurement,
                              label_set)
        self._show_site_points(table_node)
        self.lastWarnings = warnings
        return table_node

    def _show_site_points(self, table_node) -> None:
        """Display the site points (after the commit, like the segmentation's display node)."""
        points = self.sitePoints(table_node)
        if points is not None:
            points.CreateDefaultDisplayNodes()

    def sitePoints(self, tableNode):
        """The markup points node of the sites (one point per measured site and leg), or None."""
        return tableNode.GetNodeReference(SITE_POINTS_ROLE)

    def sitesTable(self, tableNode):
        return tableNode.GetNodeReference(mrml_sites.SITES_TABLE_ROLE)

    def remeasureSite(self, pointsNode, pointIndex: int) -> dict:
        """Measure the site of one moved point again, on the slice nearest to its S position, and put the new
        values into its row of the sites table; returns that row. For the widget to call on the points node's
        PointModifiedEvent (the point index is the event's call data)."""
        site, side = mrml_sites.site_of_label(pointsNode.GetNthControlPointLabel(pointIndex))
        volume_node = pointsNode.GetNodeReference(mrml_sites.VOLUME_ROLE)
        segmentation_node = pointsNode.GetNodeReference(mrml_sites.SEGMENTATION_ROLE)
        table_node = pointsNode.GetNodeReference(mrml_sites.SITES_TABLE_ROLE)
        settings = mrml_sites.stored_settings(pointsNode)
        position = [0.0, 0.0, 0.0]
        pointsNode.GetNthControlPointPosition(pointIndex, position)
        volume = self._with_patient_height(volume_from_node(volume_node), volume_node)
        labels = volume.with_array(mrml_segmentation.labels_from_segmentation(segmentation_node, volume_node))
        row = remeasure_site(volume, labels, site, side, position[2], settings, height_for_indexes(settings, volume))
        rows = mrml_sites.replace_row(mrml_sites.table_rows(table_node), row)
        with self._transaction() as transaction:
            transaction.apply(mrml_tables.TableReplacement(
                table_node, mrml_tables.site_table_content(rows, settings.muscle_bands)))
        if row["measured"]:
            pointsNode.SetNthControlPointDescription(pointIndex, mrml_sites.point_description(row))
        return row


    # ---- comparison with a reference ----------------------------------------------------------------------------

    def compareWithReference(self, segmentationNode, volumeNode, reference=None, outputTable=None):
        """Compare the LegSegNet segments as they are now with a reference, per tissue (Dice, HD95, ASSD, volumes
        and their difference, mean HU: mrml_comparison.COMPARISON_COLUMNS); returns the table node (reused when
        given). reference: a segmentation node (its tissue segments, by tag, ID or name), a labelmap volume node
        or label-map file (.seg.nrrd .nii.gz ...) holding tissue values (placed, like the CT's own file, by the
        volume's parent transforms), or None: the labels LegSegNet first wrote
        into this segmentation, which measures the corrections made since. Surface distances need MONAI
        (comparison.MissingPackageError otherwise); ValueError says what to pick instead for a bad reference."""
        _require_four_tissues(segmentationNode, ValueError, "comparisons cover LegSegNet's four tissues",
                              "compare segmentations of the four tissues only")
        ct = volume_from_node(volumeNode)
        labels = ct.with_array(mrml_segmentation.labels_from_segmentation(segmentationNode, volumeNode))
        reference_labels, name, notes = self._reference_labels(segmentationNode, volumeNode, ct, reference)
        content = mrml_comparison.comparison_table_content(ct, labels, reference_labels, notes)
        with self._transaction() as transaction:
            table_node = outputTable or self._new_table(
                transaction, f"{segmentationNode.GetName()} vs {name}", volumeNode)
            transaction.apply(mrml_tables.TableReplacement(table_node, content))
        return table_node

    def _reference_labels(self, segmentation_node, volume_node, ct: Volume, reference) -> tuple:
        """(tissue labels as a Volume, a name for the table, notes) of a compareWithReference reference."""
        if reference is None:
            original = self.originalLabels(segmentation_node)
            if original is None:
                raise ValueError(f"'{segmentation_node.GetName()}' does not hold the labels LegSegNet first wrote "
                                 "(it was not made by Segment leg): pick a reference segmentation instead")
            return original, "original labels", ()
        if isinstance(reference, (str, Path)):  # made on the CT's file: placed by the volume's parent transforms
            read = read_label_map(reference)
            placed = Volume(read.labels.array, node_to_world(volume_node) @ read.labels.ijk_to_ras)
            return placed, Path(reference).name, read.notes
        if reference.IsA("vtkMRMLSegmentationNode"):
            ids = mrml_comparison.reference_segment_ids(reference)
            labels = mrml_segmentation.labels_from_segmentation(reference, volume_node, ids)
            return ct.with_array(labels), reference.GetName(), ()
        if reference.IsA("vtkMRMLLabelMapVolumeNode"):
            return _node_volume(reference, reference), reference.GetName(), ()
        raise ValueError(f"'{reference.GetName()}' is neither a segmentation nor a labelmap: pick a reference "
                         "segmentation")

    # ---- training pairs ---------------------------------------------------------------------------------------

    def exportTrainingPairs(self, segmentationNode, volumeNode, outputFolder, format="nnunet", slices="all",
                            slice_range=None, range_mm=None, name=None):
        """Export the slices of `volumeNode` and the LegSegNet segments as they are now (after any Segment Editor
        edits) as training pairs (training.export.export_training_pairs: format "nnunet" appends to an nnU-Net v2
        raw dataset, "nifti" writes image/label pairs); returns its ExportResult.

        slices: "all"; "range": slice_range (start, stop) display slice indices, half-open, or range_mm (two RAS S
        positions, mm); "edited": only the slices whose labels differ from the ones LegSegNet wrote (within the
        range when one is given). name: recorded as the cases' source (default: the volume's name).
        Raises training.export.ExportError (a ValueError) with what to do instead.
        """
        if slices not in EXPORT_SLICES:
            raise ExportError(f"unknown slice choice {slices!r}; choose one of {', '.join(EXPORT_SLICES)}")
        has_range = slice_range is not None or range_mm is not None
        if has_range != (slices == "range") and slices != "edited":
            raise ExportError("give an axial range (slice indices or mm) with slices='range' (or 'edited'), "
                              "and none with slices='all'")
        _require_four_tissues(segmentationNode, ExportError, "training pairs hold LegSegNet's four tissues",
                              "export it as a .seg.nrrd and train that model with its own nnU-Net dataset")
        volume = volume_from_node(volumeNode)
        labels = volume.with_array(mrml_segmentation.labels_from_segmentation(segmentationNode, volumeNode))
        reference = self._original_for_export(segmentationNode) if slices == "edited" else None
        selection = settings_from_keywords(slice_range=slice_range, range_mm=range_mm)  # checks the two ranges once
        return export_training_pairs(volume, labels, outputFolder, format=format,
                                     slice_range=selection.slices_to_segment(slice_layout(volume)), reference=reference,
                                     name=case_source_name(name or volumeNode.GetName()))

    def _original_for_export(self, segmentation_node) -> Volume:
        from LegSegNetLib.training.export import ExportError

        original = self.originalLabels(segmentation_node)
        if original is None:
            raise ExportError(f"'{segmentation_node.GetName()}' does not hold the labels LegSegNet first wrote (it "
                              "was not made by Segment leg, or came from a file), so edited slices cannot be told apart: "
                              "export all slices or a range instead")
        return original

    def summaryTable(self, tableNode):
        return tableNode.GetNodeReference(SUMMARY_TABLE_ROLE)

    def sliceAreaTable(self, tableNode):
        return tableNode.GetNodeReference(SLICE_AREA_TABLE_ROLE)

    def sliceAreaChart(self, tableNode):
        return tableNode.GetNodeReference(SLICE_AREA_CHART_ROLE)

    def _write_tables(self, transaction: _Transaction, measurements, table_node, volume_node, warnings=(),
                      label_set: LabelSet = LEGSEGNET_LABELS):
        base_name = f"{volume_node.GetName()} LegSegNet"
        table_node = table_node or self._new_table(transaction, f"{base_name} tissues", volume_node)
        transaction.apply(mrml_tables.TableReplacement(table_node, mrml_tables.tissue_table_content(measurements)))
        referenced = (
            (SUMMARY_TABLE_ROLE, f"{base_name} summary", mrml_tables.summary_table_content(measurements, warnings)),
            (SLICE_AREA_TABLE_ROLE, f"{base_name} slice areas",
             mrml_tables.slice_area_table_content(measurements, label_set)),
        )
        for role, name, content in referenced:
            node = self._referenced_table(transaction, table_node, role, name)
            transaction.apply(mrml_tables.TableReplacement(node, content))
        if self.sliceAreaChart(table_node) is None:
            self._add_chart(transaction, table_node, f"{base_name} slice areas chart", label_set)
        return table_node

    def _write_sites(self, transaction: _Transaction, measurements, table_node, volume_node, segmentation_node,
                     settings: MeasurementSettings, label_set: LabelSet) -> None:
        """The sites table beside the tissue tables, and a markup point per measured site and leg (LegSegNet's
        tissues only: a model's own labels have no sites)."""
        if not label_set.is_legsegnet_tissues:
            self._empty_sites(transaction, table_node, settings)
            return
        base_name = f"{volume_node.GetName()} LegSegNet"
        sites_table = self._referenced_table(transaction, table_node, mrml_sites.SITES_TABLE_ROLE, f"{base_name} sites")
        transaction.apply(mrml_tables.TableReplacement(
            sites_table, mrml_tables.site_table_content(measurements.site_rows, settings.muscle_bands)))
        points = self.sitePoints(table_node)
        if points is None:
            points = transaction.add_node("vtkMRMLMarkupsFiducialNode", f"{base_name} sites")
            self._place_under(points, table_node)
            transaction.apply(_NodeReference(table_node, SITE_POINTS_ROLE, points.GetID()))
        for role, node in ((mrml_sites.VOLUME_ROLE, volume_node), (mrml_sites.SEGMENTATION_ROLE, segmentation_node),
                           (mrml_sites.SITES_TABLE_ROLE, sites_table)):
            transaction.apply(_NodeReference(points, role, node.GetID()))
        mrml_sites.store_settings(points, settings)
        transaction.apply(mrml_sites.SitePoints(points, measurements.site_rows))

    def _empty_sites(self, transaction: _Transaction, table_node, settings: MeasurementSettings) -> None:
        """Empty the sites table and points an earlier run wrote for this output, so that its numbers do not pass
        for this run's."""
        sites_table, points = self.sitesTable(table_node), self.sitePoints(table_node)
        if sites_table is not None:
            transaction.apply(mrml_tables.TableReplacement(
                sites_table, mrml_tables.site_table_content([], settings.muscle_bands)))
        if points is not None:
            transaction.apply(mrml_sites.SitePoints(points, []))

    def _new_table(self, transaction: _Transaction, name: str, volume_node):
        node = transaction.add_node("vtkMRMLTableNode", name)
        self._place_beside(node, volume_node)
        return node

    def _referenced_table(self, transaction: _Transaction, table_node, role: str, name: str):
        node = table_node.GetNodeReference(role)
        if node is None:
            node = transaction.add_node("vtkMRMLTableNode", name)
            self._place_under(node, table_node)
            transaction.apply(_NodeReference(table_node, role, node.GetID()))
        return node

    def _add_chart(self, transaction: _Transaction, table_node, name: str, label_set: LabelSet) -> None:
        chart = mrml_tables.add_slice_area_chart(transaction.add_node, self.sliceAreaTable(table_node), name, label_set)
        self._place_under(chart, table_node)
        transaction.apply(_NodeReference(table_node, SLICE_AREA_CHART_ROLE, chart.GetID()))

    # ---- scene helpers ----------------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self):
        transaction = _Transaction(self.scene)
        try:
            yield transaction
        except BaseException:
            transaction.rollback()
            raise

    def _subject_hierarchy(self):
        return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)

    def _place_beside(self, node, sibling) -> None:
        """Put `node` in the subject hierarchy under `sibling`'s parent (the input volume's study)."""
        hierarchy = self._subject_hierarchy()
        sibling_item = hierarchy.GetItemByDataNode(sibling)
        parent = hierarchy.GetItemParent(sibling_item) if sibling_item else hierarchy.GetSceneItemID()
        self._set_parent(hierarchy, node, parent)

    def _place_under(self, node, parent_node) -> None:
        hierarchy = self._subject_hierarchy()
        parent = hierarchy.GetItemByDataNode(parent_node) or hierarchy.GetSceneItemID()
        self._set_parent(hierarchy, node, parent)

    @staticmethod
    def _set_parent(hierarchy, node, parent_item) -> None:
        item = hierarchy.GetItemByDataNode(node)
        if item:
            hierarchy.SetItemParent(item, parent_item)
        else:  # outside the application no plugin adds items for new nodes
            hierarchy.CreateItem(parent_item, node)


class _NodeReference:
    """A node reference set by a transaction step (undone by restoring the previous target)."""

    def __init__(self, node, role: str, target_id: str):
        self.node, self.role, self.target_id = node, role, target_id
        self.old_target_id = node.GetNodeReferenceID(role)

    def apply(self) -> None:
        self.node.SetNodeReferenceID(self.role, self.target_id)

    def restore(self) -> None:
        self.node.SetNodeReferenceID(self.role, self.old_target_id)


class _ParentTransform:
    """A node's parent transform set by a transaction step (undone by restoring the previous one)."""

    def __init__(self, node, transform_id):
        self.node, self.transform_id = node, transform_id
        self.old_transform_id = node.GetTransformNodeID()

    def apply(self) -> None:
        self.node.SetAndObserveTransformNodeID(self.transform_id)

    def restore(self) -> None:
        self.node.SetAndObserveTransformNodeID(self.old_transform_id)


class _VolumeContent:
    """New voxels and geometry for a volume node, set by a transaction step (undone by restoring the old ones)."""

    def __init__(self, volume_node, volume: Volume):
        self.node = volume_node
        self.image = vtk.vtkImageData()
        self.image.SetDimensions(*reversed(volume.array.shape))
        self.image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        mrml_segmentation.image_array(self.image)[:] = volume.array
        self.ijk_to_ras = slicer.util.vtkMatrixFromArray(volume.ijk_to_ras)
        self.old_image = volume_node.GetImageData()
        self.old_ijk_to_ras = vtk.vtkMatrix4x4()
        volume_node.GetIJKToRASMatrix(self.old_ijk_to_ras)

    def apply(self) -> None:
        self._set(self.image, self.ijk_to_ras)

    def restore(self) -> None:
        self._set(self.old_image, self.old_ijk_to_ras)

    def _set(self, image, ijk_to_ras) -> None:
        self.node.SetIJKToRASMatrix(ijk_to_ras)
        self.node.SetAndObserveImageData(image)
