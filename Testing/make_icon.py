"""Draw the extension icon (128x128 RGBA): a lower-leg CT cross-section in the segment colours.

Run `python Testing/make_icon.py` from the repository root to rewrite LegSegNet.png and the module's copy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from LegSegNetLib.tissues import TISSUE_BY_KEY

SIZE = 128
ROOT = Path(__file__).resolve().parent.parent
ICON_PATHS = (ROOT / "LegSegNet.png", ROOT / "LegSegNet" / "Resources" / "Icons" / "LegSegNet.png")


def _ellipse(x, y, centre, radii, angle_deg=0.0):
    angle = np.deg2rad(angle_deg)
    dx, dy = x - centre[0], y - centre[1]
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    return (u / radii[0]) ** 2 + (v / radii[1]) ** 2 <= 1.0


def draw_icon() -> np.ndarray:
    """[128, 128, 4] uint8: skin-edged fat, muscle with fat streaks, tibia and fibula, on transparency."""
    y, x = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    layers = [
        (_ellipse(x, y, (64, 64), (60, 56), 10), (0.35, 0.25, 0.2)),  # skin
        (_ellipse(x, y, (64, 64), (57, 53), 10), TISSUE_BY_KEY["SAT"].color),
        (_ellipse(x, y, (66, 66), (45, 41), 10), TISSUE_BY_KEY["SM"].color),
    ]
    # Fat along the septa between the muscle compartments: thin streaks radiating from the bones.
    for centre, radii, angle in (((80, 92), (17, 1.6), 60), ((52, 88), (14, 1.6), -70), ((92, 62), (12, 1.5), 15),
                                 ((66, 100), (16, 1.6), 90)):
        layers.append((_ellipse(x, y, centre, radii, angle), TISSUE_BY_KEY["IMAT"].color))
    layers += [
        (_ellipse(x, y, (56, 44), (17, 14), -20), TISSUE_BY_KEY["Bone"].color),  # tibia, anterior
        (_ellipse(x, y, (57, 45), (9, 7), -20), (0.80, 0.62, 0.40)),  # its marrow
        (_ellipse(x, y, (94, 74), (6, 5.5)), TISSUE_BY_KEY["Bone"].color),  # fibula, lateral
    ]
    icon = np.zeros((SIZE, SIZE, 4), dtype=np.uint8)
    for mask, colour in layers:
        icon[mask, :3] = np.round(np.asarray(colour) * 255).astype(np.uint8)
        icon[mask, 3] = 255
    return icon


def write_icon(path: Path, icon: np.ndarray) -> None:
    image = sitk.GetImageFromArray(icon, isVector=True)
    sitk.WriteImage(image, str(path))


if __name__ == "__main__":
    for icon_path in ICON_PATHS:
        write_icon(icon_path, draw_icon())
        print(f"wrote {icon_path}")
