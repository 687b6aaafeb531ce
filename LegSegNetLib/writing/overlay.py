"""A quick-look picture of a segmentation: a few axial slices and a coronal view, tissues in colour.

Slices are shown in radiological display (anterior up, patient right on the image's left, marked R and L),
the coronal view with superior up; pixels are resampled to square millimetres so shapes look right. Each
axial panel is labelled with its S position, the first carries a colour legend of the tissues, and measured
landmark sites are marked on the coronal view as a line across their leg with the site's name. The coronal
view is never drawn at a larger scale than the axial slices, so a scan of a few slices gives a flat strip
instead of a panel thousands of pixels wide. The PNG is written with SimpleITK and the text drawn with a
small built-in pixel font (no plotting library needed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from LegSegNetLib.reading.layout import slice_layout
from LegSegNetLib.measuring.label_measurements import CT
from LegSegNetLib.measuring.measurements import labelled_slices
from LegSegNetLib.tissues import LEGSEGNET_LABELS, LabelSet
from LegSegNetLib.reading.volume import Volume

WINDOW_HU = (-160.0, 240.0)  # soft-tissue window: level 40, width 400
LABEL_OPACITY = 0.45
PANEL_HEIGHT = 320  # pixels
GAP = 4  # pixels between panels
CROP_MARGIN_MM = 15.0


def write_overlay_png(ct: Volume, labels: Volume, path, axial_count: int = 4,
                      label_set: LabelSet = LEGSEGNET_LABELS, sites=(), modality: str = CT) -> Path:
    """Write `axial_count` evenly spaced labelled axial slices and one coronal view side by side, each label in
    its colour from `label_set`; `sites`: the site rows of measuring.sites (measured ones are marked on the
    coronal view). A CT is shown in a soft-tissue window; an MR image, whose intensities have no fixed scale,
    between the 1st and 99th percentiles of its labelled voxels."""
    if ct.array.shape != labels.array.shape:
        raise ValueError(f"CT {ct.array.shape} and labels {labels.array.shape} are not on the same grid")
    layout = slice_layout(ct)
    hu, lab = _crop_to_labels(layout.display_view(ct.array), layout.display_view(labels.array), layout)
    window = WINDOW_HU if modality == CT else _percentile_window(hu, lab)
    pixel_mm = (layout.spacing_row_mm, layout.spacing_column_mm)
    panels = []
    for index in _axial_indices(lab, axial_count):
        panel = _render(hu[index], lab[index], pixel_mm, label_set, window)
        draw_text(panel, f"S {layout.positions_mm[index]:.1f} MM", MARGIN, MARGIN)
        _mark_sides(panel)
        panels.append(panel)
    _draw_legend(panels[0], label_set)
    axial_px_per_mm = PANEL_HEIGHT / (hu.shape[1] * layout.spacing_row_mm)
    coronal_height = min(PANEL_HEIGHT, max(1, round(hu.shape[0] * layout.spacing_slice_mm * axial_px_per_mm)))
    coronal = _render(*_coronal(hu, lab, layout), (layout.spacing_slice_mm, layout.spacing_column_mm), label_set,
                      window, coronal_height)
    _mark_sites(coronal, [row for row in sites if row.get("measured")], lab, layout)
    panels.append(coronal)
    picture = _side_by_side(panels)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(picture, isVector=True), str(path))
    return path


def _crop_to_labels(hu_display, labels_display, layout):
    """Both arrays cut to the labelled rows and columns plus a margin (whole slices when nothing is labelled)."""
    if not labels_display.any():
        return hu_display, labels_display
    window = [slice(None)]
    for axis, spacing in ((1, layout.spacing_row_mm), (2, layout.spacing_column_mm)):
        used = np.flatnonzero(labels_display.any(axis=tuple(a for a in range(3) if a != axis)))
        margin = int(np.ceil(CROP_MARGIN_MM / spacing))
        window.append(slice(max(used[0] - margin, 0), used[-1] + margin + 1))
    return hu_display[tuple(window)], labels_display[tuple(window)]


def _axial_indices(labels_display: np.ndarray, count: int) -> list[int]:
    """Evenly spaced slices through the labelled part of the volume (all of it when nothing is labelled)."""
    labelled = labelled_slices(labels_display)  # slice by slice: a transposed display view is not copied whole
    first, last = (labelled[0], labelled[-1]) if labelled else (0, len(labels_display) - 1)
    return sorted(set(np.linspace(first, last, count + 2)[1:-1].round().astype(int).tolist()))


def _coronal(hu_display, labels_display, layout):
    """The coronal plane (a fixed display row) through the most labelled voxels, superior up."""
    row = int(np.argmax((labels_display > 0).sum(axis=(0, 2)))) if labels_display.any() else hu_display.shape[1] // 2
    hu, lab = hu_display[:, row, :], labels_display[:, row, :]
    if layout.superior_step_mm > 0:  # display slice index grows superior: flip so superior is at the top
        hu, lab = hu[::-1], lab[::-1]
    return hu, lab


def _percentile_window(image: np.ndarray, labels: np.ndarray) -> tuple:
    values = image[labels > 0] if labels.any() else image
    low, high = (float(value) for value in np.percentile(values, (1, 99))) if values.size else (0.0, 1.0)
    return (low, high) if high > low else (low, low + 1.0)


def _render(hu: np.ndarray, labels: np.ndarray, pixel_mm, label_set: LabelSet, window: tuple = WINDOW_HU,
            height: int = PANEL_HEIGHT) -> np.ndarray:
    """RGB uint8 picture of one plane in grey levels from `window` (low, high), square pixels, `height` pixels
    tall."""
    low, high = window
    grey = np.clip((np.asarray(hu, dtype=np.float32) - low) / (high - low), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for tissue in label_set.labels:
        mask = labels == tissue.value
        rgb[mask] = (1 - LABEL_OPACITY) * rgb[mask] + LABEL_OPACITY * np.array(tissue.color, dtype=np.float32)
    height_mm = rgb.shape[0] * pixel_mm[0]
    zoom = (height / rgb.shape[0], height * pixel_mm[1] / height_mm, 1)
    return (np.clip(ndimage.zoom(rgb, zoom, order=1), 0, 1) * 255).round().astype(np.uint8)


def _side_by_side(panels: list[np.ndarray]) -> np.ndarray:
    height = max(panel.shape[0] for panel in panels)
    width = sum(panel.shape[1] for panel in panels) + GAP * (len(panels) - 1)
    picture = np.zeros((height, width, 3), dtype=np.uint8)
    column = 0
    for panel in panels:
        picture[:panel.shape[0], column:column + panel.shape[1]] = panel
        column += panel.shape[1] + GAP
    return picture


MARGIN = 4  # pixels
TEXT_SCALE = 2  # glyph pixels per font pixel
TEXT_COLOUR = (255, 255, 255)
SITE_COLOUR = (60, 200, 255)

# A 3 x 5 pixel font: each glyph is five rows of three pixels ('#' drawn).
_GLYPHS = {
    "0": "###|#.#|#.#|#.#|###", "1": ".#.|##.|.#.|.#.|###", "2": "###|..#|###|#..|###", "3": "###|..#|.##|..#|###",
    "4": "#.#|#.#|###|..#|..#", "5": "###|#..|###|..#|###", "6": "###|#..|###|#.#|###", "7": "###|..#|..#|.#.|.#.",
    "8": "###|#.#|###|#.#|###", "9": "###|#.#|###|..#|###", "A": ".#.|#.#|###|#.#|#.#", "B": "##.|#.#|##.|#.#|##.",
    "C": ".##|#..|#..|#..|.##", "D": "##.|#.#|#.#|#.#|##.", "E": "###|#..|##.|#..|###", "F": "###|#..|##.|#..|#..",
    "G": ".##|#..|#.#|#.#|.##", "H": "#.#|#.#|###|#.#|#.#", "I": "###|.#.|.#.|.#.|###", "J": "..#|..#|..#|#.#|.#.",
    "K": "#.#|#.#|##.|#.#|#.#", "L": "#..|#..|#..|#..|###", "M": "#.#|###|###|#.#|#.#", "N": "##.|#.#|#.#|#.#|#.#",
    "O": ".#.|#.#|#.#|#.#|.#.", "P": "##.|#.#|##.|#..|#..", "Q": ".#.|#.#|#.#|##.|.##", "R": "##.|#.#|##.|#.#|#.#",
    "S": ".##|#..|.#.|..#|##.", "T": "###|.#.|.#.|.#.|.#.", "U": "#.#|#.#|#.#|#.#|###", "V": "#.#|#.#|#.#|#.#|.#.",
    "W": "#.#|#.#|###|###|#.#", "X": "#.#|#.#|.#.|#.#|#.#", "Y": "#.#|#.#|.#.|.#.|.#.", "Z": "###|..#|.#.|#..|###",
    "-": "...|...|###|...|...", ".": "...|...|...|...|.#.", "_": "...|...|...|...|###", "=": "...|###|...|###|...",
    " ": "...|...|...|...|...",
}


def draw_text(picture: np.ndarray, text: str, row: int, column: int, colour=TEXT_COLOUR) -> int:
    """Draw `text` (upper-cased; characters outside the font become spaces) on a dark box at (row, column) of an
    RGB uint8 picture, clipped at its edges; returns the text's width in pixels."""
    glyphs = [_GLYPHS.get(character, _GLYPHS[" "]) for character in text.upper()]
    step = 4 * TEXT_SCALE
    height, width = 5 * TEXT_SCALE, len(glyphs) * step
    box = picture[max(row - 1, 0):row + height + 1, max(column - 1, 0):column + width + 1]
    box //= 3  # darken what lies under the text so it reads on any background
    for number, glyph in enumerate(glyphs):
        pixels = np.array([[cell == "#" for cell in line] for line in glyph.split("|")])
        pixels = np.kron(pixels, np.ones((TEXT_SCALE, TEXT_SCALE), bool))
        top, left = row, column + number * step
        target = picture[top:top + height, left:left + 3 * TEXT_SCALE]
        target[pixels[:target.shape[0], :target.shape[1]]] = colour
    return width


def _mark_sides(panel: np.ndarray) -> None:
    """R on the image left, L on the right: radiological display."""
    middle = panel.shape[0] // 2
    draw_text(panel, "R", middle, MARGIN)
    draw_text(panel, "L", middle, panel.shape[1] - MARGIN - 3 * TEXT_SCALE)


def _draw_legend(panel: np.ndarray, label_set: LabelSet) -> None:
    """A colour swatch and name per label, bottom left."""
    row = panel.shape[0] - MARGIN - len(label_set.labels) * 7 * TEXT_SCALE
    for tissue in label_set.labels:
        swatch = panel[row:row + 5 * TEXT_SCALE, MARGIN:MARGIN + 5 * TEXT_SCALE]
        swatch[:] = (np.array(tissue.color) * 255).round().astype(np.uint8)
        draw_text(panel, tissue.key, row, MARGIN + 7 * TEXT_SCALE)
        row += 7 * TEXT_SCALE


def _mark_sites(coronal: np.ndarray, sites: list, labels_display: np.ndarray, layout) -> None:
    """A line across the site's leg at its slice, and the site's name once, on the (resampled) coronal panel."""
    count, width = labels_display.shape[0], labels_display.shape[2]
    used = np.flatnonzero(labels_display.any(axis=(0, 1)))
    middle = (used[0] + used[-1] + 1) / 2 * coronal.shape[1] / width if used.size else coronal.shape[1] / 2
    named = set()
    for site in sites:
        index = int(site["slice_index"])
        row_in_view = count - 1 - index if layout.superior_step_mm > 0 else index
        row = int((row_in_view + 0.5) * coronal.shape[0] / count)
        span = (0, int(middle)) if site["side"] == "right" else (int(middle), coronal.shape[1])
        coronal[row, span[0]:span[1]] = SITE_COLOUR
        if site["site"] not in named:
            named.add(site["site"])
            draw_text(coronal, site["site"], max(row - 6 * TEXT_SCALE, 0), span[0] + MARGIN, SITE_COLOUR)
