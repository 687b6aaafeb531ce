"""LegSegNet's 8-bit window and OpenCV bicubic resize, and nnU-Net's crop and normalization, against the
libraries LegSegNet itself used (opencv-python-headless and nnunetv2, test-only)."""

import numpy as np
import pytest

from LegSegNetLib.segmenting.engines.nnunet.preprocessing import IntensityProperties
from LegSegNetLib.segmenting.engines.nnunet.preprocessing import hu_to_uint8, nonzero_bbox, normalize, resize_cubic_uint8
from nnunet_reference import opencv_resize, reference_uint8

cv2 = pytest.importorskip("cv2")

SHAPES = [(512, 512), (512, 400), (300, 512), (100, 77), (257, 255), (1024, 1024), (37, 600), (128, 128)]


def images_of(shape, seed=0):
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:shape[0], :shape[1]]
    smooth = (127 + 127 * np.sin(cols / 7.0) * np.cos(rows / 11.0)).astype(np.uint8)
    return [rng.integers(0, 256, shape, dtype=np.uint8), smooth, (rng.random(shape) > 0.5).astype(np.uint8) * 255]


@pytest.mark.parametrize("shape", SHAPES)
def test_bicubic_resize_is_bit_exact_with_opencv(shape):
    for image in images_of(shape):
        np.testing.assert_array_equal(resize_cubic_uint8(image), opencv_resize(image, use_ipp=False))


@pytest.mark.parametrize("shape", [(512, 512), (1024, 1024), (128, 128)])
def test_power_of_two_scales_also_match_opencv_with_ipp(shape):
    for image in images_of(shape, seed=3):
        np.testing.assert_array_equal(resize_cubic_uint8(image), opencv_resize(image, use_ipp=True))


@pytest.mark.parametrize("shape", [(512, 400), (300, 512), (333, 333)])
def test_ipp_rounding_differs_by_at_most_one_grey_level(shape):
    """x86 OpenCV hands other scales to Intel IPP, which rounds a few percent of pixels differently."""
    image = images_of(shape, seed=4)[0]
    difference = resize_cubic_uint8(image).astype(int) - opencv_resize(image, use_ipp=True)
    assert np.abs(difference).max() <= 1
    assert np.mean(difference != 0) < 0.06


def test_resize_of_a_batch_resizes_each_slice():
    batch = np.stack(images_of((300, 200)))
    resized = resize_cubic_uint8(batch)
    assert resized.shape == (3, 256, 256)
    for image, result in zip(batch, resized):
        np.testing.assert_array_equal(result, opencv_resize(image, use_ipp=False))


def test_resize_rejects_non_uint8():
    with pytest.raises(TypeError, match="uint8"):
        resize_cubic_uint8(np.zeros((300, 300), dtype=np.float32))


def test_hu_window_truncates_like_legsegnet():
    values = np.array([-3000, -200, -199.9, -100, 0, 0.7, 50.2, 199.99, 200, 3000], dtype=np.float64)
    hu = np.resize(np.concatenate([values, np.random.default_rng(6).uniform(-400, 400, 990)]), (256, 256))
    np.testing.assert_array_equal(hu_to_uint8(hu), reference_uint8(hu))  # 256x256: window only, no resize
    assert list(hu_to_uint8(values)) == [0, 0, 0, 63, 127, 127, 159, 254, 255, 255]  # truncation, not rounding


def test_hu_window_maps_nan_to_zero_and_clips_infinities():
    assert list(hu_to_uint8(np.array([np.nan, -np.inf, np.inf]))) == [0, 0, 255]


def test_crop_is_the_nonzero_bounding_box():
    image = np.zeros((256, 256), dtype=np.float32)
    image[40:100, 30:200] = 5
    image[150, 10] = 1
    assert nonzero_bbox(image) == (slice(40, 151), slice(10, 200))
    assert nonzero_bbox(np.zeros((4, 6))) == (slice(0, 4), slice(0, 6))


def nnunet_normalized(image, scheme, use_mask, properties):
    from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
    from nnunetv2.preprocessing.normalization import default_normalization_schemes as schemes

    data, seg, _ = crop_to_nonzero(image.astype(np.float32)[None, None])
    normalizer = getattr(schemes, scheme)(use_mask_for_norm=use_mask, intensityproperties=properties)
    return normalizer.run(data[0], seg[0])[0]


@pytest.mark.parametrize("scheme,use_mask", [("CTNormalization", False), ("ZScoreNormalization", False),
                                             ("ZScoreNormalization", True)])
def test_normalization_is_bit_exact_with_nnunet(scheme, use_mask):
    rng = np.random.default_rng(5)
    image = np.zeros((256, 256), dtype=np.uint8)
    image[30:220, 50:190] = rng.integers(0, 256, (190, 140))
    properties = {"mean": 120.5, "std": 45.25, "percentile_00_5": 3.0, "percentile_99_5": 250.0,
                  "max": 255.0, "min": 0.0, "median": 128.0}
    ours = normalize(image.astype(np.float32)[nonzero_bbox(image)], scheme, use_mask,
                     IntensityProperties(120.5, 45.25, 3.0, 250.0))
    np.testing.assert_array_equal(ours, nnunet_normalized(image, scheme, use_mask, properties))
