"""The quick-look picture keeps every panel at a sensible size, whatever the number of slices."""

import numpy as np
import SimpleITK as sitk

from LegSegNetLib.writing.overlay import PANEL_HEIGHT, write_overlay_png
from LegSegNetLib.synthetic.leg_phantom import make_leg_phantom


def overlay_of(tmp_path, **phantom):
    ct, truth = make_leg_phantom(**phantom)
    return sitk.GetArrayFromImage(sitk.ReadImage(str(write_overlay_png(ct, truth, tmp_path / "o.png"))))


def coronal_drawn_height(picture: np.ndarray) -> int:
    """Rows holding anything in the rightmost tenth of the picture, where the coronal view sits."""
    right = picture[:, -picture.shape[1] // 10:]
    return int(np.flatnonzero(right.any(axis=(1, 2)))[-1]) + 1


def test_a_scan_of_few_slices_gives_a_flat_coronal_strip_not_a_huge_panel(tmp_path):
    """12 slices of 2.5 mm through both thighs: the coronal view is 30 mm tall and over 300 mm wide; drawn
    PANEL_HEIGHT tall it would be several thousand pixels wide. At the axial panels' scale it is a strip."""
    picture = overlay_of(tmp_path, region="thigh", shape=(12, 128, 128), seed=3)
    assert picture.shape[0] == PANEL_HEIGHT
    assert picture.shape[1] < 4 * 1000 + 1000  # four axial panels of two legs, and the strip
    assert coronal_drawn_height(picture) < PANEL_HEIGHT / 2


def test_a_long_scan_keeps_its_coronal_view_panel_high(tmp_path):
    picture = overlay_of(tmp_path, region="calf", shape=(160, 64, 64), seed=1)
    assert coronal_drawn_height(picture) > 0.9 * PANEL_HEIGHT


def test_sites_are_marked_on_the_coronal_view_at_their_slices(tmp_path):
    from LegSegNetLib.measuring.sites import measure_with_anatomy
    from LegSegNetLib.synthetic.whole_leg_phantom import make_whole_leg_phantom
    from LegSegNetLib.writing.overlay import SITE_COLOUR

    ct, truth, _ = make_whole_leg_phantom(seed=1)
    rows = [row for row in measure_with_anatomy(ct, truth).site_rows if row["site"] == "mid_thigh"]
    without = sitk.GetArrayFromImage(sitk.ReadImage(str(write_overlay_png(ct, truth, tmp_path / "a.png"))))
    marked = sitk.GetArrayFromImage(sitk.ReadImage(str(write_overlay_png(ct, truth, tmp_path / "b.png", sites=rows))))
    site_pixels = np.argwhere(np.all(marked == SITE_COLOUR, axis=2) & np.any(marked != without, axis=2))
    assert site_pixels.size and site_pixels[:, 1].min() > marked.shape[1] * 0.8  # on the coronal view, at the right
    slices = ct.array.shape[0]
    row_of_site = (slices - 1 - rows[0]["slice_index"] + 0.5) * coronal_drawn_height(marked) / slices
    assert np.any(np.abs(site_pixels[:, 0] - row_of_site) <= 1)


def test_an_mr_image_is_shown_in_its_own_intensity_range_not_a_ct_window(tmp_path):
    """MR intensities (here 0 to about 2400, no unit) in the soft-tissue HU window would be white throughout."""
    from LegSegNetLib.reading.volume import Volume

    ct, truth = make_leg_phantom(seed=2, shape=(6, 96, 96))
    mr = Volume(((ct.array.astype(np.float32) + 1000) * 1.2).astype(np.int16), ct.ijk_to_ras)
    pictures = {modality: sitk.GetArrayFromImage(sitk.ReadImage(str(write_overlay_png(
        mr, truth, tmp_path / f"{modality}.png", modality=modality)))) for modality in ("CT", "MR")}
    grey_levels = {modality: len(np.unique(picture)) for modality, picture in pictures.items()}
    white = {modality: float(np.mean(picture == 255)) for modality, picture in pictures.items()}
    assert white["MR"] < 0.5 * white["CT"] and grey_levels["MR"] > grey_levels["CT"]
