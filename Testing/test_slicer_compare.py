"""SegmentationLogic.compareWithReference on real MRML (PyPI slicer-core): the correction effort against the labels
LegSegNet first wrote, a manual reference segmentation recognised by its segment names, a reference file, and
references that cannot be used."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer")
pytest.importorskip("monai")

from slicer_scene import mrml_scene  # noqa: E402,F401 (pytest fixture)
from test_slicer_logic import AnteriorRightEngine, add_volume_node, erase_muscle, phantom, table_rows  # noqa: E402

from LegSegNetLib.measuring.measurements import dice  # noqa: E402
from LegSegNetLib.reading.volume_files import sitk_from_volume, write_volume  # noqa: E402
from LegSegNetLib.segmenting.engines.threshold import ThresholdEngine  # noqa: E402
from LegSegNetLib.synthetic.leg_phantom import make_leg_phantom  # noqa: E402
from LegSegNetLib.tissues import TISSUE_BY_KEY, TISSUES  # noqa: E402
from LegSegNetLib.writing.labelmaps import label_extents  # noqa: E402
from SlicerLegSegNetLib import mrml_segmentation  # noqa: E402
from SlicerLegSegNetLib.mrml_comparison import COMPARISON_COLUMNS  # noqa: E402
from SlicerLegSegNetLib.segmentation_logic import SegmentationLogic  # noqa: E402


def rows_by_tissue(table_node):
    return {row["tissue"]: row for row in table_rows(table_node)}


def test_comparison_with_the_original_labels_measures_the_correction(mrml_scene):
    ct, truth = phantom()
    volume_node = add_volume_node(ct)
    logic = SegmentationLogic()
    segmentation_node, _ = logic.process(volume_node, engine=AnteriorRightEngine())
    original = logic.originalLabels(segmentation_node).array
    erase_muscle(segmentation_node, [1, 3])
    edited = mrml_segmentation.labels_from_segmentation(segmentation_node, volume_node)
    erased = np.count_nonzero(original == 2) - np.count_nonzero(edited == 2)

    table_node = logic.compareWithReference(segmentation_node, volume_node)

    rows = rows_by_tissue(table_node)
    assert [column.name for column in COMPARISON_COLUMNS] == [
        table_node.GetTable().GetColumnName(index) for index in range(table_node.GetTable().GetNumberOfColumns())]
    assert rows["SM"]["dice"] == pytest.approx(dice(edited == 2, original == 2)) and rows["SM"]["dice"] < 1
    assert rows["SM"]["volume_difference_cm3"] == pytest.approx(-erased * truth.voxel_volume_mm3 / 1000)
    for key in ("SAT", "IMAT", "Bone"):  # untouched
        assert rows[key]["dice"] == 1.0 and rows[key]["hd95_mm"] == 0.0 and rows[key]["volume_difference_cm3"] == 0
    assert table_node.GetColumnProperty("hd95_mm", "unitLabel") == "mm"
    assert logic.compareWithReference(segmentation_node, volume_node, outputTable=table_node) is table_node


@pytest.fixture
def leg(mrml_scene):
    """A phantom segmented by the threshold engine in the module, and its truth."""
    ct, truth = make_leg_phantom(seed=3, shape=(3, 128, 128))
    volume_node = add_volume_node(ct, "leg")
    logic = SegmentationLogic()
    segmentation_node, _ = logic.process(volume_node, engine=ThresholdEngine())
    labels = mrml_segmentation.labels_from_segmentation(segmentation_node, volume_node)
    return logic, volume_node, segmentation_node, labels, truth


def manual_seg_nrrd(truth, path):
    """The truth as a hand-made Slicer segmentation: generic segment IDs, tissue names, other label values."""
    image = sitk_from_volume(truth.with_array((truth.array * 10).astype(np.uint8)))
    extents = label_extents(image)
    image.SetMetaData("Segmentation_ReferenceImageExtentOffset", "0 0 0")
    for index, tissue in enumerate(TISSUES):
        for field, value in (("ID", f"Segment_{index + 1}"), ("Name", tissue.name.upper()), ("Layer", "0"),
                             ("LabelValue", str(tissue.value * 10)), ("Extent", extents[tissue.value * 10])):
            image.SetMetaData(f"Segment{index}_{field}", value)
    sitk.WriteImage(image, str(path), True)


def test_a_manual_reference_segmentation_is_recognised_by_segment_names(leg, mrml_scene, tmp_path):
    logic, volume_node, segmentation_node, labels, truth = leg
    manual_seg_nrrd(truth, tmp_path / "manual.seg.nrrd")
    reference_node = load_segmentation(mrml_scene, tmp_path / "manual.seg.nrrd")

    rows = rows_by_tissue(logic.compareWithReference(segmentation_node, volume_node, reference_node))

    for tissue in TISSUES:
        expected = dice(labels == tissue.value, truth.array == tissue.value)
        assert rows[tissue.key]["dice"] == pytest.approx(expected), tissue.key
        assert rows[tissue.key]["dice"] > 0.7 and 0 <= rows[tissue.key]["hd95_mm"] < 20
    from_file = rows_by_tissue(logic.compareWithReference(segmentation_node, volume_node,
                                                          tmp_path / "manual.seg.nrrd"))
    assert all(from_file[key]["dice"] == pytest.approx(rows[key]["dice"]) for key in rows)


def load_segmentation(mrml_scene, path):
    node = mrml_scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", path.name)
    storage = mrml_scene.scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    return node


def test_a_reference_file_with_a_tissue_missing_gives_no_dice_for_it(leg, tmp_path):
    logic, volume_node, segmentation_node, labels, truth = leg
    write_volume(truth.with_array(np.where(truth.array == TISSUE_BY_KEY["IMAT"].value, 0, truth.array)),
                 tmp_path / "no_imat.nii.gz")
    rows = rows_by_tissue(logic.compareWithReference(segmentation_node, volume_node, tmp_path / "no_imat.nii.gz"))
    assert rows["IMAT"]["dice"] == 0.0 and math.isnan(rows["IMAT"]["hd95_mm"])
    assert "absent from the reference" in rows["IMAT"]["note"]


def test_a_reference_file_follows_the_volumes_parent_transform(leg, mrml_scene, tmp_path):
    """A reference file was made on the CT's file, so it lies where the volume lies before its parent transform."""
    logic, volume_node, segmentation_node, labels, truth = leg
    write_volume(truth, tmp_path / "truth.nii.gz")
    reference = tmp_path / "truth.nii.gz"
    untransformed = rows_by_tissue(logic.compareWithReference(segmentation_node, volume_node, reference))
    shift = np.eye(4)
    shift[0, 3] = 15.0  # mm to the patient's left: the phantom's legs no longer line up with the file's
    transform = mrml_scene.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(shift))
    for node in (volume_node, segmentation_node):
        node.SetAndObserveTransformNodeID(transform.GetID())
    moved = rows_by_tissue(logic.compareWithReference(segmentation_node, volume_node, reference))
    for tissue in TISSUES:
        assert untransformed[tissue.key]["dice"] > 0.8, tissue.key
        assert moved[tissue.key]["dice"] == pytest.approx(untransformed[tissue.key]["dice"]), tissue.key


def test_references_that_cannot_be_used_are_refused(leg, mrml_scene):
    logic, volume_node, segmentation_node, _, _ = leg
    unnamed = mrml_scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "unnamed")
    unnamed.GetSegmentation().AddEmptySegment("Segment_1", "Vessels")
    with pytest.raises(ValueError, match="named after"):
        logic.compareWithReference(segmentation_node, volume_node, unnamed)
    loaded = mrml_scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "from a file")
    with pytest.raises(ValueError, match="first wrote"):
        logic.compareWithReference(loaded, volume_node)
    with pytest.raises(ValueError, match="neither"):
        logic.compareWithReference(segmentation_node, volume_node, volume_node)


def test_under_a_parent_transform_the_original_labels_and_edits_still_line_up(mrml_scene):
    """The segment and its original labels live on the node's grid while the CT is measured in world
    coordinates: both must be placed by the same transform, or nothing would overlap."""
    from test_slicer_logic import tilted_volume_node

    _, volume_node, _ = tilted_volume_node(mrml_scene)
    logic = SegmentationLogic()
    segmentation_node, _ = logic.process(volume_node, engine=AnteriorRightEngine())
    rows = rows_by_tissue(logic.compareWithReference(segmentation_node, volume_node))
    assert all(rows[tissue.key]["dice"] == 1.0 for tissue in TISSUES if not math.isnan(rows[tissue.key]["dice"]))
    assert any(rows[tissue.key]["dice"] == 1.0 for tissue in TISSUES)
