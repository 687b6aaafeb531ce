"""A transparent engine that needs no trained weights: HU ranges, the deep fascia and bone by morphology.

Per axial slice (each leg handled on its own):
1. Legs: voxels above `body_min_hu` (air and foam cushions are below it), split into connected
   components; a component is a leg when it is large, thick (it holds a point `min_leg_depth_mm`
   from its edge, which thin table shells and cushion covers do not) and mostly fat or muscle HU (a
   table's carbon shell and foam are not). Holes inside a leg are filled.
2. Bone: voxels at or above `bone_min_hu` under the skin (skin markers are not bone), small specks
   dropped, gaps in thin cortex closed, the enclosed marrow filled in (fatty marrow and the
   trabecular ends near knee and ankle alike). The outer edge is then set at half maximum: an edge
   voxel stays bone only if its HU is at least halfway between the lowest and highest HU around it,
   which puts the edge where a reader puts it instead of up to a voxel outside (the partial volume
   of 1300 HU cortex reaches far into muscle).
3. Muscle compartment (inside the deep fascia): muscle-range voxels deeper than
   `muscle_seed_depth_mm` under the surface (so skin never counts), opened to cut thin strands (skin
   remnants, fibrous septa in fat), islands smaller than `min_muscle_seed_mm2` dropped (superficial
   veins, lymph nodes), joined with the bone, closed with a disk of radius `fascia_closing_mm`
   (bridges fatty septa and gaps where the thin fascia is not visible) and hole-filled (so every fat
   island and septum it surrounds is inside).
4. Labels: SAT = fat-range voxels of the leg outside the compartment and deeper than the skin
   (`skin_mm` from the surface: thin skin blurred between air and fat shows fat-range HU).
   SM = muscle-range voxels in the compartment outside bone. IMAT = fat-range voxels in the
   compartment outside bone. Bone as in 2. Voxels in neither HU range stay 0: skin, vessels in fat,
   and the rim just outside the bone edge that cortex partial volume lifts above 150 HU (counting it
   as muscle would add ~1 % to muscle volume but raise muscle mean HU by several HU, and muscle
   attenuation is the measure of muscle quality).

Defaults are the field's thresholds: fat -190..-30 HU, muscle -29..150 HU (HU rounded to integers).

Where it is expected to be wrong:
- Legs touching each other (or touching a gel pad or blanket in the fat/muscle HU range) merge into
  one leg; the compartments stay separate but fat between touching legs counts as SAT.
- A fatty septum or IMAT that opens onto the SAT through a gap wider than 2 x `fascia_closing_mm` with
  no visible fascia is counted as SAT; concavities of the fascia tighter than that radius are counted
  as IMAT.
- Very thin SAT (under about `muscle_seed_depth_mm` minus the skin) leaves the outermost muscle rim
  outside the compartment.
- Contrast-enhanced vessels, calcifications or metal above `bone_min_hu` inside the compartment are
  labelled bone; muscle above 150 HU (contrast) is unlabelled; bone with a cortex broken over more
  than `bone_closing_mm` loses its fatty marrow (it becomes IMAT).
- Near the ankle, tendons thinner than the seed size do not shape the compartment, and fat around
  them (Kager's fat pad) may be labelled SAT. At the knee joint, cartilage, menisci, ligaments and the
  patellar tendon (muscle-range HU) are labelled SM and the infrapatellar fat pad IMAT or SAT (as the
  tendon and capsule enclose it or not); a joint space cut obliquely can leave parts of the epiphyses
  unlabelled.
- Partial volume: IMAT in thin streaks and septa is under-counted (a voxel needs more than about 60 %
  fat to fall below -30 HU): on the leg phantom IMAT volume comes out 10-30 % low at Dice 0.8-0.9. With
  pixels coarser than about 1.5 mm the skin rim is resolved poorly and thin SAT may be over-counted by
  a few per cent.
- Beam hardening and metal streaks shift HU and therefore labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from LegSegNetLib.reading.layout import RADIOLOGICAL
from LegSegNetLib.tissues import TISSUE_BY_KEY

SAT, SM, IMAT, BONE = (TISSUE_BY_KEY[key].value for key in ("SAT", "SM", "IMAT", "Bone"))


@dataclass(frozen=True)
class Thresholds:
    fat_hu: tuple[float, float] = (-190.0, -30.0)  # adipose tissue, e.g. Aubrey et al. 2014 and Goodpaster 2000
    muscle_hu: tuple[float, float] = (-29.0, 150.0)  # skeletal muscle, Mitsiopoulos et al. 1998
    body_min_hu: float = -400.0  # between air/foam cushions (-1000..-600) and fat (-190)
    bone_min_hu: float = 200.0  # above muscle and blood, below trabecular bone and cortex
    skin_mm: float = 1.5  # skin of the leg (1-2 mm): never SAT, and bone lies deeper (skin markers are not bone)
    muscle_seed_depth_mm: float = 3.0  # muscle-range voxels this deep shape the fascia; skin never does
    fascia_closing_mm: float = 10.0  # bridges fat openings up to 20 mm; fascia curves far wider than this
    bone_closing_mm: float = 1.5
    min_leg_area_mm2: float = 400.0
    min_leg_depth_mm: float = 8.0
    min_muscle_seed_mm2: float = 150.0
    min_bone_area_mm2: float = 8.0

    def __post_init__(self):
        if not (self.fat_hu[0] < self.fat_hu[1] < self.muscle_hu[0] < self.muscle_hu[1] < self.bone_min_hu):
            raise ValueError(
                f"thresholds must increase: fat {self.fat_hu} < muscle {self.muscle_hu} < bone {self.bone_min_hu} HU"
            )
        if not self.body_min_hu < self.fat_hu[0]:
            raise ValueError(f"body_min_hu {self.body_min_hu} must be below the fat range {self.fat_hu}")


class ThresholdEngine:
    """SliceEngine labelling SAT, SM, IMAT and Bone by HU range and fascia morphology (see module docs)."""

    name = "threshold"
    in_plane_orientation = RADIOLOGICAL

    def __init__(self, thresholds: Thresholds | None = None):
        self.thresholds = thresholds or Thresholds()

    def segment_slices(self, hu_slices: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> np.ndarray:
        return np.stack([segment_slice(hu, pixel_spacing_mm, self.thresholds) for hu in hu_slices])


def segment_slice(hu: np.ndarray, pixel_spacing_mm, thresholds: Thresholds) -> np.ndarray:
    """Labels (uint8) of one axial slice; see the module docstring for the method."""
    hu = np.rint(np.asarray(hu, dtype=np.float32))
    spacing = tuple(float(s) for s in pixel_spacing_mm)
    labels = np.zeros(hu.shape, dtype=np.uint8)
    margin = int(np.ceil(thresholds.fascia_closing_mm / min(spacing))) + 2
    for window, leg, depth in _legs(hu, spacing, thresholds, margin):
        labels[window] = np.where(leg, _label_leg(hu[window], leg, depth, spacing, thresholds), labels[window])
    return labels


def _label_leg(hu, leg, depth, spacing, thresholds):
    fat = _in_range(hu, thresholds.fat_hu) & leg
    muscle = _in_range(hu, thresholds.muscle_hu) & leg
    skin = depth - max(spacing) / 2 < thresholds.skin_mm  # the surface lies half a pixel outside the outer voxels
    bone = _bone(hu, leg & ~skin, spacing, thresholds)
    compartment = _compartment(muscle & (depth > thresholds.muscle_seed_depth_mm), bone, leg, spacing, thresholds)
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[fat & ~compartment & ~skin] = SAT
    labels[muscle & compartment] = SM
    labels[fat & compartment] = IMAT
    labels[bone] = BONE
    return labels


def _in_range(hu, bounds):
    return (hu >= bounds[0]) & (hu <= bounds[1])


def _legs(hu, spacing, thresholds, margin):
    """(window, filled leg mask, depth of each voxel under the leg's surface in mm) for each leg.

    Windows are the leg's bounding box padded by `margin` pixels (within the slice).
    """
    components, count = ndimage.label(hu > thresholds.body_min_hu)
    areas = np.bincount(components.ravel(), minlength=count + 1) * spacing[0] * spacing[1]
    soft = _in_range(hu, (thresholds.fat_hu[0], thresholds.muscle_hu[1]))
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        if areas[index] < thresholds.min_leg_area_mm2:
            continue
        window = tuple(slice(max(s.start - margin, 0), min(s.stop + margin, size)) for s, size in zip(box, hu.shape))
        component = components[window] == index
        if soft[window][component].mean() < 0.5:
            continue
        leg = ndimage.binary_fill_holes(component)
        depth = ndimage.distance_transform_edt(np.pad(leg, 1), sampling=spacing)[1:-1, 1:-1]
        if depth.max() >= thresholds.min_leg_depth_mm:
            yield window, leg, depth


def _bone(hu, under_skin, spacing, thresholds):
    candidates = _drop_small(under_skin & (hu >= thresholds.bone_min_hu), thresholds.min_bone_area_mm2, spacing)
    bone = ndimage.binary_fill_holes(_close(candidates, thresholds.bone_closing_mm, spacing)) & under_skin
    return _half_maximum_edge(hu, bone)


def _half_maximum_edge(hu, bone, passes=3):
    """Peel edge voxels whose HU is below halfway between the lowest and highest HU around them."""
    local_max = ndimage.maximum_filter(hu, size=3)
    local_min = ndimage.minimum_filter(hu, size=3)
    below_half = hu < (local_max + local_min) / 2
    for _ in range(passes):
        edge = bone & ~ndimage.binary_erosion(bone, border_value=1)
        peel = edge & below_half
        if not peel.any():
            break
        bone = bone & ~peel
    return bone


def _compartment(deep_muscle, bone, leg, spacing, thresholds):
    seeds = ndimage.binary_opening(deep_muscle, _disk(1.0, spacing))
    seeds = _drop_small(seeds, thresholds.min_muscle_seed_mm2, spacing) | bone
    return ndimage.binary_fill_holes(_close(seeds, thresholds.fascia_closing_mm, spacing)) & leg


def _close(mask, radius_mm, spacing):
    """Closing with a disk of `radius_mm` (ellipse in pixels when anisotropic), by two distance transforms,
    so its cost does not grow with the radius; the outside of the array counts as background."""
    pad = int(np.ceil(radius_mm / min(spacing))) + 2
    dilated = ndimage.distance_transform_edt(~np.pad(mask, pad), sampling=spacing) <= radius_mm
    closed = ndimage.distance_transform_edt(dilated, sampling=spacing) > radius_mm
    return closed[pad:-pad, pad:-pad]


def _drop_small(mask, min_area_mm2, spacing):
    components, count = ndimage.label(mask)
    if count == 0:
        return mask
    areas = ndimage.sum_labels(mask, components, np.arange(1, count + 1)) * spacing[0] * spacing[1]
    return np.concatenate([[False], areas >= min_area_mm2])[components]


def _disk(radius_mm, spacing):
    """Elliptical structuring element of a physical radius on a (row_mm, column_mm) pixel grid."""
    radii = [max(radius_mm / s, 1.0) for s in spacing]
    half = [int(np.floor(r)) for r in radii]
    rows, columns = np.ogrid[-half[0]:half[0] + 1, -half[1]:half[1] + 1]
    return (rows / radii[0]) ** 2 + (columns / radii[1]) ** 2 <= 1.0
