"""Validation against a reference: overlap metrics on shapes with known answers, reading references, and
`legsegnet compare` end to end on phantoms (truth as reference; threshold engine and bootstrap model as
predictions) and on bad inputs."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from LegSegNetLib.cli import main
from LegSegNetLib.measuring import comparison
from LegSegNetLib.measuring.comparison import GridMismatchError, align_reference, compare_case, overlap
from LegSegNetLib.measuring.measurements import dice
from LegSegNetLib.reading.label_files import parse_label_set, read_label_map
from LegSegNetLib.reading.volume import Volume
from LegSegNetLib.reading.volume_files import sitk_from_volume, write_volume
from LegSegNetLib.resources import resources_dir
from LegSegNetLib.segmenting.engines.nnunet.engine import LegSegNetEngine
from LegSegNetLib.segmenting.engines.threshold import ThresholdEngine
from LegSegNetLib.segmenting.pipeline import segment_volume
from LegSegNetLib.synthetic.leg_phantom import make_leg_phantom
from LegSegNetLib.tissues import TISSUE_BY_KEY, TISSUES
from LegSegNetLib.writing.labelmaps import write_labelmap
from LegSegNetLib.settings import SegmentationSettings

SM = TISSUE_BY_KEY["SM"].value


def centred_grid(shape, spacing_kji):
    """Physical (k, j, i) coordinates in mm of each voxel centre, origin at the grid's centre."""
    centre = (np.array(shape) - 1) / 2
    axes = [(np.arange(n) - centre[axis]) * spacing_kji[axis] for axis, n in enumerate(shape)]
    return np.stack(np.meshgrid(*axes, indexing="ij"))


def test_concentric_spheres_are_a_constant_surface_distance_apart_in_mm():
    spacing = (0.75, 0.5, 0.5)  # anisotropic: distances in voxels would be 2.7 to 4
    radius = np.sqrt((centred_grid((32, 48, 48), spacing) ** 2).sum(axis=0))
    result = overlap(radius <= 6.0, radius <= 8.0, spacing)
    assert result.dice == pytest.approx(2 * 6.0 ** 3 / (6.0 ** 3 + 8.0 ** 3), abs=0.01)
    assert result.hd95_mm == pytest.approx(2.0, abs=0.4)  # every surface point is 2 mm from the other surface
    assert result.assd_mm == pytest.approx(2.0, abs=0.4)


def test_offset_discs_in_one_slice_match_their_analytic_overlap_and_distances():
    pixel, radius, offset = 0.2, 10.0, 4.0
    k, y, x = centred_grid((1, 130, 160), (3.0, pixel, pixel))
    first = y ** 2 + (x + offset / 2) ** 2 <= radius ** 2
    second = y ** 2 + (x - offset / 2) ** 2 <= radius ** 2
    result = overlap(first, second, (3.0, pixel, pixel))  # measured in the slice's plane
    lens = 2 * radius ** 2 * math.acos(offset / (2 * radius)) - offset / 2 * math.sqrt(4 * radius ** 2 - offset ** 2)
    assert result.dice == pytest.approx(lens / (math.pi * radius ** 2), abs=0.005)
    # A point at angle t on one circle lies |sqrt(R^2 + d^2 - 2Rd cos t) - R| from the other (both ways alike).
    angles = np.linspace(0, 2 * np.pi, 100_001)
    distances = np.abs(np.sqrt(radius ** 2 + offset ** 2 - 2 * radius * offset * np.cos(angles)) - radius)
    assert result.hd95_mm == pytest.approx(np.percentile(distances, 95), abs=2 * pixel)
    assert result.assd_mm == pytest.approx(distances.mean(), abs=2 * pixel)


def test_empty_masks_give_no_dice_and_no_distance_with_a_note():
    empty, disc = np.zeros((1, 20, 20), bool), np.zeros((1, 20, 20), bool)
    disc[0, 5:10, 5:10] = True
    both = overlap(empty, empty, (1, 1, 1))
    assert math.isnan(both.dice) and math.isnan(both.hd95_mm) and "absent from both" in both.note
    one = overlap(empty, disc, (1, 1, 1))
    assert one.dice == 0.0 and math.isnan(one.hd95_mm) and "absent from the prediction" in one.note


@pytest.fixture(scope="module")
def phantom():
    return make_leg_phantom(seed=5, shape=(3, 128, 128))


def cropped(volume: Volume, k: slice, j: slice, i: slice) -> Volume:
    """Part of a volume, in place in space (as Slicer saves a segmentation cropped to its extent)."""
    start_ijk1 = np.array([part.start or 0 for part in (i, j, k)] + [1.0])
    matrix = volume.ijk_to_ras.copy()
    matrix[:3, 3] = (volume.ijk_to_ras @ start_ijk1)[:3]
    return Volume(volume.array[k, j, i].copy(), matrix)


def test_reference_on_another_grid_is_resampled_onto_the_prediction_exactly(phantom):
    _, truth = phantom
    reference = cropped(truth, slice(None), slice(10, 100), slice(20, 110)).reoriented((2, 1, 0), (True, False, True))
    aligned, notes = align_reference(reference, truth)
    assert aligned.same_grid(truth) and "resampled" in notes[0] and len(notes) == 1
    expected = np.zeros_like(truth.array)
    expected[:, 10:100, 20:110] = truth.array[:, 10:100, 20:110]
    assert np.array_equal(aligned.array, expected)


def test_reference_labels_beyond_the_prediction_are_noted(phantom):
    _, truth = phantom
    prediction = cropped(truth, slice(None), slice(None), slice(0, 64))  # half the picture: one leg
    _, notes = align_reference(truth, prediction)
    assert "outside the prediction's grid" in notes[-1]


def test_reference_elsewhere_in_space_is_refused(phantom):
    _, truth = phantom
    moved = truth.ijk_to_ras.copy()
    moved[2, 3] += 500.0  # half a metre along S: another scan
    with pytest.raises(GridMismatchError, match="different places"):
        align_reference(Volume(truth.array, moved), truth)


def test_compare_case_measures_volumes_and_mean_hu_like_the_measurements(phantom):
    ct, truth = phantom
    labels = segment_volume(ct, ThresholdEngine())
    result = compare_case("leg", labels, truth, ct=ct)
    sm = next(row for row in result.rows if row["tissue"] == "SM")
    voxel_cm3 = truth.voxel_volume_mm3 / 1000
    assert sm["volume_ref_cm3"] == pytest.approx(np.count_nonzero(truth.array == SM) * voxel_cm3)
    assert sm["mean_HU_pred"] == pytest.approx(ct.array[labels.array == SM].mean())
    assert sm["dice"] == pytest.approx(dice(labels.array == SM, truth.array == SM))
    assert result.pred_summary["SM_volume_cm3"] == pytest.approx(sm["volume_pred_cm3"])


def test_label_values_outside_the_label_set_are_background_with_a_note(tmp_path, phantom):
    _, truth = phantom
    array = truth.array.copy()
    array[0, :4, :4] = 7
    write_volume(truth.with_array(array), tmp_path / "ref.nii.gz")
    read = read_label_map(tmp_path / "ref.nii.gz")
    assert "[7]" in read.notes[0] and "background" in read.notes[0]
    assert np.array_equal(read.labels.array, truth.array * (array != 7))
    renumbered = read_label_map(tmp_path / "ref.nii.gz", parse_label_set("SM=7"))  # only 7 is SM now
    assert set(np.unique(renumbered.labels.array)) == {0, SM}


def test_seg_nrrd_segments_are_matched_by_name_whatever_their_label_values(tmp_path, phantom):
    _, truth = phantom
    image = sitk_from_volume(truth.with_array(np.where(truth.array == SM, 5, 0).astype(np.uint8)))
    for key, value in {"Segment0_ID": "Segment_1", "Segment0_Name": "skeletal muscle", "Segment0_LabelValue": "5",
                       "Segment0_Layer": "0", "Segment1_ID": "vessels", "Segment1_Name": "Vessels",
                       "Segment1_LabelValue": "9", "Segment1_Layer": "0"}.items():
        image.SetMetaData(key, value)
    sitk.WriteImage(image, str(tmp_path / "manual.seg.nrrd"))
    read = read_label_map(tmp_path / "manual.seg.nrrd")
    assert np.array_equal(read.labels.array == SM, truth.array == SM) and read.labels.array.max() == SM
    assert any("Vessels" in note for note in read.notes)
    image.SetMetaData("Segment1_Layer", "1")
    sitk.WriteImage(image, str(tmp_path / "layers.seg.nrrd"))
    with pytest.raises(ValueError, match="2 layers"):
        read_label_map(tmp_path / "layers.seg.nrrd")


@pytest.mark.parametrize("text", ["SM", "Muscle=2", "SM=0", "SM=2,Bone=2", "SM=2,SM=3", ""])
def test_bad_label_sets_are_refused(text):
    with pytest.raises(ValueError, match="--labels"):
        parse_label_set(text)


# ---- the command ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Three small phantoms: CTs, truth (reference) and the threshold engine's and bootstrap model's labels."""
    root = tmp_path_factory.mktemp("cohort")
    folders = {name: root / name for name in ("ct", "truth", "threshold", "bootstrap")}
    for folder in folders.values():
        folder.mkdir()
    model = LegSegNetEngine.from_model_folder(resources_dir() / "Models" / "legsegnet-bootstrap", SegmentationSettings(device="cpu"))
    for seed in (11, 12, 13):
        ct, truth = make_leg_phantom(seed=seed, shape=(2, 256, 256))
        write_volume(ct, folders["ct"] / f"case{seed}.nii.gz")
        write_volume(truth, folders["truth"] / f"case{seed}.nii.gz")
        write_labelmap(segment_volume(ct, ThresholdEngine()), folders["threshold"] / f"case{seed}.seg.nrrd")
        write_labelmap(segment_volume(ct, model), folders["bootstrap"] / f"case{seed}.nii.gz")
    return folders


def compare_cli(*argv):
    return main(["compare", *map(str, argv)])


def read_csv(path):
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def test_compare_end_to_end_on_phantoms_with_two_predictions(cohort, tmp_path):
    out = tmp_path / "report"
    assert compare_cli(cohort["threshold"], cohort["truth"], "--out", out, "--ct", cohort["ct"],
                       "--against", cohort["bootstrap"]) == 0
    rows = read_csv(out / "per_case.csv")
    assert len(rows) == 3 * 2 * len(TISSUES)  # cases x predictions x tissues
    truth = read_label_map(cohort["truth"] / "case12.nii.gz").labels.array
    predicted = read_label_map(cohort["bootstrap"] / "case12.nii.gz").labels.array
    row = next(r for r in rows if r["case"] == "case12" and r["prediction"] == "against" and r["tissue"] == "SM")
    assert float(row["dice"]) == pytest.approx(dice(predicted == SM, truth == SM))
    for prediction in ("pred", "against"):
        for key in ("SM", "Bone", "SAT"):
            values = [float(r["dice"]) for r in rows if r["prediction"] == prediction and r["tissue"] == key]
            assert min(values) > 0.8, (prediction, key, values)
    agreement = {row["metric"]: row for row in read_csv(out / "agreement.csv")}
    assert agreement["SM_volume_cm3"]["n"] == "3" and agreement["SM_mean_HU"]["n"] == "3"
    assert float(agreement["SM_volume_cm3"]["loa_low"]) <= float(agreement["SM_volume_cm3"]["bias"]) \
        <= float(agreement["SM_volume_cm3"]["loa_high"])
    columns = {column["name"]: column for column in json.loads((out / "agreement.json").read_text())["columns"]}
    assert "absolute agreement" in columns["icc"]["description"]
    paired = read_csv(out / "paired_dice.csv")
    assert [row["tissue"] for row in paired] == [tissue.key for tissue in TISSUES]
    html = (out / "report.html").read_text()
    for picture in ("dice_boxplot.png", "plots/SM_volume_cm3.png", "plots/SM_mean_HU.png"):
        assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture in html


def test_one_case_has_no_limits_of_agreement_and_no_hu_without_a_ct(cohort, tmp_path, caplog):
    out = tmp_path / "one"
    assert compare_cli(cohort["threshold"] / "case11.seg.nrrd", cohort["truth"] / "case11.nii.gz",
                       "--out", out) == 0
    agreement = {row["metric"]: row for row in read_csv(out / "agreement.csv")}
    assert "SM_mean_HU" not in agreement  # no CT: no attenuation
    assert agreement["SM_volume_cm3"]["loa_low"] == "" and "at least two" in agreement["SM_volume_cm3"]["note"]
    assert "no limits of agreement" in caplog.text


def test_two_single_files_of_different_names_are_one_case_with_nothing_unpaired(cohort, tmp_path, caplog):
    reference = tmp_path / "expert.nii.gz"
    reference.write_bytes((cohort["truth"] / "case11.nii.gz").read_bytes())
    assert compare_cli(cohort["threshold"] / "case11.seg.nrrd", reference, "--out", tmp_path / "out") == 0
    assert {row["case"] for row in read_csv(tmp_path / "out" / "per_case.csv")} == {"case11"}
    assert "not compared" not in caplog.text


def test_unpaired_cases_are_listed_and_do_not_stop_the_others(cohort, tmp_path, caplog):
    references = tmp_path / "refs"
    references.mkdir()
    for name in ("case11", "case12", "other"):
        source = cohort["truth"] / f"{name if name != 'other' else 'case13'}.nii.gz"
        (references / f"{name}.nii.gz").write_bytes(source.read_bytes())
    assert compare_cli(cohort["threshold"], references, "--out", tmp_path / "out") == 0
    assert {row["case"] for row in read_csv(tmp_path / "out" / "per_case.csv")} == {"case11", "case12"}
    assert "without a reference, not compared: case13" in caplog.text
    assert "without a prediction, not compared: other" in caplog.text
    assert "other" in (tmp_path / "out" / "report.html").read_text()


def test_a_case_on_another_place_fails_alone(cohort, tmp_path, caplog):
    references = tmp_path / "refs"
    references.mkdir()
    for name in ("case11", "case12"):
        (references / f"{name}.nii.gz").write_bytes((cohort["truth"] / f"{name}.nii.gz").read_bytes())
    moved = read_label_map(references / "case12.nii.gz").labels
    moved.ijk_to_ras[2, 3] += 500.0
    write_volume(moved, references / "case12.nii.gz")
    assert compare_cli(cohort["threshold"], references, "--out", tmp_path / "out") == 1
    assert "case12: not compared" in caplog.text and "different places" in caplog.text
    assert {row["case"] for row in read_csv(tmp_path / "out" / "per_case.csv")} == {"case11"}


def test_folders_without_pairs_exit_2_with_the_names(cohort, tmp_path, capsys):
    references = tmp_path / "refs"
    references.mkdir()
    (references / "someone.nii.gz").write_bytes((cohort["truth"] / "case11.nii.gz").read_bytes())
    (references / "else.nii.gz").write_bytes((cohort["truth"] / "case12.nii.gz").read_bytes())
    assert compare_cli(cohort["threshold"], references, "--out", tmp_path / "out") == 2
    error = capsys.readouterr().err
    assert "no case" in error and "case11" in error and "someone" in error
    assert not (tmp_path / "out").exists()


def test_existing_report_is_kept_without_overwrite(cohort, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "agreement.csv").write_text("mine")
    args = [cohort["threshold"] / "case11.seg.nrrd", cohort["truth"] / "case11.nii.gz", "--out", out]
    assert compare_cli(*args) == 2
    assert "already exists" in capsys.readouterr().err and (out / "agreement.csv").read_text() == "mine"
    assert compare_cli(*args, "--overwrite") == 0 and (out / "agreement.csv").read_text() != "mine"


def test_missing_validation_packages_are_named(cohort, tmp_path, capsys, monkeypatch):
    real_find_spec = comparison.importlib.util.find_spec
    monkeypatch.setattr(comparison.importlib.util, "find_spec",
                        lambda name, *rest: None if name == "matplotlib" else real_find_spec(name, *rest))
    assert compare_cli(cohort["threshold"], cohort["truth"], "--out", tmp_path / "out") == 2
    assert "[validate]" in capsys.readouterr().err


def test_site_and_region_measurements_are_compared_over_the_cohort():
    """Hip-to-ankle phantoms: the threshold engine's labels against the truth, at the landmark sites and per leg
    and region, as the agreement table lists them."""
    from LegSegNetLib.reading.label_files import DEFAULT_LABEL_SET
    from LegSegNetLib.synthetic.whole_leg_phantom import make_whole_leg_phantom

    cases = []
    for seed in (1, 2):
        ct, truth, _ = make_whole_leg_phantom(seed=seed)
        cases.append(compare_case(f"leg{seed}", segment_volume(ct, ThresholdEngine()), truth, ct=ct))
    columns = {column.name: column for column in comparison.agreement_columns(DEFAULT_LABEL_SET, with_ct=True)}
    for metric in ("mid_thigh_right_SM_area_cm2", "tibia_66_left_SM_mean_HU", "right_thigh_SM_volume_cm3",
                   "left_calf_SM_mean_HU"):
        assert metric in columns
        pred = [case.pred_summary[metric] for case in cases]
        ref = [case.ref_summary[metric] for case in cases]
        assert all(math.isfinite(value) for value in pred + ref)
        result = comparison.cohort_agreement(cases, [columns[metric]])[0]
        assert result.n == 2 and result.bias == pytest.approx(np.mean(pred) - np.mean(ref))
    area = cases[0].pred_summary["mid_thigh_right_SM_area_cm2"], cases[0].ref_summary["mid_thigh_right_SM_area_cm2"]
    assert area[0] == pytest.approx(area[1], rel=0.03)  # the threshold engine finds the mid-thigh muscle
    no_ct = {column.name for column in comparison.agreement_columns(DEFAULT_LABEL_SET, with_ct=False)}
    assert "mid_thigh_right_SM_area_cm2" in no_ct and "mid_thigh_right_SM_mean_HU" not in no_ct
