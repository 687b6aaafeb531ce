"""The MRML side of LegSegNet: a CT volume node in, a segmentation node and measurement tables out.

`LegSegNetLogic` works wherever the `slicer` MRML API exists: inside 3D Slicer and on PyPI `slicer-core`.
It holds no Qt code; the Slicer module's widget only collects settings and calls it.

All computing (segmentation, measurements, new segments and table contents) happens before the scene is
touched. Output nodes are then created or updated in one step that is rolled back on any error, so a cancel
or a failure leaves the scene exactly as it was.
"""

from __future__ import annotations

from contextlib import contextmanager

import slicer
import vtk

from . import mrml_segmentation, mrml_tables
from .measurements import compute_measurements
from .pipeline import SliceRange
from .run import run_segmentation
from .validation import InputError, validate_ct
from .volume import Volume

SUMMARY_TABLE_ROLE = "LegSegNetSummaryTable"
SLICE_AREA_TABLE_ROLE = "LegSegNetSliceAreaTable"
SLICE_AREA_CHART_ROLE = "LegSegNetSliceAreaChart"


class InputVolumeError(InputError):
    """The input node cannot be segmented; the message says what to pick instead."""


def volume_from_node(volume_node) -> Volume:
    """The node's voxels ([k, j, i] view, not a copy) and IJK-to-RAS geometry (parent transforms not applied)."""
    if volume_node is None:
        raise InputVolumeError("no input volume: select a CT volume")
    if not volume_node.IsA("vtkMRMLScalarVolumeNode") or volume_node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputVolumeError(f"'{volume_node.GetName()}' is not a scalar CT volume: select a CT volume in HU")
    image = volume_node.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        raise InputVolumeError(f"'{volume_node.GetName()}' holds no image data: load the CT again")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputVolumeError(f"'{volume_node.GetName()}' has several components per voxel: select a grey-level CT")
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return Volume(slicer.util.arrayFromVolume(volume_node), slicer.util.arrayFromVTKMatrix(matrix))


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


class LegSegNetLogic:
    """Segment a CT volume node into the four LegSegNet tissues and measure them."""

    def __init__(self, scene=None):
        self.scene = scene if scene is not None else slicer.mrmlScene
        self.lastWarnings = ()  # messages about a suspicious input from the last process() (validation.validate_ct)

    # ---- segmentation -----------------------------------------------------------------------------------------

    def process(self, inputVolume, outputSegmentation=None, outputTable=None, *, engine="legsegnet", model=None,
                folds=None, tta=False, device="auto", checkpoint=None, slice_range=None, range_mm=None,
                progress=None):
        """Segment `inputVolume`; returns (segmentationNode, tissueTableNode).

        engine: "legsegnet", "threshold" or a ready SliceEngine; model/folds/tta/device/checkpoint go to
        engines.factory.create_engine. slice_range: (start, stop) slice indices, half-open; range_mm: two RAS S
        positions (mm); give at most one, none means the whole volume. progress(done, total) is called after
        each batch of slices; returning False cancels (pipeline.Cancelled is raised, the scene is untouched).
        Given output nodes are reused: only their LegSegNet segments / table contents are replaced.
        The input is checked first (validation.InputError for a volume that is not a CT in HU); warnings about
        a merely suspicious input are in `lastWarnings` afterwards.
        """
        self.lastWarnings = ()
        volume = volume_from_node(inputVolume)
        slice_engine = self._engine(engine, model=model, folds=folds, tta=tta, device=device, checkpoint=checkpoint)
        indices = SliceRange(*slice_range) if slice_range is not None else None
        result = run_segmentation(volume, slice_engine, indices, range_mm, progress)
        new_segments = mrml_segmentation.tissue_segments(result.labels)
        with self._transaction() as transaction:
            segmentation_node = outputSegmentation or self._new_segmentation(transaction, inputVolume)
            transaction.apply(mrml_segmentation.SegmentReplacement(segmentation_node, new_segments))
            table_node = self._write_tables(transaction, result.measurements, outputTable, inputVolume)
        self._make_displayable(segmentation_node, inputVolume)
        self.lastWarnings = result.warnings
        return segmentation_node, table_node

    def checkInput(self, inputVolume) -> tuple:
        """Raise validation.InputError for a volume that cannot be segmented, before any model is loaded;
        return the warnings about a suspicious one (process() checks again)."""
        return tuple(validate_ct(volume_from_node(inputVolume)))

    @staticmethod
    def _engine(engine, **options):
        if not isinstance(engine, str):
            return engine
        from .engines.factory import create_engine  # torch is imported only when a model engine is asked for

        return create_engine(engine, **options)

    def _new_segmentation(self, transaction: _Transaction, volume_node):
        node = transaction.add_node("vtkMRMLSegmentationNode", f"{volume_node.GetName()} LegSegNet")
        node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
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

    def computeMeasurements(self, segmentationNode, volumeNode, outputTable=None):
        """Measure the LegSegNet segments as they are now (after any Segment Editor edits); returns the tissue
        table node (reused when given, with its summary and slice-area tables and chart)."""
        volume = volume_from_node(volumeNode)
        labels = volume.with_array(mrml_segmentation.labels_from_segmentation(segmentationNode, volumeNode))
        measurements = compute_measurements(volume, labels)
        with self._transaction() as transaction:
            return self._write_tables(transaction, measurements, outputTable, volumeNode)

    def summaryTable(self, tableNode):
        return tableNode.GetNodeReference(SUMMARY_TABLE_ROLE)

    def sliceAreaTable(self, tableNode):
        return tableNode.GetNodeReference(SLICE_AREA_TABLE_ROLE)

    def sliceAreaChart(self, tableNode):
        return tableNode.GetNodeReference(SLICE_AREA_CHART_ROLE)

    def _write_tables(self, transaction: _Transaction, measurements, table_node, volume_node):
        base_name = f"{volume_node.GetName()} LegSegNet"
        table_node = table_node or self._new_table(transaction, f"{base_name} tissues", volume_node)
        transaction.apply(mrml_tables.TableReplacement(table_node, mrml_tables.tissue_table_content(measurements)))
        referenced = (
            (SUMMARY_TABLE_ROLE, f"{base_name} summary", mrml_tables.summary_table_content(measurements)),
            (SLICE_AREA_TABLE_ROLE, f"{base_name} slice areas", mrml_tables.slice_area_table_content(measurements)),
        )
        for role, name, content in referenced:
            node = self._referenced_table(transaction, table_node, role, name)
            transaction.apply(mrml_tables.TableReplacement(node, content))
        if self.sliceAreaChart(table_node) is None:
            self._add_chart(transaction, table_node, f"{base_name} slice areas chart")
        return table_node

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

    def _add_chart(self, transaction: _Transaction, table_node, name: str) -> None:
        chart = mrml_tables.add_slice_area_chart(transaction.add_node, self.sliceAreaTable(table_node), name)
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

