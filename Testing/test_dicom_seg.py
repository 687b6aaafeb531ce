"""DICOM SEG references (made by another tool or a PACS AI product): built with highdicom on a small CT series,
read as tissue labels at the right physical positions, and compared with `legsegnet compare`."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from LegSegNetLib.cli import main
from LegSegNetLib.measuring.comparison import align_reference
from LegSegNetLib.measuring.measurements import dice
from LegSegNetLib.reading import dicom_seg
from LegSegNetLib.reading.label_files import read_label_map
from LegSegNetLib.reading.volume_files import read_volume, write_volume
from LegSegNetLib.tissues import TISSUE_BY_KEY
from LegSegNetLib.writing.labelmaps import write_labelmap
from test_hostile_inputs import write_dicom_series

highdicom = pytest.importorskip("highdicom")
pydicom = pytest.importorskip("pydicom")

SAT, SM, IMAT, BONE = (TISSUE_BY_KEY[key].value for key in ("SAT", "SM", "IMAT", "Bone"))
SLICES, ROWS, COLUMNS = 6, 8, 10
UPRIGHT = ("1\\0\\0\\0\\1\\0", [index * 2.5 for index in range(SLICES)])
FLIPPED = ("-1\\0\\0\\0\\-1\\0", [10.0 - index * 2.5 for index in range(SLICES)])  # rows, columns and slices
# (SegmentLabel, SNOMED CT code of its SegmentedPropertyType, tissue value); muscle is known by its code only
SEGMENTS = (("Bone", "272673000", BONE), ("SAT", "67769002", SAT), ("muscle (manual)", "127954009", SM),
            ("IMAT", "55603005", IMAT))


def labels_by_file() -> np.ndarray:
    """Tissue labels [file, row, column], asymmetric in every axis, on slices 1, 2 and 4 only (3 lies between)."""
    labels = np.zeros((SLICES, ROWS, COLUMNS), np.uint8)
    labels[1, 1:4, 2:7] = SAT
    labels[2, 2:6, 1:3] = SM
    labels[2, 5:7, 6:9] = BONE
    labels[4, 0:2, 7:10] = IMAT
    labels[4, 4, 4] = SM
    return labels


def write_ct(folder, orientation) -> None:
    """A CT series whose every voxel holds the index of its file, so the CT grid says which file a slice is."""
    direction, positions = orientation
    planes = np.repeat(np.arange(SLICES, dtype=np.int16), ROWS * COLUMNS).reshape(SLICES, ROWS, COLUMNS)
    write_dicom_series(folder, planes, positions, tags=(("0020|0037", direction), ("0018|0050", "2.5"),
                                                         ("0020|0052", "1.2.826.0.1.3680043.2.1.2")))


def write_seg(path, ct_folder, pixel_array, segments=SEGMENTS, segmentation_type="BINARY") -> None:
    """A SEG of the CT in `ct_folder`: `pixel_array` [file, row, column] of segment numbers (1.. in `segments`
    order), or [file, row, column, segment] of binary or fractional values."""
    sources = [pydicom.dcmread(file) for file in sorted(ct_folder.iterdir())]
    for source in sources:  # GDCM writes SpacingBetweenSlices 1 in a flipped series; highdicom would copy it
        source.SpacingBetweenSlices = "2.5"
    descriptions = [highdicom.seg.SegmentDescription(
        segment_number=number, segment_label=label,
        segmented_property_category=highdicom.sr.CodedConcept("85756007", "SCT", "Tissue"),
        segmented_property_type=highdicom.sr.CodedConcept(code, "SCT", label),
        algorithm_type=highdicom.seg.SegmentAlgorithmTypeValues.MANUAL)
        for number, (label, code, _) in enumerate(segments, start=1)]
    highdicom.seg.Segmentation(
        source_images=sources, pixel_array=pixel_array, segmentation_type=segmentation_type,
        segment_descriptions=descriptions, series_instance_uid=highdicom.UID(), series_number=2,
        sop_instance_uid=highdicom.UID(), instance_number=1, manufacturer="test", manufacturer_model_name="test",
        software_versions="0", device_serial_number="0").save_as(path)


def segment_numbers(labels: np.ndarray, segments=SEGMENTS) -> np.ndarray:
    lookup = np.zeros(256, np.uint8)
    for number, (_, _, value) in enumerate(segments, start=1):
        lookup[value] = number
    return lookup[labels]


@pytest.fixture(params=[UPRIGHT, FLIPPED], ids=["upright", "flipped"])
def scan(tmp_path, request):
    """(CT folder, the CT volume, the known labels on the CT's grid, the SEG file)."""
    write_ct(tmp_path / "ct", request.param)
    ct = read_volume(tmp_path / "ct")
    on_ct_grid = labels_by_file()[ct.array[:, 0, 0]]  # CT slice k is file ct.array[k, 0, 0]
    write_seg(tmp_path / "ref.dcm", tmp_path / "ct", segment_numbers(labels_by_file()))
    return tmp_path / "ct", ct, on_ct_grid, tmp_path / "ref.dcm"


def test_seg_labels_sit_where_the_same_labels_as_nifti_on_the_ct_grid_do(scan, tmp_path):
    _, ct, on_ct_grid, seg = scan
    write_volume(ct.with_array(on_ct_grid), tmp_path / "same.nii.gz")
    nifti = read_label_map(tmp_path / "same.nii.gz").labels
    read = read_label_map(seg)
    assert read.labels.array.shape == (4, ROWS, COLUMNS)  # slices 1 to 4: the frames the SEG holds, 3 empty
    assert read.notes == ()
    on_nifti_grid, _ = align_reference(read.labels, nifti)
    assert np.array_equal(on_nifti_grid.array, nifti.array)
    labelled = np.bincount(read.labels.array.ravel(), minlength=5)[1:]  # none lost beyond the CT's grid either
    assert np.array_equal(labelled, np.bincount(nifti.array.ravel(), minlength=5)[1:])


def test_compare_of_a_seg_nrrd_prediction_against_the_seg(scan, tmp_path):
    _, ct, on_ct_grid, seg = scan
    predicted = on_ct_grid.copy()
    predicted[predicted == SM] = np.where(np.arange(np.count_nonzero(predicted == SM)) % 3 == 0, 0, SM)
    write_labelmap(ct.with_array(predicted), tmp_path / "pred.seg.nrrd")
    assert main(["compare", str(tmp_path / "pred.seg.nrrd"), str(seg), "--out", str(tmp_path / "out")]) == 0
    with open(tmp_path / "out" / "per_case.csv", newline="") as stream:
        dices = {row["tissue"]: float(row["dice"]) for row in csv.DictReader(stream)}
    assert dices["SAT"] == dices["IMAT"] == dices["Bone"] == 1.0
    assert dices["SM"] == pytest.approx(dice(predicted == SM, on_ct_grid == SM)) and dices["SM"] < 1


def test_segments_named_after_no_tissue_are_noted_or_refused(tmp_path):
    write_ct(tmp_path / "ct", UPRIGHT)
    vessels_and_sat = (("Vessels", "59820001", 9), ("SAT", "67769002", SAT))
    write_seg(tmp_path / "both.dcm", tmp_path / "ct", segment_numbers(labels_by_file(), vessels_and_sat),
              vessels_and_sat)
    read = read_label_map(tmp_path / "both.dcm")
    assert set(np.unique(read.labels.array)) == {0, SAT} and "'Vessels' is not a tissue" in read.notes[0]
    write_seg(tmp_path / "vessels.dcm", tmp_path / "ct", (labels_by_file() > 0).astype(np.uint8),
              vessels_and_sat[:1])
    with pytest.raises(ValueError, match=r"^no segment of .*vessels.dcm is named after a tissue [^\n]*$"):
        read_label_map(tmp_path / "vessels.dcm")


def test_overlapping_segments_are_refused_and_fractional_ones_read_from_one_half(tmp_path):
    write_ct(tmp_path / "ct", UPRIGHT)
    sat_and_sm = SEGMENTS[1:3]
    stacked = np.zeros((SLICES, ROWS, COLUMNS, 2), np.uint8)
    stacked[2, 1:4, 1:4, 0] = stacked[2, 3:6, 3:6, 1] = 1  # one voxel, (2, 3, 3), in both
    write_seg(tmp_path / "overlap.dcm", tmp_path / "ct", stacked, sat_and_sm)
    with pytest.raises(ValueError, match=r"^[^\n]*overlapping segments[^\n]*$"):
        read_label_map(tmp_path / "overlap.dcm")
    fractions = np.zeros((SLICES, ROWS, COLUMNS, 2), np.float32)
    fractions[2, 1:4, 1:4, 0], fractions[2, 5, 5:8, 1], fractions[2, 6, 5:8, 1] = 0.4, 0.6, 0.5
    write_seg(tmp_path / "fractional.dcm", tmp_path / "ct", fractions, sat_and_sm, "FRACTIONAL")
    labels = read_label_map(tmp_path / "fractional.dcm").labels.array
    assert np.count_nonzero(labels == SM) == 6 and not (labels == SAT).any()


def test_missing_highdicom_is_named_with_the_extra(scan, monkeypatch):
    monkeypatch.setattr(dicom_seg.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"needs the Python package highdicom: .*\[validate\]"):
        read_label_map(scan[3])


def without_slice_spacing(path) -> None:
    """The SEG at `path` as some tools write it: no SpacingBetweenSlices (its SliceThickness kept)."""
    dataset = pydicom.dcmread(path)
    del dataset.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SpacingBetweenSlices
    dataset.save_as(path)


@pytest.mark.parametrize("labelled_slices", [(1, 5), (3,)], ids=["every-fourth", "one"])
def test_a_sparse_seg_that_does_not_state_its_slice_spacing_is_refused(tmp_path, labelled_slices):
    """Read from its frames alone it would be slices 10 mm thick (or 1 mm for one frame), spread by the
    resampling onto the CT slices between: a wrong Dice with no warning."""
    write_ct(tmp_path / "ct", UPRIGHT)
    labels = np.zeros((SLICES, ROWS, COLUMNS), np.uint8)
    labels[list(labelled_slices), 2:5, 2:5] = SAT
    write_seg(tmp_path / "sparse.dcm", tmp_path / "ct", segment_numbers(labels))
    assert np.count_nonzero(read_label_map(tmp_path / "sparse.dcm").labels.array) == 9 * len(labelled_slices)
    without_slice_spacing(tmp_path / "sparse.dcm")
    with pytest.raises(ValueError, match=r"^[^\n]*does not state the spacing between its slices[^\n]*$"):
        read_label_map(tmp_path / "sparse.dcm")


def test_a_whole_seg_that_does_not_state_its_slice_spacing_is_read(scan, tmp_path):
    ct_folder, ct, _, _ = scan
    everywhere = labels_by_file()
    everywhere[:, 0, 0] = SAT  # a voxel on every slice: frames for all of them
    write_seg(tmp_path / "whole.dcm", ct_folder, segment_numbers(everywhere))
    without_slice_spacing(tmp_path / "whole.dcm")
    read = read_label_map(tmp_path / "whole.dcm").labels
    on_ct = ct.with_array(everywhere[ct.array[:, 0, 0]])  # CT slice k is file ct.array[k, 0, 0]
    aligned, _ = align_reference(read, on_ct)
    assert read.array.shape == ct.array.shape and np.array_equal(aligned.array, on_ct.array)
