"""The leg phantom: deterministic, geometrically consistent in every storage orientation, anatomically sane."""

import time

import numpy as np
import pytest
from scipy import ndimage

from LegSegNetLib.reading.layout import slice_layout
from LegSegNetLib.synthetic.leg_phantom import make_leg_phantom

SMALL = dict(shape=(12, 160, 160))


def test_same_seed_same_phantom_other_seed_differs():
    ct_a, truth_a = make_leg_phantom(seed=3, **SMALL)
    ct_b, truth_b = make_leg_phantom(seed=3, **SMALL)
    ct_c, _ = make_leg_phantom(seed=4, **SMALL)
    assert np.array_equal(ct_a.array, ct_b.array) and np.array_equal(truth_a.array, truth_b.array)
    assert not np.array_equal(ct_a.array, ct_c.array)
    assert ct_a.array.dtype == np.int16 and truth_a.array.dtype == np.uint8
    assert np.array_equal(ct_a.ijk_to_ras, truth_a.ijk_to_ras)


@pytest.mark.parametrize("orientation", ["RAS", "PIR", "LAS", "permuted"])
def test_storage_orientations_hold_the_same_physical_image(orientation):
    reference_ct, reference_truth = make_leg_phantom(seed=1, **SMALL)
    ct, truth = make_leg_phantom(seed=1, orientation=orientation, **SMALL)
    rng = np.random.default_rng(0)
    kji = rng.integers(0, reference_ct.array.shape, size=(200, 3))
    ras = reference_ct.ras_of_index(kji)
    other = np.rint(ct.index_of_ras(ras)).astype(int)
    assert np.array_equal(ct.array[tuple(other.T)], reference_ct.array[tuple(kji.T)])
    assert np.array_equal(truth.array[tuple(other.T)], reference_truth.array[tuple(kji.T)])
    if orientation == "permuted":
        assert slice_layout(ct).slice_axis == 2


def test_oblique_phantom_is_tilted_but_still_axial():
    ct, truth = make_leg_phantom(seed=1, orientation="oblique", **SMALL)
    tilt = np.degrees(np.arccos(abs(ct.directions[2, 2])))
    assert 5 < tilt < 20
    assert slice_layout(ct).slice_axis == 0
    assert np.array_equal(ct.ijk_to_ras, truth.ijk_to_ras)


@pytest.mark.parametrize("region", ["calf", "thigh"])
def test_anatomy_in_radiological_display(region):
    ct, truth = make_leg_phantom(seed=2, region=region, shape=(10, 256, 256))
    labels, hu = truth.array, ct.array
    # HU of each tissue as CT shows it (noise and blur included): the field's ranges.
    assert -130 < hu[labels == 1].mean() < -70
    assert 30 < hu[labels == 2].mean() < 80
    assert hu[labels == 4].mean() > 300
    assert (labels == 3).sum() > 0.01 * (labels == 2).sum()
    for index in (0, 9):
        legs, count = ndimage.label(ndimage.binary_fill_holes(labels[index] > 0))
        assert count == 2, "each leg is its own connected region"
        # Table below the legs (posterior, bottom rows) in display, air above.
        leg_rows = np.flatnonzero((labels[index] > 0).any(axis=1))
        table_rows = np.flatnonzero((hu[index] > 150).any(axis=1) & ~(labels[index] > 0).any(axis=1))
        assert table_rows.size and table_rows.min() > leg_rows.max()
    bone_area = (labels == 4).sum(axis=(1, 2))
    assert bone_area[0] != bone_area[-1], "the anatomy changes along the slab"


def test_thin_fat_marrow_is_enclosed_by_cortex_and_labelled_bone():
    ct, truth = make_leg_phantom(seed=0, region="calf", shape=(10, 256, 256))
    middle = 5
    bone = truth.array[middle] == 4
    marrow = bone & (ct.array[middle] < 0)
    assert marrow.sum() > 20
    filled = ndimage.binary_fill_holes(ct.array[middle] > 400)
    assert filled[marrow].mean() > 0.95


def test_builds_a_256x256x40_phantom_quickly():
    start = time.perf_counter()
    make_leg_phantom(seed=5, region="thigh", shape=(40, 256, 256))
    assert time.perf_counter() - start < 6.0  # about 1 s on one core; generous for a loaded CI machine


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="region"):
        make_leg_phantom(region="foot")
    with pytest.raises(ValueError, match="orientation"):
        make_leg_phantom(orientation="LPX", **SMALL)
    with pytest.raises(ValueError, match="spacing"):
        make_leg_phantom(spacing=(1, 0, 1), **SMALL)


def test_cli_writes_ct_and_truth_into_new_folders_and_refuses_to_overwrite(tmp_path, capsys):
    from LegSegNetLib.cli import main
    from LegSegNetLib.reading.volume_files import read_volume

    ct_path, truth_path = tmp_path / "cts" / "ct.nii.gz", tmp_path / "truth" / "truth.nii.gz"  # folders made
    args = [str(ct_path), "--truth", str(truth_path), "--slices", "6", "--matrix", "128", "--orientation", "RAS"]
    assert main(["phantom", *args]) == 0
    ct, truth = read_volume(ct_path), read_volume(truth_path)
    expected_ct, expected_truth = make_leg_phantom(shape=(6, 128, 128), orientation="RAS")
    assert np.array_equal(ct.array, expected_ct.array) and np.array_equal(truth.array, expected_truth.array)
    assert np.allclose(ct.ijk_to_ras, expected_ct.ijk_to_ras, atol=1e-4)
    assert main(["phantom", *args]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("output, truth, message", [
    ("ct.txt", "truth.nii.gz", "cannot write 'ct.txt'"), ("ct.nii.gz", "truth.png", "cannot write 'truth.png'"),
    ("ct.nii.gz", "ct.nii.gz", "two different file names"),
])
def test_cli_refuses_unwritable_names_in_one_line(tmp_path, capsys, output, truth, message):
    from LegSegNetLib.cli import main

    assert main(["phantom", str(tmp_path / output), "--truth", str(tmp_path / truth), "--overwrite"]) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
    assert not any(tmp_path.iterdir())
