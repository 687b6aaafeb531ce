"""Each leg's bones, their ends and the thigh, knee and calf regions, read from a label map's bone label.

Legs. A slice is split into the patient's right and left leg where the legs are separable
(measurements.leg_split_column), or, where they touch, between two bones of similar size that lie side by side:
the split is then the column between them crossed by the fewest labelled pixels, accepted when that neck is at
most `MAX_NECK_SHARE` of the deepest column (two touching thighs; not a talus beside its own malleolus). Slices
next to a split slice are split at the narrowest neck within `FOLLOW_NECK_MM` of its split (touching thighs
above the femoral heads, where no bone tells them apart), or at the same column when all their tissue lies on
one side of it (one leg has ended: an amputation). Slices that no rule splits belong to no leg here, and
nothing is measured in them per leg.

Bones. In each leg the 2D bone components are followed from slice to slice (track_bones), so that bones
meeting at a joint in a few slices (tibia and fibula) stay apart; bones under `MIN_BONE_MM3` are specks. A component at least `LONG_BONE_MM` long is a long bone. The tibia is the long bone
with a thinner partner (the fibula) lying lateral to it, or lateral and behind, not mostly in front (that is the
patella), over at least half of the partner's length; the femur is the longest other long bone above the tibia
(any long bone without a partner when there is no tibia). The patella is the largest short component beside the
femur's distal 120 mm lying in front of it; foot bones are components whose top lies below the tibia's plafond
and within 40 mm of the tibia's lowest point.

Ends. A bone's end is located when the slice just beyond it belongs to the same leg and holds that leg's tissue;
it is not when the bone reaches the first or last labelled slice (it runs out of the scan, or is joined to a
bone that does: a talus the labels do not part from the tibia), reaches slices where
the legs are not told apart (a femoral head against the pelvis), or holds metal (HU above `METAL_HU`, an
implant). The femur's distal end counts only with the tibia below it (else an above-knee amputation or a scan
ending at the knee), the tibia's distal end only with a foot bone below it (else a below-knee amputation or a
scan ending above the ankle) and above the fibula's (the medial malleolus ends above the lateral one; a tibia
reaching lower has the talus joined to it), and the tibia's top only when it is at most `TIBIA_MAX_MM` long (else
the femur is joined to it). End positions are the outer faces of the last slices holding the bone (slice centre
plus or minus half the slice spacing), so half-way points between ends are unbiased.

Landmarks (S positions, mm): femur_top (femoral head), femur_bottom (condyles), patella_top, tibia_top
(plateau), fibula_top (fibular head), plafond (the tibia's distal articular surface: the lowest slice whose tibia
area is at least half the largest area of its distal quarter), tibia_bottom (tip of the medial malleolus).

Regions per leg (LegSegNet's own convention, from landmarks a CT shows plainly; no standard exists for 3D
regions): thigh from the patella's top to the femoral head's top; knee from the fibular head's top to the
patella's top; calf from the plafond to the fibular head's top. A region whose bound lies beyond the scan runs to
the leg's last slice there and is `complete` = False; one whose bound cannot be located is not measured; one
holding metal is measured with a note saying so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from scipy import ndimage

from LegSegNetLib.measuring.measurements import labelled_slices, leg_split_columns
from LegSegNetLib.reading.layout import SliceLayout
from LegSegNetLib.tissues import TISSUE_BY_KEY

LEGS = ("right", "left")
REGIONS = ("thigh", "knee", "calf")
BONE = TISSUE_BY_KEY["Bone"].value

METAL_HU = 2500.0  # cortical bone stays below ~2000 HU; implants reach 3000 and beyond
MIN_METAL_VOXELS = 3
MIN_BONE_MM3 = 300.0
LONG_BONE_MM = 80.0
MAX_NECK_SHARE = 0.6
PATELLA_REACH_MM = 120.0
FOOT_REACH_MM = 40.0
MIN_SPLIT_BONE_SHARE = 0.25  # the smaller of two side-by-side bones, relative to the larger
FOLLOW_NECK_MM = 10.0
TIBIA_MAX_MM = 500.0  # longer than any tibia: a femur joined to it across the knee

# Region: (lower landmark, upper landmark).
REGION_BOUNDS = {"thigh": ("patella_top", "femur_top"), "knee": ("fibula_top", "patella_top"),
                 "calf": ("plafond", "fibula_top")}

FOUND, BEYOND_LOW, BEYOND_HIGH, UNKNOWN = "found", "beyond_low", "beyond_high", "unknown"


@dataclass(frozen=True)
class Landmark:
    status: str  # FOUND, BEYOND_LOW (below the scan), BEYOND_HIGH (above it) or UNKNOWN
    s_mm: float = float("nan")
    reason: str = ""  # why it is not FOUND


@dataclass(frozen=True)
class Region:
    low_mm: float
    high_mm: float
    complete: bool
    slices: tuple  # display slice indices of the leg inside the region


@dataclass
class Bone:
    label: int  # component label in LegAnatomy.components
    slices: np.ndarray  # display slice indices holding it, in S order
    areas_mm2: np.ndarray  # per slice
    centres: np.ndarray  # (row, column) centroid per slice, pixels of the leg's bone box


@dataclass
class LegAnatomy:
    side: str
    slices: np.ndarray  # display slice indices assigned to this leg and holding its tissue, in S order
    columns: dict  # display slice index -> column slice of this leg
    components: np.ndarray  # bone labels of this leg, [slice, row, column] of the display view within `box`
    box: tuple  # (rows, columns) slices of the display slice holding this leg's bone
    plane_shape: tuple  # (rows, columns) of a display slice
    bones: dict = field(default_factory=dict)  # name -> Bone: femur, patella, tibia, fibula, foot (a list)
    landmarks: dict = field(default_factory=dict)  # name -> Landmark
    regions: dict = field(default_factory=dict)  # name -> Region or None (not measured: see region_reasons)
    region_reasons: dict = field(default_factory=dict)  # name -> why not measured, or why partial or doubtful
    metal_slices: frozenset = frozenset()
    reason: str = ""  # why this leg could not be found at all

    def bone_mask(self, name: str, index: int) -> np.ndarray:
        """This leg's pixels of one bone in a display slice (within the leg's columns)."""
        mask = np.zeros(self.plane_shape, bool)
        bone = self.bones.get(name)
        if bone is not None:
            mask[self.box] = self.components[index] == bone.label
        return mask[:, self.columns[index]]


@dataclass
class Anatomy:
    legs: dict  # side -> LegAnatomy
    positions_mm: np.ndarray  # S of each display slice
    slice_mm: float


def find_anatomy(labels_display: np.ndarray, hu_display: np.ndarray, layout: SliceLayout,
                 split_columns: Optional[dict] = None) -> Anatomy:
    """Legs, bones, landmarks and regions of a labelled volume in display orientation ([slice, row, column]).
    `split_columns`: measurements.leg_split_columns of every labelled slice when the caller has them already."""
    positions = np.asarray(layout.positions_mm, dtype=float)
    if split_columns is None:
        split_columns = leg_split_columns(labels_display, labelled_slices(labels_display))
    labelled = np.array(sorted(split_columns), dtype=int)
    labelled = labelled[np.argsort(positions[labelled], kind="stable")]  # in S order
    splits = leg_splits(labels_display, labelled, layout, split_columns)
    legs = {side: _leg(side, labels_display, hu_display, layout, splits, labelled, positions) for side in LEGS}
    return Anatomy(legs, positions, layout.spacing_slice_mm)


def leg_splits(labels_display: np.ndarray, in_s_order, layout: SliceLayout, split_columns: dict) -> dict:
    """Display slice index -> {'right': columns, 'left': columns} for the slices whose legs are told apart;
    `split_columns`: where the legs are separable (measurements.leg_split_columns of `in_s_order`)."""
    split = {int(index): split_columns[int(index)] for index in in_s_order}
    for index, column in split.items():
        if column is None:
            split[index] = _split_between_bones(labels_display[index], layout)
    reach = max(1, int(round(FOLLOW_NECK_MM / layout.spacing_column_mm)))
    order = [int(index) for index in in_s_order]
    for sweep in (order, order[::-1]):  # touching legs without bones to split them: follow the neck
        for previous, index in zip(sweep, sweep[1:]):
            if split[index] is None and split[previous] is not None:
                split[index] = _neck_near(labels_display[index] > 0, split[previous], reach)
    width = labels_display.shape[2]
    return {index: {"right": slice(0, column), "left": slice(column, width)}
            for index, column in split.items() if column is not None}


def _neck_near(mask: np.ndarray, column: int, reach: int) -> Optional[int]:
    """The narrowest column of a slice's labelled mask within `reach` of `column`, when it is a neck; `column`
    itself when the mask lies on one side of the window (one leg has ended: an amputation, a shorter scan)."""
    depth = mask.sum(axis=0)
    window = np.arange(max(column - reach, 1), min(column + reach + 1, mask.shape[1] - 1))
    if window.size == 0:
        return None
    if not depth[:window[0]].any() or not depth[window[-1] + 1:].any():
        return column if not depth[column] else None
    neck = int(window[np.argmin(depth[window])])
    return neck if depth[neck] <= MAX_NECK_SHARE * depth.max() else None


def _split_between_bones(labels_2d: np.ndarray, layout: SliceLayout) -> Optional[int]:
    """Touching legs: the narrowest neck between the two largest bones when they lie side by side."""
    components, count = ndimage.label(labels_2d == BONE)
    if count < 2:
        return None
    sizes = np.bincount(components.ravel())[1:]
    first, second = np.argsort(sizes)[::-1][:2] + 1
    if sizes[second - 1] < MIN_SPLIT_BONE_SHARE * sizes[first - 1] \
            or sizes[second - 1] * layout.pixel_area_mm2 < MIN_BONE_MM3 / layout.spacing_slice_mm:
        return None
    spans = sorted((np.flatnonzero((components == label).any(axis=0)) for label in (first, second)),
                   key=lambda columns: columns[0])
    if spans[0][-1] >= spans[1][0] - 1:
        return None
    depth = (labels_2d > 0).sum(axis=0)
    between = np.arange(spans[0][-1] + 1, spans[1][0])
    neck = between[np.argmin(depth[between])]
    return int(neck) if depth[neck] <= MAX_NECK_SHARE * depth.max() else None


def _leg(side, labels_display, hu_display, layout, splits, labelled, positions) -> LegAnatomy:
    columns = {index: split[side] for index, split in splits.items()}
    mine = [index for index in labelled if index in columns and labels_display[index][:, columns[index]].any()]
    bone = np.zeros(labels_display.shape, bool)
    metal = set()
    for index in mine:
        cut = columns[index]
        bone[index][:, cut] = labels_display[index][:, cut] == BONE
        if np.count_nonzero(bone[index][:, cut] & (hu_display[index][:, cut] > METAL_HU)) >= MIN_METAL_VOXELS:
            metal.add(index)
    box = _bounding_box(bone)  # bone fills a small part of each slice: track it there
    components = track_bones(bone[(slice(None), *box)], mine, layout.spacing_slice_mm)
    leg = LegAnatomy(side, np.array(mine, dtype=int), columns, components, box, labels_display.shape[1:],
                     metal_slices=frozenset(metal))
    if not mine:
        leg.reason = ("the legs are not told apart in any slice (one leg scanned, or legs touching or crossed "
                      "throughout): sites and regions are measured per leg")
        leg.regions = {region: None for region in REGIONS}
        leg.region_reasons = {region: leg.reason for region in REGIONS}
        return leg
    bones = _bones(components, positions, layout)
    leg.bones = _identify(bones, side, positions, layout)
    context = _EndContext(leg, positions, layout.spacing_slice_mm, labelled)
    leg.landmarks = _landmarks(leg, context)
    leg.regions, leg.region_reasons = _regions(leg, positions, layout.spacing_slice_mm)
    return leg


def track_bones(bone: np.ndarray, in_s_order, slice_mm: float) -> np.ndarray:
    """Bone labels [slice, row, column]: 2D bone components followed from slice to slice upwards, so that bones
    meeting at a joint in a few slices (tibia and fibula, which 3D connectivity would fuse) stay apart.

    A component touching no bone of the slice below starts a new track; one touching one track continues it (the
    largest, where several touch the same track: a fork; the others start tracks of their own); one touching
    several tracks is split between them by nearest pixel. Tracks that fork are one bone unless both are at least
    `LONG_BONE_MM` long (the trochanter off the femoral shaft, not the fibula leaving the tibia); bones that
    touch in at least half of the slices they share are one bone (the femoral condyles joining, a shaft whose
    cortex splits and rejoins; not the tibia and fibula meeting at a joint)."""
    tracks = np.zeros(bone.shape, np.int32)
    present, touches, forks = [], [], []
    below = None
    count = 0
    for index in in_s_order:
        components, found = ndimage.label(bone[index])
        plane = tracks[index]
        sizes = np.bincount(components.ravel())
        continued, touching = set(), set()
        for component in sorted(range(1, found + 1), key=lambda label: -sizes[label]):
            region = components == component
            under = np.unique(below[region]) if below is not None else np.zeros(0, np.int32)
            under = under[under > 0]
            if under.size == 1 and under[0] not in continued:
                plane[region] = under[0]
                continued.add(under[0])
            elif under.size > 1:
                plane[region] = _nearest_label(np.where(np.isin(below, under), below, 0))[region]
                continued.update(under.tolist())
                touching.update(_pairs(under))
            else:
                count += 1
                plane[region] = count
                if under.size == 1:
                    forks.append((int(under[0]), count))
        present.append(set(np.unique(plane[plane > 0]).tolist()))
        touches.append(touching)
        below = plane
    slices_of = np.bincount([label for labels in present for label in labels], minlength=count + 1)
    group = _Groups(count)
    for first, second in forks:
        if min(slices_of[first], slices_of[second]) * slice_mm < LONG_BONE_MM:
            group.join(first, second)
    while group.join_touching(present, touches):
        pass
    return group.table()[tracks]


class _Groups:
    """Union-find over bone track labels."""

    def __init__(self, count: int):
        self.parent = list(range(count + 1))

    def root(self, label: int) -> int:
        while self.parent[label] != label:
            label = self.parent[label]
        return label

    def join(self, first: int, second: int) -> None:
        first, second = sorted((self.root(first), self.root(second)))
        self.parent[second] = first

    def join_touching(self, present: list, touches: list) -> bool:
        """Join the two groups that touch in the largest share (at least half) of the slices both are in; whether
        two were joined. One pair at a time: a fragment touching two bones joins one of them, not both."""
        sharing, touching = {}, {}
        for labels, pairs in zip(present, touches):
            for pair in _pairs({self.root(label) for label in labels}):
                sharing[pair] = sharing.get(pair, 0) + 1
            for pair in {tuple(sorted((self.root(a), self.root(b)))) for a, b in pairs}:
                if pair[0] != pair[1]:
                    touching[pair] = touching.get(pair, 0) + 1
        ratio, pair = max(((count / sharing[pair], sharing[pair]), pair) for pair, count in touching.items()) \
            if touching else ((0, 0), None)
        if ratio[0] < 0.5:
            return False
        self.join(*pair)
        return True

    def table(self) -> np.ndarray:
        return np.array([self.root(label) for label in range(len(self.parent))], np.int32)


def _nearest_label(seeds: np.ndarray) -> np.ndarray:
    _, (rows, columns) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    return seeds[rows, columns]


def _pairs(labels) -> list:
    labels = sorted(int(label) for label in labels)
    return [(first, second) for n, first in enumerate(labels) for second in labels[n + 1:]]


def _bounding_box(mask: np.ndarray) -> tuple:
    """(rows, columns) slices of a [slice, row, column] mask's true part (empty slices when there is none)."""
    box = []
    for axis in (1, 2):
        used = np.flatnonzero(mask.any(axis=tuple(other for other in range(3) if other != axis)))
        box.append(slice(int(used[0]), int(used[-1]) + 1) if used.size else slice(0, 0))
    return tuple(box)


def _bones(components, positions, layout) -> list:
    """Every component above the speck size, with its per-slice areas and centroids."""
    if not components.size:  # a leg whose tissue box holds no bone at all
        return []
    voxel_mm3 = layout.pixel_area_mm2 * layout.spacing_slice_mm
    sizes = np.bincount(components.ravel())
    boxes = ndimage.find_objects(components)
    bones = []
    for label in np.flatnonzero(sizes * voxel_mm3 >= MIN_BONE_MM3):
        if label == 0:
            continue
        offset = np.array([boxes[label - 1][0].start, 0, 0])
        where = components[boxes[label - 1]] == label
        slices = np.flatnonzero(where.any(axis=(1, 2))) + offset[0]
        slices = slices[np.argsort(positions[slices], kind="stable")]
        areas = np.array([np.count_nonzero(where[index - offset[0]]) for index in slices]) * layout.pixel_area_mm2
        corner = np.array([boxes[label - 1][1].start, boxes[label - 1][2].start])
        centres = np.array([np.argwhere(where[index - offset[0]]).mean(axis=0) + corner for index in slices])
        bones.append(Bone(int(label), slices, areas, centres))
    return bones


def _extent(bone: Bone, positions) -> tuple:
    return float(positions[bone.slices[0]]), float(positions[bone.slices[-1]])


def _length(bone: Bone, positions, slice_mm) -> float:
    low, high = _extent(bone, positions)
    return high - low + slice_mm


def _overlap(a: Bone, b: Bone, positions, slice_mm) -> float:
    (a0, a1), (b0, b1) = _extent(a, positions), _extent(b, positions)
    return max(0.0, min(a1, b1) - max(a0, b0) + slice_mm)


def _offset_mm(bone: Bone, partner: Bone, side: str, layout) -> tuple:
    """(lateral, anterior) offset of `partner` from `bone` over their shared slices, mm."""
    shared = np.intersect1d(bone.slices, partner.slices)
    if shared.size == 0:
        return 0.0, 0.0
    mine = bone.centres[np.isin(bone.slices, shared)].mean(axis=0)
    theirs = partner.centres[np.isin(partner.slices, shared)].mean(axis=0)
    rows, columns = theirs - mine
    lateral = -columns if side == "right" else columns  # the right leg's lateral side is the image left
    return lateral * layout.spacing_column_mm, -rows * layout.spacing_row_mm


def _identify(bones: list, side: str, positions, layout) -> dict:
    slice_mm = layout.spacing_slice_mm
    long_bones = [bone for bone in bones if _length(bone, positions, slice_mm) >= LONG_BONE_MM]
    found = {}
    pairs = []
    for main in long_bones:
        for partner in bones:
            if partner is main or partner.areas_mm2.mean() >= 0.5 * main.areas_mm2.mean():
                continue
            lateral, anterior = _offset_mm(main, partner, side, layout)
            share = _overlap(main, partner, positions, slice_mm) / _length(partner, positions, slice_mm)
            if share >= 0.5 and lateral > 0 and anterior < 0.5 * lateral:  # beside or behind it, not in front
                pairs.append((share * _length(partner, positions, slice_mm), main, partner))
    if pairs:
        _, found["tibia"], found["fibula"] = max(pairs, key=lambda pair: pair[0])
    tibia = found.get("tibia")
    candidates = [bone for bone in long_bones if bone is not tibia and bone is not found.get("fibula")
                  and (tibia is None or _extent(bone, positions)[0] >= _extent(tibia, positions)[1] - slice_mm)]
    if candidates:
        found["femur"] = max(candidates, key=lambda bone: _length(bone, positions, slice_mm))
        _find_patella(found, bones, side, positions, layout)
    if tibia is not None:
        plafond = _plafond_slice(tibia, positions, slice_mm)
        reach = _extent(tibia, positions)[0] - FOOT_REACH_MM
        found["foot"] = [bone for bone in bones if bone not in found.values()
                         and reach <= _extent(bone, positions)[1] < positions[plafond]]
    return found


def _find_patella(found: dict, bones: list, side: str, positions, layout) -> None:
    femur = found["femur"]
    bottom = _extent(femur, positions)[0]
    near = []
    for bone in bones:
        if bone in found.values() or _length(bone, positions, layout.spacing_slice_mm) >= LONG_BONE_MM:
            continue
        low, high = _extent(bone, positions)
        lateral, anterior = _offset_mm(femur, bone, side, layout)
        if high >= bottom and low <= bottom + PATELLA_REACH_MM and anterior > abs(lateral):
            near.append(bone)
    if near:
        found["patella"] = max(near, key=lambda bone: bone.areas_mm2.sum())


def _plafond_slice(tibia: Bone, positions, slice_mm) -> int:
    """The lowest slice whose tibia area is at least half the largest area of the tibia's distal quarter."""
    low, high = _extent(tibia, positions)
    distal = positions[tibia.slices] <= low + 0.25 * (high - low + slice_mm)
    largest = tibia.areas_mm2[distal].max()
    return int(tibia.slices[np.flatnonzero(tibia.areas_mm2 >= 0.5 * largest)[0]])


class _EndContext:
    """What decides whether a bone end is located: the leg's slices, the labelled range, metal."""

    def __init__(self, leg: LegAnatomy, positions, slice_mm, labelled):
        self.leg, self.positions, self.slice_mm = leg, positions, slice_mm
        self.mine = set(leg.slices.tolist())
        self.lowest, self.highest = int(labelled[0]), int(labelled[-1])
        self.step = 1 if positions[-1] >= positions[0] else -1  # display index step towards superior

    def end(self, bone: Optional[Bone], name: str, which: str) -> Landmark:
        """The lower ('low') or upper ('high') end of a bone as a Landmark."""
        if bone is None:
            covered = float(np.ptp(self.positions[self.leg.slices])) + self.slice_mm
            short = (f": the scan covers {covered:.0f} mm of the leg, too little to tell its long bones (at least "
                     f"{LONG_BONE_MM:g} mm)") if covered < LONG_BONE_MM else ""
            return Landmark(UNKNOWN, reason=f"no {name} found in this leg{short}")
        index = int(bone.slices[0] if which == "low" else bone.slices[-1])
        beyond = index - self.step if which == "low" else index + self.step
        where = "inferior" if which == "low" else "superior"
        status = BEYOND_LOW if which == "low" else BEYOND_HIGH
        if index == (self.lowest if which == "low" else self.highest):
            return Landmark(status, reason=f"the {name} reaches the scan's {where} edge (it runs out of the scan, or "
                                           f"joins a bone there that is not told apart from it)")
        if beyond not in self.mine:
            example = " (the femoral head against the pelvis?)" if (name, which) == ("femur", "high") else ""
            return Landmark(UNKNOWN, reason=f"the {name}'s {where} end reaches slices where the legs are not told "
                                            f"apart{example}")
        end_slices = bone.slices[:2] if which == "low" else bone.slices[-2:]
        if self.leg.metal_slices.intersection(end_slices.tolist()):
            return Landmark(UNKNOWN, reason=f"metal (HU above {METAL_HU:g}, an implant) at the {name}'s {where} "
                                            "end: bone ends inside metal are not located")
        face = self.positions[index] + (-0.5 if which == "low" else 0.5) * self.slice_mm
        return Landmark(FOUND, float(face))


def _landmarks(leg: LegAnatomy, context: _EndContext) -> dict:
    bones = leg.bones
    femur, tibia = bones.get("femur"), bones.get("tibia")
    marks = {
        "femur_top": context.end(femur, "femur", "high"),
        "femur_bottom": context.end(femur, "femur", "low"),
        "tibia_top": context.end(tibia, "tibia", "high"),
        "tibia_bottom": context.end(tibia, "tibia", "low"),
        "patella_top": context.end(bones.get("patella"), "patella", "high"),
        "fibula_top": context.end(bones.get("fibula"), "fibula", "high"),
    }
    if marks["femur_bottom"].status == FOUND and (marks["tibia_top"].status not in (FOUND, BEYOND_LOW)
                                                  or marks["tibia_top"].s_mm > marks["femur_bottom"].s_mm):
        marks["femur_bottom"] = Landmark(UNKNOWN, reason="no tibia below the femur's distal end (an above-knee "
                                                         "amputation, or the scan stops at the knee)")
    if marks["tibia_bottom"].status == FOUND and not bones.get("foot"):
        marks["tibia_bottom"] = Landmark(UNKNOWN, reason="no foot bone below the tibia's distal end (the leg ends "
                                                         "there: an amputation, or the ankle is not in the scan)")
    fibula = bones.get("fibula")
    if marks["tibia_bottom"].status == FOUND and (fibula is None or
                                                  context.positions[fibula.slices[0]] >= marks["tibia_bottom"].s_mm):
        marks["tibia_bottom"] = Landmark(UNKNOWN, reason="the tibia's distal end is not told apart from the talus: it "
                                                         "does not end above the lateral malleolus as the medial "
                                                         "malleolus does (slices thicker than the ankle joint space?)")
    if tibia is not None and _length(tibia, context.positions, context.slice_mm) > TIBIA_MAX_MM:
        marks["tibia_top"] = Landmark(UNKNOWN, reason=f"the tibia is longer than {TIBIA_MAX_MM:g} mm: it is not told "
                                                      "apart from the femur (no slice through the knee joint space?)")
    marks["plafond"] = _plafond(marks["tibia_bottom"], tibia, context)
    _fill_missing_knee_marks(marks, femur, tibia, context)
    return marks


def _plafond(tibia_bottom: Landmark, tibia: Optional[Bone], context: _EndContext) -> Landmark:
    if tibia_bottom.status != FOUND:
        return tibia_bottom
    index = _plafond_slice(tibia, context.positions, context.slice_mm)
    return Landmark(FOUND, float(context.positions[index] - 0.5 * context.slice_mm))


def _fill_missing_knee_marks(marks: dict, femur, tibia, context: _EndContext) -> None:
    """A knee landmark whose bone is not in the scan lies beyond it when the neighbouring bone runs out towards it
    (a scan of the calf alone has its knee above the scan)."""
    for name in ("patella_top", "fibula_top"):
        if marks[name].status != UNKNOWN or not marks[name].reason.startswith("no "):  # only a bone not found
            continue
        if tibia is not None and marks["tibia_top"].status == BEYOND_HIGH and name == "patella_top":
            marks[name] = Landmark(BEYOND_HIGH, reason="the knee lies above the scan")
        elif femur is not None and marks["femur_bottom"].status == BEYOND_LOW:
            marks[name] = Landmark(BEYOND_LOW, reason="the knee lies below the scan")
    if marks["fibula_top"].status == UNKNOWN and marks["tibia_top"].status == BEYOND_HIGH:
        marks["fibula_top"] = Landmark(BEYOND_HIGH, reason="the fibular head lies above the scan")
    if marks["plafond"].status == UNKNOWN and tibia is None and femur is not None \
            and marks["femur_bottom"].status == BEYOND_LOW:
        marks["plafond"] = Landmark(BEYOND_LOW, reason="the ankle lies below the scan")


def _regions(leg: LegAnatomy, positions, slice_mm) -> tuple:
    regions, reasons = {}, {}
    present = positions[leg.slices]
    for region, (low_name, high_name) in REGION_BOUNDS.items():
        low, high = leg.landmarks[low_name], leg.landmarks[high_name]
        unknown = [mark.reason for mark in (low, high) if mark.status == UNKNOWN]
        if unknown:
            regions[region], reasons[region] = None, f"the {region}'s bounds are not located: {'; '.join(unknown)}"
            continue
        if low.status == BEYOND_HIGH or high.status == BEYOND_LOW:
            regions[region], reasons[region] = None, f"the {region} is not in the scan"
            continue
        low_mm = low.s_mm if low.status == FOUND else present.min() - slice_mm
        high_mm = high.s_mm if high.status == FOUND else present.max() + slice_mm
        inside = leg.slices[(present >= low_mm) & (present < high_mm)]
        complete = low.status == FOUND and high.status == FOUND
        note = "" if complete else f"the {region} runs beyond the scan: only its part in the scan is measured"
        metal = leg.metal_slices.intersection(inside.tolist())
        if metal:
            note = "; ".join(filter(None, (note, f"metal (an implant) in {len(metal)} of its slices: bone and "
                                                 "attenuation values there are not tissue values")))
        if inside.size == 0:
            regions[region], reasons[region] = None, f"the {region} holds no slice of this leg"
            continue
        regions[region] = Region(float(low_mm), float(high_mm), complete, tuple(int(i) for i in inside))
        reasons[region] = note
    return regions, reasons
