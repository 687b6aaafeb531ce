"""Label maps written as Slicer segmentations and plain images keep values, geometry and tissue metadata;
writes never clobber a user's file or leave a partial one."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import slicerio

from LegSegNetLib.reading.volume_files import read_volume
from LegSegNetLib.writing.outputs import OutputExistsError, OutputWriteError
from LegSegNetLib.writing.labelmaps import write_labelmap
from LegSegNetLib.tissues import TISSUES
from LegSegNetLib.reading.volume import LPS_TO_RAS, Volume


def oblique_labels():
    angle = np.deg2rad(12)
    directions = np.array([[np.cos(angle), 0, np.sin(angle)], [0, -1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    array = np.zeros((6, 9, 11), np.uint8)  # [k, j, i]
    array[1:3, 2:5, 3:8] = 1
    array[2, 4, 6] = 2
    array[4:6, 0:9, 10] = 4  # no IMAT (3) at all
    return Volume.from_spacing(array, (0.7, 0.9, 2.5), (30.0, -12.0, 100.0), directions)


def test_seg_nrrd_reads_back_with_slicerio(tmp_path):
    labels = oblique_labels()
    path = tmp_path / "legs.seg.nrrd"
    write_labelmap(labels, path)
    segmentation = slicerio.read_segmentation(str(path))

    np.testing.assert_allclose(segmentation["ijkToLPS"], LPS_TO_RAS @ labels.ijk_to_ras, atol=1e-6)
    np.testing.assert_array_equal(np.transpose(segmentation["voxels"], (2, 1, 0)), labels.array)
    segments = {segment["labelValue"]: segment for segment in segmentation["segments"]}
    assert sorted(segments) == [1, 2, 3, 4]
    for tissue in TISSUES:
        segment = segments[tissue.value]
        assert segment["name"] == tissue.name
        assert segment["layer"] == 0
        np.testing.assert_allclose(segment["color"], tissue.color)
        terminology = segment["terminology"]
        assert terminology["category"] == list(tissue.category)
        assert terminology["type"] == list(tissue.type)
        assert terminology.get("anatomicRegion") == (list(tissue.region) if tissue.region else None)
    assert segments[2]["terminology"]["type"][1] == "127954009"  # skeletal muscle
    assert segments[3]["terminology"]["anatomicRegion"][1] == "71616004"  # fat in muscle
    # Extents are inclusive IJK bounding boxes; an absent segment has an empty one.
    assert segments[1]["extent"] == [3, 7, 2, 4, 1, 2]
    assert segments[2]["extent"] == [6, 6, 4, 4, 2, 2]
    assert segments[3]["extent"] == [0, -1, 0, -1, 0, -1]
    assert segmentation["masterRepresentation"] == "Binary labelmap"


@pytest.mark.parametrize("name", ["labels.nii.gz", "labels.nii", "labels.nrrd", "labels.mha", "LABELS.NII.GZ"])
def test_plain_label_maps_keep_values_and_geometry(tmp_path, name):
    labels = oblique_labels()
    write_labelmap(labels, tmp_path / name)
    again = read_volume(tmp_path / name)
    assert again.array.dtype == np.uint8
    np.testing.assert_array_equal(again.array, labels.array)
    np.testing.assert_allclose(again.ijk_to_ras, labels.ijk_to_ras, atol=1e-5)
    # The voxel at a known physical point carries the same label.
    point = labels.ras_of_index((2, 4, 6))
    assert again.array[tuple(np.round(again.index_of_ras(point)[0]).astype(int))] == 2


def test_unknown_extension_is_refused(tmp_path):
    with pytest.raises(ValueError, match="seg.nrrd"):
        write_labelmap(oblique_labels(), tmp_path / "labels.png")


def test_labels_that_are_not_tissues_are_refused(tmp_path):
    labels = oblique_labels()
    labels.array[0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"\[7\] are not among the model's labels"):
        write_labelmap(labels, tmp_path / "labels.seg.nrrd")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_kept_unless_overwrite(tmp_path):
    path = tmp_path / "labels.seg.nrrd"
    path.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_labelmap(oblique_labels(), path)
    assert path.read_bytes() == b"precious"
    write_labelmap(oblique_labels(), path, overwrite=True)
    assert slicerio.read_segmentation(str(path))["voxels"].shape == (11, 9, 6)
    assert [p.name for p in tmp_path.iterdir()] == ["labels.seg.nrrd"]


def test_unwritable_destination_is_reported(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file")
    with pytest.raises(OutputWriteError, match="not_a_folder"):
        write_labelmap(oblique_labels(), blocker / "labels.nii.gz")


@pytest.mark.parametrize("name", ["labels.seg.nrrd", "labels.nii.gz"])
def test_full_disk_leaves_no_partial_output(tmp_path, name):
    """A file-size limit makes the write fail part-way, as a full disk does: no output, no leftovers."""
    script = textwrap.dedent(f"""
        import resource, signal, sys
        import numpy as np
        from LegSegNetLib.writing.outputs import OutputWriteError
        from LegSegNetLib.writing.labelmaps import write_labelmap
        from LegSegNetLib.reading.volume import Volume
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG errors instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
        labels = np.random.default_rng(0).integers(0, 5, (40, 128, 128)).astype(np.uint8)
        try:
            write_labelmap(Volume.from_spacing(labels), {str(tmp_path / name)!r})
        except OutputWriteError as error:
            print("refused:", error)
            sys.exit(3)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=_repo_root())
    assert result.returncode == 3, result.stderr
    assert "cannot write" in result.stdout
    assert list(tmp_path.iterdir()) == []


def _repo_root():
    from pathlib import Path
    return Path(__file__).resolve().parent.parent


def test_slicer_reads_the_segmentation(tmp_path):
    """Slicer's own segmentation storage node (PyPI slicer-core) loads the file as one shared layer."""
    slicer = pytest.importorskip("slicer")
    import vtk

    labels = oblique_labels()
    write_labelmap(labels, tmp_path / "legs.seg.nrrd")
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(tmp_path / "legs.seg.nrrd"))
    assert storage.ReadData(node) == 1
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfLayers() == 1
    for index, tissue in enumerate(TISSUES):
        segment = segmentation.GetNthSegment(index)
        terminology = vtk.reference("")
        segment.GetTag("TerminologyEntry", terminology)
        assert (segment.GetName(), segment.GetLabelValue()) == (tissue.name, tissue.value)
        assert f"SCT^{tissue.type[1]}^" in str(terminology)
    layer = segmentation.GetSegment("SM").GetRepresentation("Binary labelmap")
    image_to_world = vtk.vtkMatrix4x4()
    layer.GetImageToWorldMatrix(image_to_world)
    matrix = np.array([[image_to_world.GetElement(r, c) for c in range(4)] for r in range(4)])
    np.testing.assert_allclose(matrix, labels.ijk_to_ras, atol=1e-5)
