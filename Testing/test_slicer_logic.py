"""SegmentationLogic on real MRML (PyPI slicer-core): geometry in every orientation, node reuse, edits followed by
measurements, .seg.nrrd round trip, cancel/error leaving the scene as it was, and a real CT volume node."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import vtk

slicer = pytest.importorskip("slicer")
slicerio = pytest.importorskip("slicerio")

from hu_band_engine import HUBandEngine  # noqa: E402
from slicer_scene import SlicerScene, mrml_scene  # noqa: E402,F401 (pytest fixture)

from SlicerLegSegNetLib import mrml_segmentation  # noqa: E402
from LegSegNetLib.measuring.measurements import dice  # noqa: E402
from SlicerLegSegNetLib.segmentation_logic import (ORIGINAL_LABELS_ROLE, InputVolumeError, SegmentationLogic,  # noqa: E402
                                                   OutputNodeError, volume_from_node)
from LegSegNetLib.reading.volume_files import read_volume  # noqa: E402
from LegSegNetLib.reading.layout import slice_layout  # noqa: E402
from LegSegNetLib.progress import Cancelled  # noqa: E402
from LegSegNetLib.segmenting.pipeline import segment_volume  # noqa: E402
from LegSegNetLib.tissues import TISSUE_BY_KEY, TISSUES, label_set_from_names  # noqa: E402
from LegSegNetLib.training.export import ExportError  # noqa: E402
from LegSegNetLib.reading.validation import InputError  # noqa: E402
from LegSegNetLib.reading.volume import LPS_TO_RAS, Volume  # noqa: E402
from LegSegNetLib.settings import SegmentationSettings

# Each tissue is drawn with its own HU; the test engine maps each HU back to its label.
TISSUE_HU = {0: -1000, 1: -100, 2: 50, 3: -60, 4: 700}


class AnteriorRightEngine:
    """Labels each pixel from its HU, but only in the upper-left quarter of the picture it is shown.

    In radiological display that quarter is the patient's anterior right, so any orientation mistake (a slice
    shown flipped or transposed) puts labels in the wrong physical place.
    """

    name = "anterior-right test engine"
    in_plane_orientation = "PL"

    def segment_slices(self, hu_slices, pixel_spacing_mm):
        labels = np.zeros(hu_slices.shape, dtype=np.uint8)
        for value, hu in TISSUE_HU.items():
            labels[np.abs(hu_slices - hu) < 5] = value
        rows, columns = hu_slices.shape[1:]
        labels[:, rows // 2:, :] = 0
        labels[:, :, columns // 2:] = 0
        return labels


class BoneEngine(AnteriorRightEngine):
    """Another answer: bone wherever there is anything."""

    def segment_slices(self, hu_slices, pixel_spacing_mm):
        return np.where(super().segment_slices(hu_slices, pixel_spacing_mm) > 0, 4, 0).astype(np.uint8)


class FailingEngine(AnteriorRightEngine):
    def segment_slices(self, hu_slices, pixel_spacing_mm):
        raise RuntimeError("engine failure for the test")


@pytest.fixture
def scene(mrml_scene):
    return mrml_scene


def phantom(seed=0, shape=(6, 20, 24), spacing_ijk=(0.9, 0.8, 2.0)):
    """Random tissue labels (no symmetry to hide a flip) and their CT, centred on the RAS origin, stored RAS."""
    truth = np.random.default_rng(seed).integers(0, 5, size=shape).astype(np.uint8)
    centre = -(np.array(shape[::-1]) - 1) / 2 * spacing_ijk
    truth_volume = Volume.from_spacing(truth, spacing_ijk, origin_ras=centre)
    ct = truth_volume.with_array(np.vectorize(TISSUE_HU.get)(truth).astype(np.int16))
    return ct, truth_volume


def expected_labels_at(truth: Volume, ras):
    """What the engine must give at RAS points: the truth where anterior (A > 0) and right (R > 0), else 0."""
    kji = np.rint(truth.index_of_ras(ras)).astype(int)
    values = truth.array[tuple(kji.T)]
    return np.where((ras[:, 0] > 0) & (ras[:, 1] > 0), values, 0)


def add_volume_node(volume: Volume, name="CT"):
    return slicer.util.addVolumeFromArray(volume.array, ijkToRAS=volume.ijk_to_ras, name=name)


def shared_labelmap_values_at(segmentation_node, ras):
    """Voxel values of the segmentation's own (internal) labelmap at RAS points."""
    segment_id = mrml_segmentation.segment_id(TISSUES[0])
    image = segmentation_node.GetBinaryLabelmapInternalRepresentation(segment_id)
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    grid = Volume(mrml_segmentation.image_array(image), slicer.util.arrayFromVTKMatrix(matrix))
    extent = image.GetExtent()
    kji = np.rint(grid.index_of_ras(ras)).astype(int) - [extent[4], extent[2], extent[0]]
    return grid.array[tuple(kji.T)]


def table_rows(table_node):
    table = table_node.GetTable()
    names = [table.GetColumnName(index) for index in range(table.GetNumberOfColumns())]
    return [{name: _python_value(table.GetValue(row, column)) for column, name in enumerate(names)}
            for row in range(table.GetNumberOfRows())]


def _python_value(variant):
    return variant.ToString() if variant.IsString() else variant.ToDouble()


def table_text(table_node):
    """Every cell as text, for comparing a table before and after (NaN equals NaN here)."""
    table = table_node.GetTable()
    return [[table.GetValue(row, column).ToString() for column in range(table.GetNumberOfColumns())]
            for row in range(table.GetNumberOfRows())]


def tissue_volume(table_node, key, side="both"):
    rows = [row for row in table_rows(table_node) if row["tissue"] == key and row["side"] == side]
    return float(rows[0]["volume_cm3"])


def scene_node_ids(mrml):
    return sorted(mrml.scene.GetNthNode(index).GetID() for index in range(mrml.scene.GetNumberOfNodes()))


ORIENTATIONS = {
    "RAS": lambda v: v,
    "LPS": lambda v: v.reoriented((0, 1, 2), (False, True, True)),
    "permuted": lambda v: v.reoriented((1, 2, 0), (False, False, False)),
    "permuted-flipped": lambda v: v.reoriented((2, 0, 1), (True, False, True)),
}


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_segment_voxels_equal_library_labels_at_every_physical_point(scene, orientation):
    ct, truth = phantom()
    stored = ORIENTATIONS[orientation](ct)
    volume_node = add_volume_node(stored)
    segmentation_node, table_node = SegmentationLogic().process(volume_node, engine=AnteriorRightEngine())

    ras = truth.ras_of_index(np.argwhere(np.ones(truth.array.shape)))
    expected = expected_labels_at(truth, ras)
    assert np.count_nonzero(expected) > 100
    library = segment_volume(stored, AnteriorRightEngine())
    library_at = library.array[tuple(np.rint(library.index_of_ras(ras)).astype(int).T)]
    np.testing.assert_array_equal(library_at, expected)
    np.testing.assert_array_equal(shared_labelmap_values_at(segmentation_node, ras), expected)
    on_volume_grid = mrml_segmentation.labels_from_segmentation(segmentation_node, volume_node)
    np.testing.assert_array_equal(on_volume_grid, library.array)


def test_segmentation_has_four_named_coloured_segments_in_one_layer(scene):
    ct, _ = phantom()
    volume_node = add_volume_node(ct)
    segmentation_node, _ = SegmentationLogic().process(volume_node, engine=AnteriorRightEngine())
    segmentation = segmentation_node.GetSegmentation()
    ids = [mrml_segmentation.segment_id(tissue) for tissue in TISSUES]
    assert list(segmentation.GetSegmentIDs()) == ids
    for tissue, segment_id in zip(TISSUES, ids):
        segment = segmentation.GetSegment(segment_id)
        assert segment.GetName() == tissue.name
        assert segment.GetLabelValue() == tissue.value
        assert segment.GetColor() == pytest.approx(tissue.color)
        assert tissue.type[1] in segment.GetTerminology()
    assert segmentation.GetNumberOfLayers() == 1
    assert segmentation_node.GetNodeReference(segmentation_node.GetReferenceImageGeometryReferenceRole()) is volume_node
    display = segmentation_node.GetDisplayNode()
    assert display.GetVisibility() and display.GetVisibility2DFill()


def test_outputs_go_under_the_input_study_in_the_subject_hierarchy(scene):
    ct, _ = phantom()
    volume_node = add_volume_node(ct)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene.scene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Patient")
    study = hierarchy.CreateStudyItem(patient, "Study")
    hierarchy.CreateItem(study, volume_node)
    logic = SegmentationLogic()
    segmentation_node, table_node = logic.process(volume_node, engine=AnteriorRightEngine())
    for node in (segmentation_node, table_node):
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study
    table_item = hierarchy.GetItemByDataNode(table_node)
    for node in (logic.summaryTable(table_node), logic.sliceAreaTable(table_node), logic.sliceAreaChart(table_node)):
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == table_item


TILT_ABOUT_R = np.array([[1, 0, 0, 5], [0, 0, -1, 0], [0, 1, 0, -3], [0, 0, 0, 1]], float)  # 90 degrees: S -> A


def tilted_volume_node(scene):
    """(phantom CT, its volume node under a linear transform TILT_ABOUT_R, the transform node)."""
    ct, _ = phantom(shape=(20, 20, 24))
    volume_node = add_volume_node(ct)
    transform = scene.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(TILT_ABOUT_R))
    volume_node.SetAndObserveTransformNodeID(transform.GetID())
    return ct, volume_node, transform


def test_a_linear_parent_transform_is_applied_and_the_segmentation_follows_it(scene):
    """The slices the engine sees are axial in the world (after the transform), the segmentation is under the same
    transform with the labels on the node's own grid, and a reused segmentation is moved under it too."""
    ct, volume_node, transform = tilted_volume_node(scene)
    logic = SegmentationLogic()
    segmentation_node, _ = logic.process(volume_node, engine=AnteriorRightEngine())
    assert segmentation_node.GetTransformNodeID() == transform.GetID()

    in_world = segment_volume(Volume(ct.array, TILT_ABOUT_R @ ct.ijk_to_ras), AnteriorRightEngine()).array
    as_stored = segment_volume(ct, AnteriorRightEngine()).array
    assert not np.array_equal(in_world, as_stored)  # the transform changes which slices are axial
    np.testing.assert_array_equal(mrml_segmentation.labels_from_segmentation(segmentation_node, volume_node), in_world)

    reused = scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "given")
    logic.process(volume_node, reused, engine=AnteriorRightEngine())
    assert reused.GetTransformNodeID() == transform.GetID()
    np.testing.assert_array_equal(mrml_segmentation.labels_from_segmentation(reused, volume_node), in_world)


def test_a_non_linear_parent_transform_is_refused_with_what_to_do(scene):
    ct, _ = phantom()
    volume_node = add_volume_node(ct)
    warp = scene.scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
    volume_node.SetAndObserveTransformNodeID(warp.GetID())
    nodes = scene_node_ids(scene)
    with pytest.raises(InputVolumeError, match="non-linear transform 'warp'.*Harden transform"):
        SegmentationLogic().process(volume_node, engine=AnteriorRightEngine())
    assert scene_node_ids(scene) == nodes


@pytest.mark.parametrize("output", ["outputSegmentation", "outputTable"])
def test_a_volume_given_as_an_output_node_is_refused_with_what_to_pick(scene, output):
    ct, _ = phantom()
    volume_node = add_volume_node(ct)
    other = add_volume_node(ct, "another CT")
    nodes = scene_node_ids(scene)
    kind = "segmentation" if output == "outputSegmentation" else "table"
    with pytest.raises(OutputNodeError, match=f"'another CT' .* cannot hold the output {kind}: pick a {kind} node"):
        SegmentationLogic().process(volume_node, engine=AnteriorRightEngine(), **{output: other})
    assert scene_node_ids(scene) == nodes


def test_tables_hold_tissue_rows_summary_and_slice_areas_with_units(scene):
    ct, truth = phantom()
    volume_node = add_volume_node(ct)
    logic = SegmentationLogic()
    _, table_node = logic.process(volume_node, engine=AnteriorRightEngine())

    ras = truth.ras_of_index(np.argwhere(np.ones(truth.array.shape)))
    expected = expected_labels_at(truth, ras)
    voxel_cm3 = truth.voxel_volume_mm3 / 1000
    assert [row["side"] for row in table_rows(table_node)] == ["both"] * 4  # random voxels: no two legs to split
    for tissue in TISSUES:
        assert tissue_volume(table_node, tissue.key) == pytest.approx(np.sum(expected == tissue.value) * voxel_cm3)
    assert table_node.GetColumnUnitLabel("volume_cm3") == "cm3"
    assert table_node.GetColumnDescription("mean_HU")

    summary = logic.summaryTable(table_node)
    sm_mean = summary.GetTable().GetColumnByName("SM_mean_HU").GetValue(0)
    assert sm_mean == pytest.approx(TISSUE_HU[2])
    assert summary.GetColumnUnitLabel("IMAT_SAT_ratio") == "1"

    areas = logic.sliceAreaTable(table_node)
    s_mm = slicer.util.arrayFromTableColumn(areas, "S_mm")
    assert len(s_mm) == truth.array.shape[0] and np.all(np.diff(s_mm) > 0)
    bone_area = slicer.util.arrayFromTableColumn(areas, "Bone_area_cm2")
    pixel_cm2 = truth.spacing[0] * truth.spacing[1] / 100
    slice_of_point = np.rint(truth.index_of_ras(ras)[:, 0]).astype(int)
    expected_bone = [np.sum((expected == 4) & (slice_of_point == k)) * pixel_cm2 for k in range(len(s_mm))]
    np.testing.assert_allclose(bone_area, expected_bone)
    assert areas.GetColumnUnitLabel("Bone_area_cm2") == "cm2"
    chart = logic.sliceAreaChart(table_node)
    assert chart.GetNumberOfPlotSeriesNodes() == len(TISSUES)
    assert chart.GetNthPlotSeriesNode(0).GetTableNode() is areas


def test_reuse_replaces_only_legsegnet_segments_and_keeps_the_users(scene):
    ct, _ = phantom()
    volume_node = add_volume_node(ct)
    logic = SegmentationLogic()
    segmentation_node, table_node = logic.process(volume_node, engine=AnteriorRightEngine())
    user_id = segmentation_node.GetSegmentation().AddEmptySegment("tumour", "Tumour", [0.1, 0.9, 0.1])
    user_mask = np.zeros(ct.array.shape, dtype=np.uint8)
    user_mask[2:4, 3:9, 4:10] = 1
    _write_segment(segmentation_node, user_id, ct.with_array(user_mask))
    nodes_before = scene_node_ids(scene)

    again = logic.process(volume_node, segmentation_node, table_node, engine=AnteriorRightEngine())

    assert again == (segmentation_node, table_node)
    assert scene_node_ids(scene) == nodes_before
    segmentation = segmentation_node.GetSegmentation()
    assert sorted(segmentation.GetSegmentIDs()) == sorted([user_id] + [mrml_segmentation.segment_id(t) for t in TISSUES])
    assert segmentation.GetSegment(user_id).GetName() == "Tumour"
    np.testing.assert_array_equal(mrml_segmentation.segment_mask(segmentation_node, user_id, volume_node),
                                  user_mask.astype(bool))


def test_a_segmentation_made_by_the_node_selector_gets_display_and_reference_geometry(scene):
    """qMRMLNodeComboBox's "Create new Segmentation" adds a bare node: no display node, no reference geometry."""
    ct, _ = phantom()
    volume_node = add_volume_node(ct)
    bare = scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "made by the selector")
    assert bare.GetDisplayNode() is None

    segmentation_node, _ = SegmentationLogic().process(volume_node, bare, engine=AnteriorRightEngine())

    assert segmentation_node is bare
    assert bare.GetDisplayNode() is not None and bare.GetDisplayNode().GetVisibility()
    reference = slicer.vtkMRMLSegmentationNode()
    reference.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    geometry = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    assert bare.GetSegmentation().GetConversionParameter(geometry) == \
        reference.GetSegmentation().GetConversionParameter(geometry) != ""


def _write_segment(segmentation_node, segment_id, mask: Volume):
    """Give a segment its own labelmap layer holding `mask` (as Segment Editor's import would)."""
    image = mrml_segmentation.oriented_image(mask)
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    segment.AddRepresentation(mrml_segmentation.binary_labelmap_name(), image)
    segment.SetLabelValue(1)


def test_compute_measurements_reflects_an_edit(scene):
    ct, truth = phantom()
    volume_node = add_volume_node(ct)
    logic = SegmentationLogic()
    segmentation_node, table_node = logic.process(volume_node, engine=AnteriorRightEngine())
    muscle_before = tissue_volume(table_node, "SM")
    sat_before = tissue_volume(table_node, "SAT")

    # Erase muscle in slices 0-2, as Segment Editor's eraser would: clear those voxels of the shared layer.
    muscle_id = mrml_segmentation.segment_id(TISSUE_BY_KEY["SM"])
    shared = slicer.util.arrayFromSegmentInternalBinaryLabelmap(segmentation_node, muscle_id)
    erased = np.count_nonzero(shared[:3] == 2)
    assert erased > 0
    shared[:3][shared[:3] == 2] = 0
    segmentation_node.GetSegmentation().GetSegment(muscle_id).Modified()

    updated = logic.computeMeasurements(segmentation_node, volume_node, table_node)

    voxel_cm3 = truth.voxel_volume_mm3 / 1000
    assert updated is table_node
    assert tissue_volume(table_node, "SM") == pytest.approx(muscle_before - erased * voxel_cm3)
    assert tissue_volume(table_node, "SAT") == pytest.approx(sat_before)


def test_compute_measurements_reads_a_segment_moved_to_its_own_layer(scene):
    ct, truth = phantom()
    volume_node = add_volume_node(ct)
    logic = SegmentationLogic()
    segmentation_node, table_node = logic.process(volume_node, engine=AnteriorRightEngine())
    bone_id = mrml_segmentation.segment_id(TISSUE_BY_KEY["Bone"])
    bone = np.zeros(ct.array.shape, dtype=np.uint8)
    bone[1, 2:6, 3:5] = 1  # painted elsewhere, its own layer with label value 1
    _write_segment(segmentation_node, bone_id, ct.with_array(bone))

    logic.computeMeasurements(segmentation_node, volume_node, table_node)

    assert tissue_volume(table_node, "Bone") == pytest.approx(bone.sum() * truth.voxel_volume_mm3 / 1000)


def test_seg_nrrd_round_trip_with_slicerio(scene, tmp_path):
    ct, truth = phantom()
    volume_node = add_volume_node(ct.reoriented((0, 1, 2), (False, True, True)))
    segmentation_node, _ = SegmentationLogic().process(volume_node, engine=AnteriorRightEngine())
    path = tmp_path / "leg.seg.nrrd"
    storage = scene.scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.WriteData(segmentation_node)

    segmentation = slicerio.read_segmentation(str(path))
    segments = {segment["name"]: segment for segment in segmentation["segments"]}
    for tissue in TISSUES:
        segment = segments[tissue.name]
        assert segment["labelValue"] == tissue.value
        assert segment["color"] == pytest.approx(tissue.color)
        assert not segment["nameAutoGenerated"] and not segment["colorAutoGenerated"]
        assert tuple(segment["terminology"]["type"]) == tissue.type
        assert tuple(segment["terminology"]["category"]) == tissue.category
    assert tuple(segments["Intermuscular fat"]["terminology"]["anatomicRegion"]) == TISSUE_BY_KEY["IMAT"].region
    voxels = segmentation["voxels"]
    stored = Volume(np.transpose(voxels, (2, 1, 0)), LPS_TO_RAS @ segmentation["ijkToLPS"])
    ras = truth.ras_of_index(np.argwhere(np.ones(truth.array.shape)))
    index = np.rint(stored.index_of_ras(ras)).astype(int)
    np.testing.assert_array_equal(stored.array[tuple(index.T)], expected_labels_at(truth, ras))


def _segmentation_state(segmentation_node, volume_node):
    segmentation = segmentation_node.GetSegmentation()
    names = [segmentation.GetSegment(segment_id).GetName() for segment_id in segmentation.GetSegmentIDs()]
    return names, mrml_segmentation.labels_from_segmentation(segmentation_node, volume_node)


def test_cancel_leaves_the_scene_unchanged(scene):
    ct, _ = phantom(shape=(20, 20, 24))
    volume_node = add_volume_node(ct)
    logic = SegmentationLogic()
    segmentation_node, table_node = logic.process(volume_node, engine=AnteriorRightEngine())
    names, labels = _segmentation_state(segmentation_node, volume_node)
    rows = table_text(table_node)
    nodes = scene_node_ids(scene)
    calls = []

    def cancel_after_first_batch(done, total):
        calls.append(done)
        return done == 0

    with pytest.raises(Cancelled):
        logic.process(volume_node, segmentation_node, table_node, engine=AnteriorRightEngine(),
                      progress=cancel_after_first_batch)
    with pytest.raises(Cancelled):
        logic.process(volume_node, engine=AnteriorRightEngine(), progress=cancel_after_first_batch)

    assert calls == [0, 8, 0, 8]
    assert scene_node_ids(scene) == nodes
    new_names, new_labels = _segmentation_state(segmentation_node, volume_node)
    assert new_names == names
    np.testing.assert_array_equal(new_labels, labels)
    assert table_text(table_node) == rows


@pytest.mark.parametrize("hu_shift, engine, error, message", [
    (0, FailingEngine(), RuntimeError, "engine failure"),
    (1000, AnteriorRightEngine(), InputError, "not CT in Hounsfield units"),  # no negative value: MR-like, not HU
], ids=["engine error", "not CT"])
def test_an_engine_or_input_error_leaves_the_scene_unchanged(scene, hu_shift, engine, error, message):
    ct, _ = phantom()
    volume_node = add_volume_node(ct.with_array(ct.array + hu_shift))
    nodes = scene_node_ids(scene)
    with pytest.raises(error, match=message):
        SegmentationLogic().process(volume_node, engine=engine)
    assert scene_node_ids(scene) == nodes


def test_check_input_refuses_what_process_refuses_and_returns_its_warnings(scene):
    ct, _ = phantom()
    logic = SegmentationLogic()
    with pytest.raises(InputError, match="not CT in Hounsfield units"):
        logic.checkInput(add_volume_node(ct.with_array(ct.array + 1000)))
    with pytest.raises(InputError, match="select a CT volume"):
        logic.checkInput(None)
    assert logic.checkInput(add_volume_node(ct)) == ()


def test_failure_while_writing_outputs_rolls_back_new_and_reused_nodes(scene):
    ct, _ = phantom()
    volume_node = add_volume_node(ct)
    logic = SegmentationLogic()
    segmentation_node, table_node = logic.process(volume_node, engine=AnteriorRightEngine())
    names, labels = _segmentation_state(segmentation_node, volume_node)
    summary_rows = table_text(logic.summaryTable(table_node))
    nodes = scene_node_ids(scene)
    # A table node from another scene cannot take node references here: writing fails half way.
    foreign_table = slicer.vtkMRMLScene().AddNewNodeByClass("vtkMRMLTableNode")

    with pytest.raises(Exception):
        logic.process(volume_node, segmentation_node, foreign_table, engine=BoneEngine())
    with pytest.raises(Exception):
        logic.process(volume_node, None, foreign_table, engine=BoneEngine())

    assert scene_node_ids(scene) == nodes
    new_names, new_labels = _segmentation_state(segmentation_node, volume_node)
    assert new_names == names
    np.testing.assert_array_equal(new_labels, labels)
    assert table_text(logic.summaryTable(table_node)) == summary_rows
    np.testing.assert_array_equal(logic.originalLabels(segmentation_node).array, labels)  # not BoneEngine's


def test_axial_range_in_indices_or_millimetres(scene):
    ct, truth = phantom(shape=(10, 20, 24))
    volume_node = add_volume_node(ct.reoriented((0, 1, 2), (True, False, False)))  # slice index runs inferior
    logic = SegmentationLogic()
    positions = truth.ras_of_index([[k, 0, 0] for k in range(10)])[:, 2]
    segmentation_node, _ = logic.process(volume_node, engine=AnteriorRightEngine(),
                                         range_mm=(positions[3], positions[5]))
    labels = mrml_segmentation.labels_from_segmentation(segmentation_node, volume_node)
    labelled_stored_slices = np.flatnonzero(labels.reshape(10, -1).any(axis=1))
    np.testing.assert_array_equal(labelled_stored_slices, [4, 5, 6])  # stored index = 9 - truth index

    segmentation_node, _ = logic.process(volume_node, engine=AnteriorRightEngine(), slice_range=(0, 2))
    labels = mrml_segmentation.labels_from_segmentation(segmentation_node, volume_node)
    np.testing.assert_array_equal(np.flatnonzero(labels.reshape(10, -1).any(axis=1)), [0, 1])


def test_show_surface_builds_and_hides_3d(scene):
    ct, _ = phantom()
    volume_node = add_volume_node(ct)
    logic = SegmentationLogic()
    segmentation_node, _ = logic.process(volume_node, engine=AnteriorRightEngine())
    surface = "Closed surface"
    logic.showSurface(segmentation_node, True)
    assert segmentation_node.GetSegmentation().ContainsRepresentation(surface)
    assert segmentation_node.GetDisplayNode().GetVisibility3D()
    logic.showSurface(segmentation_node, False)
    assert not segmentation_node.GetSegmentation().ContainsRepresentation(surface)
    assert not segmentation_node.GetDisplayNode().GetVisibility3D()


def test_bad_inputs_get_clear_errors(scene):
    logic = SegmentationLogic()
    with pytest.raises(InputVolumeError, match="select a CT volume"):
        logic.process(None, engine=AnteriorRightEngine())
    labelmap = scene.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "mask")
    with pytest.raises(InputVolumeError, match="not a scalar CT volume"):
        logic.process(labelmap, engine=AnteriorRightEngine())
    empty = scene.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(InputVolumeError, match="no image data"):
        logic.process(empty, engine=AnteriorRightEngine())
    ct, _ = phantom()
    with pytest.raises(ValueError, match="not both"):
        logic.process(add_volume_node(ct), engine=AnteriorRightEngine(), slice_range=(0, 1), range_mm=(0, 1))


def test_a_suspicious_volume_is_segmented_with_its_warning(scene):
    ct, _ = phantom()
    no_air = add_volume_node(ct.with_array(np.maximum(ct.array, -400).astype(np.int16)), "no air")
    logic = SegmentationLogic()
    segmentation_node, table_node = logic.process(no_air, engine=AnteriorRightEngine())
    assert segmentation_node.GetSegmentation().GetNumberOfSegments() == len(TISSUES)
    assert len(logic.lastWarnings) == 1 and "no voxel is below -500" in logic.lastWarnings[0]
    assert logic.checkInput(no_air) == logic.lastWarnings
    assert table_rows(logic.summaryTable(table_node))[0]["warnings"] == logic.lastWarnings[0]  # kept with the numbers
    warnings = logic.lastWarnings
    logic.computeMeasurements(segmentation_node, no_air, table_node)  # after edits: still the same input
    assert logic.lastWarnings == warnings and table_rows(logic.summaryTable(table_node))[0]["warnings"] == warnings[0]

    logic.process(add_volume_node(ct), segmentation_node, table_node, engine=AnteriorRightEngine())
    assert logic.lastWarnings == ()
    assert table_rows(logic.summaryTable(table_node))[0]["warnings"] == ""


def test_real_ct_volume_node_from_dicom(scene, visible_human_dicom_dir):
    first_file = sorted(visible_human_dicom_dir.glob("*.dcm"))[0]
    volume_node = scene.volumes_logic.AddArchetypeVolume(str(first_file), "Visible Human legs", 0)
    assert volume_node is not None and slicer.util.arrayFromVolume(volume_node).shape == (350, 512, 512)
    mid_calf_mm = (390.0, 401.0)  # twelve 1 mm slices of the calves (the series spans S = 150..499)
    logic = SegmentationLogic()
    segmentation_node, table_node = logic.process(volume_node, engine=HUBandEngine(), range_mm=mid_calf_mm)

    # The same physical points labelled through an independent reader (SimpleITK, LPS geometry).
    reference = read_volume(visible_human_dicom_dir)
    reference_range = slice_layout(reference).range_between_mm(*mid_calf_mm)
    reference_labels = segment_volume(reference, HUBandEngine(), reference_range)
    rng = np.random.default_rng(1)
    labelled = np.argwhere(reference_labels.array > 0)
    kji = labelled[rng.choice(len(labelled), 2000, replace=False)]
    ras = reference.ras_of_index(kji)
    np.testing.assert_array_equal(shared_labelmap_values_at(segmentation_node, ras), reference_labels.array[tuple(kji.T)])

    sides = [(row["side"], row["tissue"]) for row in table_rows(table_node)]
    assert sides == [(side, tissue.key) for side in ("both", "right", "left") for tissue in TISSUES]
    summary = logic.summaryTable(table_node).GetTable()
    value = lambda name: summary.GetColumnByName(name).GetValue(0)  # noqa: E731
    assert value("slice_count") == 12
    assert value("separable_slice_count") == 12  # two calves side by side in every slice
    assert 30 < value("SM_mean_HU") < 80 and -150 < value("SAT_mean_HU") < -50
    assert value("right_SM_volume_cm3") == pytest.approx(value("left_SM_volume_cm3"), rel=0.25)


def test_leg_phantom_with_the_threshold_engine_matches_its_truth(scene):
    """What the module's self-test does inside Slicer, here on slicer-core."""
    from LegSegNetLib.segmenting.engines.threshold import ThresholdEngine
    from LegSegNetLib.synthetic.leg_phantom import make_leg_phantom

    ct, truth = make_leg_phantom(seed=0, shape=(12, 160, 160), orientation="LPS")
    volume_node = add_volume_node(ct, "Leg phantom")
    logic = SegmentationLogic()
    segmentation_node, table_node = logic.process(volume_node, engine=ThresholdEngine())
    labels = mrml_segmentation.labels_from_segmentation(segmentation_node, volume_node)
    for tissue in TISSUES:
        found, expected = labels == tissue.value, truth.array == tissue.value
        overlap = dice(found, expected)
        assert overlap > (0.7 if tissue.key == "IMAT" else 0.9), (tissue.key, overlap)
        assert tissue_volume(table_node, tissue.key) == pytest.approx(found.sum() * truth.voxel_volume_mm3 / 1000)
    summary = logic.summaryTable(table_node).GetTable()
    assert summary.GetColumnByName("separable_slice_count").GetValue(0) == 12  # two legs in every slice


@pytest.mark.parametrize("tissue", TISSUES, ids=lambda tissue: tissue.key)
def test_terminology_string_is_what_slicers_terminology_logic_writes(tissue):
    """The segments (and the command line's .seg.nrrd) carry the string Slicer itself serializes for the codes."""
    entry = slicer.vtkSlicerTerminologyEntry()
    terminologies = slicer.vtkSlicerTerminologiesModuleLogic
    assert terminologies.DeserializeTerminologyEntry(mrml_segmentation.terminology_entry(tissue), entry)
    assert (entry.GetTypeObject().GetCodingSchemeDesignator(), entry.GetTypeObject().GetCodeValue(),
            entry.GetTypeObject().GetCodeMeaning()) == tissue.type
    assert entry.GetCategoryObject().GetCodeValue() == tissue.category[1]
    assert (entry.GetRegionObject().GetCodeValue() or None) == (tissue.region[1] if tissue.region else None)
    assert terminologies.SerializeTerminologyEntry(entry) == mrml_segmentation.terminology_entry(tissue)


def test_command_line_seg_nrrd_loads_and_is_measured_like_the_modules_own(scene, tmp_path):
    """A .seg.nrrd written by `legsegnet segment` opens in Slicer with its four segments, and Update measurements
    works on it (segments recognised by ID) with the same numbers as the labels it holds."""
    from LegSegNetLib.measuring.measurements import compute_measurements
    from LegSegNetLib.writing.labelmaps import write_labelmap

    ct, truth = phantom()
    stored_ct = ct.reoriented((0, 1, 2), (False, True, True))
    labels = segment_volume(stored_ct, AnteriorRightEngine())
    path = tmp_path / "cli.seg.nrrd"
    write_labelmap(labels, path)
    volume_node = add_volume_node(stored_ct)
    segmentation_node = scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(segmentation_node)

    np.testing.assert_array_equal(mrml_segmentation.labels_from_segmentation(segmentation_node, volume_node),
                                  labels.array)
    table_node = SegmentationLogic().computeMeasurements(segmentation_node, volume_node)
    expected = compute_measurements(stored_ct, labels)
    for row in expected.tissue_rows:
        if row["side"] == "both":
            assert tissue_volume(table_node, row["tissue"]) == pytest.approx(row["volume_cm3"])


def test_threshold_engine_by_name_through_the_engine_factory(scene):
    from LegSegNetLib.synthetic.leg_phantom import make_leg_phantom

    ct, truth = make_leg_phantom(seed=1, shape=(4, 96, 96), orientation="RAS")
    volume_node = add_volume_node(ct)
    segmentation_node, _ = SegmentationLogic().process(volume_node, engine="threshold")
    labels = mrml_segmentation.labels_from_segmentation(segmentation_node, volume_node)
    assert np.mean(labels[truth.array > 0] == truth.array[truth.array > 0]) > 0.8


def test_legsegnet_engine_by_name_with_a_model_folder(scene, tmp_path):
    """The model path end to end: factory -> nnU-Net engine -> segmentation equal to the library's labels."""
    pytest.importorskip("LegSegNetLib.segmenting.engines.nnunet.engine")
    from model_factory import make_model_folder

    from LegSegNetLib.segmenting.engines.factory import create_engine
    from LegSegNetLib.synthetic.leg_phantom import make_leg_phantom

    model = make_model_folder(tmp_path / "model")
    ct, _ = make_leg_phantom(seed=2, shape=(2, 80, 96), orientation="LPS")
    volume_node = add_volume_node(ct)
    options = dict(model=str(model), folds=(0,), device="cpu")
    segmentation_node, table_node = SegmentationLogic().process(volume_node, engine="legsegnet", **options)
    expected = segment_volume(ct, create_engine(SegmentationSettings(engine="legsegnet", **options)))
    np.testing.assert_array_equal(mrml_segmentation.labels_from_segmentation(segmentation_node, volume_node),
                                  expected.array)
    assert len(table_rows(table_node)) >= len(TISSUES)


# ---- original labels and training pairs ------------------------------------------------------------------------

def test_the_labels_legsegnet_wrote_are_kept_hidden_under_the_segmentation_and_replaced_on_rerun(scene):
    ct, _ = phantom()
    volume_node = add_volume_node(ct.reoriented((0, 1, 2), (False, True, True)))
    logic = SegmentationLogic()
    segmentation_node, table_node = logic.process(volume_node, engine=AnteriorRightEngine())
    original_node = segmentation_node.GetNodeReference(ORIGINAL_LABELS_ROLE)
    assert original_node.IsA("vtkMRMLLabelMapVolumeNode") and original_node.GetHideFromEditors()
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene.scene)
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(original_node)) == \
        hierarchy.GetItemByDataNode(segmentation_node)
    written = mrml_segmentation.labels_from_segmentation(segmentation_node, volume_node)
    original = logic.originalLabels(segmentation_node)
    np.testing.assert_array_equal(original.array, written)
    np.testing.assert_allclose(original.ijk_to_ras, volume_from_node(volume_node).ijk_to_ras)

    logic.process(volume_node, segmentation_node, table_node, engine=BoneEngine())

    assert segmentation_node.GetNodeReference(ORIGINAL_LABELS_ROLE) is original_node
    assert scene.scene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems() == 1
    rewritten = mrml_segmentation.labels_from_segmentation(segmentation_node, volume_node)
    assert set(np.unique(rewritten)) == {0, 4}
    np.testing.assert_array_equal(logic.originalLabels(segmentation_node).array, rewritten)


def test_cancelled_or_failed_runs_leave_no_stored_original(scene):
    ct, _ = phantom(shape=(20, 20, 24))
    volume_node = add_volume_node(ct)
    logic = SegmentationLogic()
    with pytest.raises(Cancelled):
        logic.process(volume_node, engine=AnteriorRightEngine(), progress=lambda done, total: done == 0)
    foreign_table = slicer.vtkMRMLScene().AddNewNodeByClass("vtkMRMLTableNode")
    with pytest.raises(Exception):
        logic.process(volume_node, None, foreign_table, engine=AnteriorRightEngine())
    assert scene.scene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems() == 0
    assert scene.scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 0


def test_the_stored_original_survives_saving_and_loading_the_scene(scene, tmp_path):
    ct, _ = phantom()
    volume_node = add_volume_node(ct)
    logic = SegmentationLogic()
    segmentation_node, _ = logic.process(volume_node, engine=AnteriorRightEngine())
    original = logic.originalLabels(segmentation_node)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    assert scene.app_logic.SaveSceneToSlicerDataBundleDirectory(str(bundle), None)

    loaded = SlicerScene()
    try:
        loaded.scene.SetURL(str(bundle / "bundle.mrml"))
        assert loaded.scene.Connect()
        segmentation = loaded.scene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
        again = SegmentationLogic(loaded.scene).originalLabels(segmentation)
        assert segmentation.GetNodeReference(ORIGINAL_LABELS_ROLE).GetHideFromEditors()
        np.testing.assert_array_equal(again.array, original.array)
        np.testing.assert_allclose(again.ijk_to_ras, original.ijk_to_ras)
    finally:
        loaded.close()


def display_index_of_stored_slices(volume: Volume, stored_slices) -> list:
    """Display slice index (the export's numbering) of stored k slices, found through a marker array."""
    marker = np.broadcast_to(np.arange(volume.array.shape[0])[:, None, None], volume.array.shape)
    view = slice_layout(volume).display_view(marker)
    return sorted(int(np.flatnonzero(view.reshape(len(view), -1)[:, 0] == k)[0]) for k in stored_slices)


def erase_muscle(segmentation_node, stored_slices):
    """Erase muscle in whole stored slices, as Segment Editor's eraser would."""
    muscle_id = mrml_segmentation.segment_id(TISSUE_BY_KEY["SM"])
    shared = slicer.util.arrayFromSegmentInternalBinaryLabelmap(segmentation_node, muscle_id)
    for k in stored_slices:
        assert np.any(shared[k] == 2)
        shared[k][shared[k] == 2] = 0
    segmentation_node.GetSegmentation().GetSegment(muscle_id).Modified()


def test_export_of_edited_slices_writes_exactly_those_with_their_edits(scene, tmp_path):
    ct, _ = phantom()
    stored = ct.reoriented((0, 1, 2), (True, True, False))  # slices stored superior to inferior, rows P to A
    volume_node = add_volume_node(stored, "leg 1/CT")
    logic = SegmentationLogic()
    segmentation_node, _ = logic.process(volume_node, engine=AnteriorRightEngine())
    erase_muscle(segmentation_node, [1, 3])

    result = logic.exportTrainingPairs(segmentation_node, volume_node, tmp_path / "pairs", format="nifti",
                                       slices="edited")

    assert result.slices == display_index_of_stored_slices(stored, [1, 3])
    labels = sorted((tmp_path / "pairs").glob("*-label.nii.gz"))
    assert [path.name for path in labels] == [f"leg_1_CT-{index:04d}-label.nii.gz" for index in result.slices]
    stored_s = {k: stored.ras_of_index([[k, 0, 0]])[0, 2] for k in (1, 3)}
    for path in labels:
        pair = read_volume(path)
        assert 2 not in pair.array and np.isin(pair.array, [1, 3, 4]).any()
    assert {round(read_volume(path).ijk_to_ras[2, 3], 3) for path in labels} == {round(s, 3) for s in stored_s.values()}


def test_export_all_or_a_range_appends_to_an_nnunet_dataset(scene, tmp_path):
    ct, truth = phantom()
    volume_node = add_volume_node(ct)
    logic = SegmentationLogic()
    segmentation_node, _ = logic.process(volume_node, engine=AnteriorRightEngine())
    dataset = tmp_path / "Dataset901_Legs"
    first = logic.exportTrainingPairs(segmentation_node, volume_node, dataset)
    assert first.slices == list(range(ct.array.shape[0]))
    earlier = {path: path.read_bytes() for path in dataset.rglob("case_*")}
    assert len(earlier) == 2 * ct.array.shape[0]

    positions = truth.ras_of_index([[k, 0, 0] for k in range(ct.array.shape[0])])[:, 2]
    by_mm = logic.exportTrainingPairs(segmentation_node, volume_node, dataset, slices="range",
                                      range_mm=(positions[2], positions[3]))
    by_index = logic.exportTrainingPairs(segmentation_node, volume_node, dataset, slices="range", slice_range=(4, 5))

    assert by_mm.slices == [2, 3] and by_index.slices == [4]
    assert all(path.read_bytes() == content for path, content in earlier.items())
    cases = sorted(path.name for path in (dataset / "labelsTr").iterdir())
    assert cases == [f"case_{number:04d}.png" for number in range(ct.array.shape[0] + 3)]
    assert json.loads((dataset / "dataset.json").read_text())["numTraining"] == len(cases)


def test_export_choices_that_cannot_work_get_clear_errors(scene, tmp_path):
    ct, _ = phantom()
    volume_node = add_volume_node(ct)
    logic = SegmentationLogic()
    segmentation_node, _ = logic.process(volume_node, engine=AnteriorRightEngine())
    export = lambda **options: logic.exportTrainingPairs(segmentation_node, volume_node, tmp_path / "out", **options)  # noqa: E731
    with pytest.raises(ExportError, match="nothing was edited"):
        export(slices="edited")
    with pytest.raises(ExportError, match="axial range"):
        export(slices="range")
    with pytest.raises(ExportError, match="axial range"):
        export(slices="all", slice_range=(0, 2))
    with pytest.raises(ExportError, match="choose one of"):
        export(slices="changed")

    path = tmp_path / "from_file.seg.nrrd"
    storage = scene.scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.WriteData(segmentation_node)
    loaded = scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "loaded")
    assert storage.ReadData(loaded)
    with pytest.raises(ExportError, match="export all slices or a range"):
        logic.exportTrainingPairs(loaded, volume_node, tmp_path / "out", slices="edited")
    assert not (tmp_path / "out").exists()


def test_widget_path_runs_in_a_worker_thread_with_one_settings_object(scene):
    """What the module's widget does: settings from its choices, the work in a worker thread, the scene changed
    only when finishing on this (main) thread; a cancel from the main thread leaves the scene as it was."""
    from LegSegNetLib.synthetic.leg_phantom import make_leg_phantom
    from SlicerLegSegNetLib.model_logic import THRESHOLD_CHOICE

    ct, truth = make_leg_phantom(seed=3, shape=(6, 96, 96), orientation="LPS")
    volume_node = add_volume_node(ct)
    logic = SegmentationLogic(scene.scene)
    positions = slice_layout(ct).positions_mm
    settings = THRESHOLD_CHOICE.settings(device="cpu", range_mm=(positions[1], positions[4]))

    nodes_before = scene.scene.GetNumberOfNodes()
    gate = threading.Event()
    cancelled = logic.startSegmentation(volume_node, settings)
    # The first progress report waits until the main thread has asked to cancel.
    thread = threading.Thread(target=cancelled.run, args=(lambda done, total: gate.wait(5),))
    thread.start()
    cancelled.cancel()
    gate.set()
    thread.join(30)
    assert cancelled.done()
    with pytest.raises(Cancelled):
        logic.finishSegmentation(cancelled)
    assert scene.scene.GetNumberOfNodes() == nodes_before

    task = logic.startSegmentation(volume_node, settings)
    assert scene.scene.GetNumberOfNodes() == nodes_before  # starting touches nothing
    task.start().join(60)
    assert task.done() and task.progress()[0] == task.progress()[1] == 4
    assert scene.scene.GetNumberOfNodes() == nodes_before  # nor does the work itself
    segmentation_node, table_node = logic.finishSegmentation(task)
    labels = mrml_segmentation.labels_from_segmentation(segmentation_node, volume_node)
    display = slice_layout(ct).display_view(labels)
    assert not display[[0, 5]].any() and display[1:5].any()  # only the slices in the chosen range
    truth_view = slice_layout(truth).display_view(truth.array)[1:5]
    assert np.mean(display[1:5][truth_view > 0] == truth_view[truth_view > 0]) > 0.8
    assert len(table_rows(table_node)) >= len(TISSUES)
    assert segmentation_node.GetSegmentation().GetNumberOfSegments() == len(TISSUES)


class ThighGroupEngine(AnteriorRightEngine):
    """A model with its own labels: muscle groups and subcutaneous fat (values 1..3)."""

    label_set = label_set_from_names({"background": 0, "quadriceps": 1, "hamstrings": 2, "SAT": 3})

    def segment_slices(self, hu_slices, pixel_spacing_mm):
        return np.minimum(super().segment_slices(hu_slices, pixel_spacing_mm), 3)


def test_a_models_own_labels_become_named_segments_and_tables(scene):
    ct, _ = phantom(seed=5)
    volume_node = add_volume_node(ct)
    segmentation_node, table_node = SegmentationLogic().process(volume_node, engine=ThighGroupEngine())
    segmentation = segmentation_node.GetSegmentation()
    names = [segmentation.GetSegment(segment_id).GetName() for segment_id in segmentation.GetSegmentIDs()]
    assert names == ["Quadriceps femoris muscle", "Posterior muscle of thigh structure", "Subcutaneous fat"]
    assert [row["tissue"] for row in table_rows(table_node)] == ["quadriceps", "hamstrings", "SAT"]
    logic = SegmentationLogic()
    summary = table_rows(logic.summaryTable(table_node))[0]
    assert "quadriceps_IMAT_fraction" in summary and "SAT_IMAT_fraction" not in summary
    areas = table_rows(logic.sliceAreaTable(table_node))
    assert set(areas[0]) == {"slice_index", "S_mm", "quadriceps_area_cm2", "hamstrings_area_cm2", "SAT_area_cm2"}
    label_set, modality = mrml_segmentation.label_set_of(segmentation_node)
    assert label_set == ThighGroupEngine.label_set and modality == "CT"
    labels = mrml_segmentation.labels_from_segmentation(segmentation_node, volume_node, label_set=label_set)
    layout = slice_layout(ct)
    expected = ThighGroupEngine().segment_slices(layout.display_view(ct.array).astype(np.float32), (1, 1))
    np.testing.assert_array_equal(layout.display_view(labels), expected)
    before = tissue_volume(table_node, "hamstrings")
    segmentation.RemoveSegment(segmentation.GetSegmentIdBySegmentName("Posterior muscle of thigh structure"))
    quadriceps = tissue_volume(table_node, "quadriceps")
    logic.computeMeasurements(segmentation_node, volume_node, table_node)  # re-measured with the model's labels
    assert before > 0 and [row["tissue"] for row in table_rows(table_node)] == ["quadriceps", "SAT"]
    assert tissue_volume(table_node, "quadriceps") == quadriceps
    with pytest.raises(ExportError, match="LegSegNet's four tissues.*quadriceps, SAT"):
        logic.exportTrainingPairs(segmentation_node, volume_node, "unused")
    with pytest.raises(ValueError, match="comparisons cover LegSegNet's four tissues"):
        logic.compareWithReference(segmentation_node, volume_node)


def test_a_model_with_its_own_labels_empties_the_sites_an_earlier_run_wrote_into_the_same_outputs(scene):
    from LegSegNetLib.synthetic.whole_leg_phantom import make_whole_leg_phantom

    ct, _, _ = make_whole_leg_phantom(seed=1)
    volume_node = add_volume_node(ct)
    logic = SegmentationLogic(scene.scene)
    segmentation_node, table_node = logic.process(volume_node, engine="threshold")
    assert table_rows(logic.sitesTable(table_node)) and logic.sitePoints(table_node).GetNumberOfControlPoints()
    logic.process(volume_node, segmentation_node, table_node, engine=ThighGroupEngine())
    assert table_rows(logic.sitesTable(table_node)) == []  # no stale sites beside the new tissue table
    assert logic.sitePoints(table_node).GetNumberOfControlPoints() == 0


class DixonThighEngine(ThighGroupEngine):
    modality = "MR"


def test_dixon_images_give_fat_fractions_per_label(scene):
    ct, _ = phantom(seed=6)
    volume_node = add_volume_node(ct)
    fat = add_volume_node(ct.with_array(np.full(ct.array.shape, 30, np.int16)), "fat")
    water = add_volume_node(ct.with_array(np.full(ct.array.shape, 70, np.int16)), "water")
    logic = SegmentationLogic()
    _, table_node = logic.process(volume_node, engine=DixonThighEngine(), fatVolume=fat, waterVolume=water,
                                  imat_fat_fraction=0.25)
    summary = table_rows(logic.summaryTable(table_node))[0]
    assert summary["quadriceps_fat_fraction"] == pytest.approx(0.3)  # 30 / (30 + 70) everywhere
    assert summary["quadriceps_IMAT_fraction"] == 1.0 and "quadriceps_mean_HU" not in summary
    with pytest.raises(InputError, match="both the fat and the water"):
        logic.process(volume_node, engine=DixonThighEngine(), fatVolume=fat)


def test_a_dicom_volumes_patient_size_reaches_the_sites_unless_the_settings_give_a_height(scene, caplog):
    from LegSegNetLib.synthetic.whole_leg_phantom import make_whole_leg_phantom
    from LegSegNetLib.settings import MeasurementSettings

    ct, _, _ = make_whole_leg_phantom(seed=1)
    volume_node = add_volume_node(ct)
    volume_node.SetAttribute("DICOM.instanceUIDs", "1.2.3.1 1.2.3.2")  # as Slicer's DICOM plugin leaves it
    database = {("1.2.3.1", "0010,1020"): "1.83"}  # stands in for slicer.dicomDatabase, absent from slicer-core
    logic = SegmentationLogic(scene.scene, lambda uid, tag: database.get((uid, tag), ""))

    def heights(table_node):
        return {(round(row["height_m"], 6), row["height_source"]) for row in table_rows(logic.sitesTable(table_node))}

    segmentation_node, table_node = logic.process(volume_node, engine="threshold")
    assert heights(table_node) == {(1.83, "DICOM PatientSize")}
    measured = next(row for row in table_rows(logic.sitesTable(table_node)) if row["measured"])
    assert measured["SM_index_cm2_m2"] == pytest.approx(measured["SM_area_cm2"] / 1.83 ** 2)
    assert logic.remeasureSite(logic.sitePoints(table_node), 0)["height_source"] == "DICOM PatientSize"
    logic.computeMeasurements(segmentation_node, volume_node, table_node, MeasurementSettings(height_m=1.6))
    assert heights(table_node) == {(1.6, "given")}  # the settings' height wins

    database[("1.2.3.1", "0010,1020")] = "183"  # centimetres: not used, and said
    logic.computeMeasurements(segmentation_node, volume_node, table_node)
    assert {source for _, source in heights(table_node)} == {""}
    assert "'CT': the DICOM PatientSize '183' is not a height in metres" in caplog.text
    assert SegmentationLogic(scene.scene).patientHeight(volume_node) is None  # no DICOM database here


def test_sites_become_named_points_and_a_table_and_a_moved_point_is_measured_again(scene):
    from LegSegNetLib.synthetic.whole_leg_phantom import make_whole_leg_phantom
    from SlicerLegSegNetLib import mrml_sites

    ct, truth, exact = make_whole_leg_phantom(seed=1)
    volume_node = add_volume_node(ct)
    logic = SegmentationLogic(scene.scene)
    _, table_node = logic.process(volume_node, engine="threshold")

    summary = logic.summaryTable(table_node)
    thigh = summary.GetTable().GetColumnByName("right_thigh_SM_volume_cm3").GetValue(0)
    assert 2000 < thigh < 6000 and summary.GetColumnUnitLabel("right_thigh_SM_volume_cm3") == "cm3"
    rows = table_rows(logic.sitesTable(table_node))
    assert [(row["site"], row["side"]) for row in rows][:2] == [("mid_thigh", "right"), ("mid_thigh", "left")]
    assert all(row["measured"] == 1 for row in rows)
    points = logic.sitePoints(table_node)
    assert points.IsA("vtkMRMLMarkupsFiducialNode") and points.GetNumberOfControlPoints() == len(rows)
    assert points.GetDisplayNode() is not None
    labels = [points.GetNthControlPointLabel(index) for index in range(points.GetNumberOfControlPoints())]
    assert labels[:2] == ["mid_thigh right", "mid_thigh left"]
    position = [0.0, 0.0, 0.0]
    points.GetNthControlPointPosition(0, position)
    assert position[2] == pytest.approx(rows[0]["slice_S_mm"]) and position[0] > 0  # the right leg: R > 0
    assert abs(position[2] - exact.sites["right"]["mid_thigh"]) <= 5.0

    moved_to = next(row["slice_S_mm"] for row in rows if (row["site"], row["side"]) == ("tibia_66", "right"))
    points.SetNthControlPointPosition(0, position[0], position[1], moved_to)
    row = logic.remeasureSite(points, 0)
    by_key = {(r["site"], r["side"]): r for r in table_rows(logic.sitesTable(table_node))}
    tibia_66 = by_key[("tibia_66", "right")]
    assert row["measured"] and by_key[("mid_thigh", "right")]["slice_S_mm"] == pytest.approx(tibia_66["slice_S_mm"])
    assert by_key[("mid_thigh", "right")]["SM_area_cm2"] == pytest.approx(tibia_66["SM_area_cm2"])
    assert by_key[("mid_thigh", "left")]["SM_area_cm2"] == rows[1]["SM_area_cm2"]  # the other leg untouched
    right, left = by_key[("mid_thigh", "right")]["SM_area_cm2"], by_key[("mid_thigh", "left")]["SM_area_cm2"]
    for side in ("right", "left"):  # the site's asymmetry follows the moved leg
        assert by_key[("mid_thigh", side)]["SM_area_asymmetry_pct"] == pytest.approx(
            100 * (right - left) / ((right + left) / 2))
    with pytest.raises(ValueError, match="not a LegSegNet site point"):
        mrml_sites.site_of_label("my point")
