"""A model's own labels: names, colours and SNOMED CT terms from dataset.json, the .seg.nrrd and tables named
from them, and per-label measurements (CT: HU and intramuscular fat; MR: intensities, Dixon fat fraction, IMAT)
checked against values worked out by hand."""

import json
import math

import numpy as np
import pytest
import slicerio

from LegSegNetLib.measuring.label_measurements import CT, MR, FatWater, compute_label_measurements, measure_labels
from LegSegNetLib.measuring.measurements import compute_measurements
from LegSegNetLib.reading.volume import Volume
from LegSegNetLib.tissues import FAT, LEGSEGNET_LABELS, MUSCLE, label_set_from_names
from LegSegNetLib.writing.labelmaps import write_labelmap
from LegSegNetLib.writing.tables import measurement_record, write_summary_table

L3_LABELS = {"background": 0, "psoas": 1, "erector_spinae": 2, "abdominal_wall": 3, "VAT": 4, "SAT": 5}


def test_known_label_names_get_their_snomed_codes_and_kinds():
    labels = {label.key: label for label in label_set_from_names(L3_LABELS).labels}
    assert labels["psoas"].type == ("SCT", "64038003", "Psoas major muscle")
    assert labels["erector_spinae"].type == ("SCT", "44947003", "Erector spinae muscle")
    assert labels["SAT"].type == ("SCT", "67769002", "Subcutaneous fat")
    assert labels["VAT"].type == ("SCT", "55603005", "Fat") and labels["VAT"].region[1] == "52731004"
    assert labels["abdominal_wall"].kind == MUSCLE and labels["abdominal_wall"].type[1] == "127954009"
    assert labels["VAT"].kind == FAT and labels["psoas"].kind == MUSCLE
    assert len({label.color for label in labels.values()}) == len(labels)


def test_unknown_names_get_generic_terms_and_the_four_tissues_are_recognised():
    other = label_set_from_names({"background": 0, "Soleus": 1, "tumour": 2})
    assert [label.kind for label in other.labels] == [MUSCLE, ""]
    assert other.labels[1].type == ("SCT", "85756007", "Tissue")
    assert label_set_from_names({"background": 0, "sat": 1, "SM": 2, "IMAT": 3, "Bone": 4}) is LEGSEGNET_LABELS
    with pytest.raises(ValueError, match="differ only"):
        label_set_from_names({"background": 0, "psoas left": 1, "psoas_left": 2})


def test_seg_nrrd_names_segments_from_the_label_set(tmp_path):
    label_set = label_set_from_names(L3_LABELS)
    array = np.zeros((2, 6, 6), np.uint8)
    array[0, 1:3, 1:3], array[1, 3:5, 2:4], array[1, 0, 0] = 1, 4, 5
    write_labelmap(Volume.from_spacing(array, (0.8, 0.8, 3.0)), tmp_path / "l3.seg.nrrd", label_set=label_set)
    segments = {segment["labelValue"]: segment for segment in slicerio.read_segmentation(str(tmp_path / "l3.seg.nrrd"))["segments"]}
    assert sorted(segments) == [1, 2, 3, 4, 5]
    assert segments[1]["id"] == "psoas" and segments[1]["name"] == "Psoas major muscle"
    assert segments[1]["terminology"]["type"] == ["SCT", "64038003", "Psoas major muscle"]
    with pytest.raises(ValueError, match=r"label values \[7\] are not among the model's labels"):
        write_labelmap(Volume.from_spacing(np.full((1, 2, 2), 7, np.uint8)), tmp_path / "x.seg.nrrd",
                       label_set=label_set)


def four_voxel_muscle(values, spacing=(1.0, 1.0, 2.0)):
    """One slice with a 2x2 psoas (label 1) holding `values` and a single VAT voxel (label 2)."""
    image = np.zeros((1, 4, 4), np.float32)
    labels = np.zeros((1, 4, 4), np.uint8)
    labels[0, :2, :2], labels[0, 3, 3] = 1, 2
    image[0, :2, :2] = np.reshape(values, (2, 2))
    return Volume.from_spacing(image, spacing), Volume.from_spacing(labels, spacing)


def test_ct_label_measurements_worked_by_hand():
    # psoas HU 40, 50, -100, -50: mean -15; population variance (1600+2500+10000+2500)/4 - 225 = 3925;
    # -100 and -50 lie in the fat range [-190, -30]: 2 of 4 voxels of 2 mm3 are intramuscular fat.
    image, labels = four_voxel_muscle([40, 50, -100, -50])
    label_set = label_set_from_names({"background": 0, "psoas": 1, "VAT": 2})
    result = compute_label_measurements(image, labels, label_set, CT)
    summary = result.summary
    assert summary["psoas_volume_cm3"] == pytest.approx(0.008)
    assert summary["psoas_mean_HU"] == pytest.approx(-15.0)
    assert summary["psoas_sd_HU"] == pytest.approx(math.sqrt(3925.0))
    assert summary["psoas_IMAT_volume_cm3"] == pytest.approx(0.004) and summary["psoas_IMAT_fraction"] == 0.5
    assert "VAT_IMAT_volume_cm3" not in summary  # intramuscular fat is measured inside muscles only
    assert [column.name for column in result.columns][:3] == ["psoas_volume_cm3", "psoas_mean_HU", "psoas_sd_HU"]
    assert [row["area_cm2"] for row in result.slice_rows] == [pytest.approx(0.04), pytest.approx(0.01)]


def test_mr_fat_fraction_and_imat_above_the_threshold_inside_muscle():
    # fat/(fat+water): 0.1, 0.3, 0.5 and undefined (0/0, left out): mean 0.3; above 0.1: two voxels.
    image, labels = four_voxel_muscle([200, 210, 190, 0])
    fat, _ = four_voxel_muscle([10, 30, 50, 0])
    water, _ = four_voxel_muscle([90, 70, 50, 0])
    label_set = label_set_from_names({"background": 0, "psoas": 1, "VAT": 2})
    summary = compute_label_measurements(image, labels, label_set, MR, FatWater(fat, water)).summary
    assert summary["psoas_fat_fraction"] == pytest.approx(0.3)
    assert summary["psoas_IMAT_fraction"] == 0.5
    assert summary["psoas_mean_intensity"] == pytest.approx(150.0) and "psoas_mean_HU" not in summary
    strict = compute_label_measurements(image, labels, label_set, MR, FatWater(fat, water, imat_threshold=0.4))
    assert strict.summary["psoas_IMAT_fraction"] == 0.25
    with pytest.raises(ValueError, match="between 0 and 1"):
        FatWater(fat, water, imat_threshold=10)
    with pytest.raises(ValueError, match="Dixon MRI"):
        compute_label_measurements(image, labels, label_set, CT, FatWater(fat, water))


def test_the_four_tissues_keep_legsegnets_measurements_and_tables_carry_other_columns(tmp_path):
    image, labels = four_voxel_muscle([40, 50, -100, -50])
    assert measure_labels(image, labels, LEGSEGNET_LABELS).summary == compute_measurements(image, labels).summary
    l3 = compute_label_measurements(image, labels, label_set_from_names({"background": 0, "psoas": 1, "VAT": 2}))
    records = [measurement_record("a.nii.gz", "legsegnet", compute_measurements(image, labels)),
               measurement_record("b.nii.gz", "legsegnet", l3)]
    write_summary_table(records, tmp_path / "m.csv")
    header = (tmp_path / "m.csv").read_text().splitlines()[0].split(",")
    assert "SM_volume_cm3" in header and "psoas_IMAT_fraction" in header
    twin = json.loads((tmp_path / "m.json").read_text())
    assert {column["name"] for column in twin["columns"]} == set(header)


def test_the_command_line_runs_a_native_mr_model_with_dixon_images(tmp_path):
    from model_factory import make_model_folder
    from test_nnunet_parity import leg_phantom_slices

    from LegSegNetLib.cli import main
    from LegSegNetLib.reading.volume_files import write_volume

    model = make_model_folder(tmp_path / "thigh", "ZScoreNormalization", seed=7, patch_size=(128, 128),
                              native={"spacing": (1.2, 1.2), "labels": ["quadriceps", "hamstrings", "SAT"],
                                      "channels": ("T1",)})
    intensities = np.clip(leg_phantom_slices((96, 96), count=3) + 1000.0, 0, None)
    image = Volume.from_spacing(intensities.astype(np.float32), (1.0, 1.0, 5.0))
    fat = image.with_array(np.full(intensities.shape, 20.0, np.float32))
    water = image.with_array(np.full(intensities.shape, 80.0, np.float32))
    for name, volume in (("t1", image), ("fat", fat), ("water", water)):
        write_volume(volume, tmp_path / f"{name}.nii.gz")
    status = main(["segment", str(tmp_path / "t1.nii.gz"), "--model", str(model), "--device", "cpu",
                   "--fat", str(tmp_path / "fat.nii.gz"), "--water", str(tmp_path / "water.nii.gz"),
                   "--imat-fat-fraction", "0.15", "--labelmap", str(tmp_path / "labels.seg.nrrd"),
                   "--measurements", str(tmp_path / "m.csv"), "--overlay"])
    assert status == 0
    import SimpleITK as sitk  # the picture shows the MR intensities, not a CT window (white throughout)

    picture = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "labels.overlay.png")))
    assert np.mean(picture == 255) < 0.02, np.mean(picture == 255)
    segments = slicerio.read_segmentation(str(tmp_path / "labels.seg.nrrd"))["segments"]
    assert [segment["id"] for segment in segments] == ["quadriceps", "hamstrings", "SAT"]
    row = json.loads((tmp_path / "m.json").read_text())["rows"][0]
    # every voxel has fat fraction 20 / (20 + 80) = 0.2, above 0.15: all muscle is IMAT
    assert row["quadriceps_fat_fraction"] == pytest.approx(0.2) and "quadriceps_mean_HU" not in row
    measured = [key for key in ("quadriceps", "hamstrings") if row[f"{key}_volume_cm3"] > 0]
    assert measured and all(row[f"{key}_IMAT_fraction"] == 1.0 for key in measured)
    assert "SAT_IMAT_fraction" not in row


def test_the_overlay_colours_every_label_of_the_set(tmp_path):
    import SimpleITK as sitk

    from LegSegNetLib.writing.overlay import LABEL_OPACITY, WINDOW_HU, write_overlay_png

    image = Volume.from_spacing(np.full((3, 40, 40), 40.0, np.float32), (1.0, 1.0, 3.0))
    array = np.zeros((3, 40, 40), np.uint8)
    array[:, 5:35, 5:35], array[:, 12:28, 12:28] = 1, 5
    label_set = label_set_from_names(L3_LABELS)
    grey = (40.0 - WINDOW_HU[0]) / (WINDOW_HU[1] - WINDOW_HU[0])
    sat = (1 - LABEL_OPACITY) * grey + LABEL_OPACITY * np.array(label_set.by_value(5).color)  # SAT is value 5 here
    found = []
    for values in (array, np.where(array == 5, 0, array)):
        path = write_overlay_png(image, image.with_array(values), tmp_path / f"{len(found)}.png", label_set=label_set)
        picture = sitk.GetArrayFromImage(sitk.ReadImage(str(path))) / 255.0
        found.append(bool((np.abs(picture - sat).max(axis=-1) < 0.01).any()))
    assert found == [True, False]


class OwnLabelsEngine:
    """Labels every voxel of a slice above -300 HU as 'psoas' (label 1): a model with labels of its own."""

    name = "own labels"
    in_plane_orientation = "PL"
    label_set = label_set_from_names({"background": 0, "psoas": 1})

    def segment_slices(self, hu_slices, pixel_spacing_mm):
        return (hu_slices > -300).astype(np.uint8)


def test_site_options_with_a_models_own_labels_are_not_silently_dropped():
    from LegSegNetLib.segmenting.run import SITES_NEED_LEGSEGNET_TISSUES, run_segmentation
    from LegSegNetLib.settings import MeasurementSettings, SegmentationSettings
    from LegSegNetLib.synthetic.leg_phantom import make_leg_phantom

    ct, _ = make_leg_phantom(seed=1, shape=(3, 64, 64))
    plain = run_segmentation(ct, OwnLabelsEngine())
    assert SITES_NEED_LEGSEGNET_TISSUES not in plain.warnings and not plain.measurements.site_rows
    asked = run_segmentation(ct, OwnLabelsEngine(), SegmentationSettings(
        measurement=MeasurementSettings(height_m=1.7)))
    assert SITES_NEED_LEGSEGNET_TISSUES in asked.warnings
