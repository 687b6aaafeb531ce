"""A hip-to-ankle CT phantom whose bone ends, landmark sites and regions are known exactly, for the site tests.

Both legs from just above the femoral heads to the heel, drawn slice by slice at coarse spacing (5 mm slices,
2 mm pixels by default) with the materials, partial volume, texture, blur and noise of leg_phantom: skin,
subcutaneous fat, fascia, muscle with two fatty septa, and bones with cortex and marrow (fatty in the shafts,
cancellous towards the joints):

- femur: head (a sphere whose top is the femur's proximal end), neck and greater trochanter joined to the
  shaft, condyles flaring towards the knee (their bottom is the femur's distal end), patella in front of them;
- the knee joint space (`KNEE_GAP_MM`) between condyles and tibial plateau; tibia with plateau, shaft, distal
  flare ending flat at the plafond and the medial malleolus below it; fibula with head and lateral malleolus;
- foot bones: talus under the plafond across the ankle joint space (`ANKLE_GAP_MM`) and calcaneus behind it.

Lengths scale with a per-seed body size; legs differ in girth (so asymmetry is not zero). Thighs touch
medially in some seeds (`touching=None`), or the legs touch along their whole length (`touching="throughout"`).
Bad-input variants: one leg only (`legs=("right",)`), an amputation of the left leg `amputation_mm` above its
malleolus, and a metal knee prosthesis in the right leg (condyles and plateau at 3071 HU).

Returns (ct, truth labels, WholeLegTruth): exact landmark S positions (RAS, mm) per leg, the sites they define
(mid_thigh, tibia_66/38/4 as measuring.sites defines them) and the region bounds (anatomy.REGION_BOUNDS).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from LegSegNetLib.reading.volume import Volume
from LegSegNetLib.synthetic.leg_phantom import (
    _MATERIAL_HU, _MATERIAL_LABEL, CORTEX, FASCIA, IMAT, MARROW, MUSCLE, SAT, SKIN, TRABECULAR_HU, _Canvas, _Grid,
    _paint_table, _render_hu, _segment_distance, _store,
)

KNEE_GAP_MM = 8.0  # wider than a 5 mm slice, so one slice always falls in the joint space
ANKLE_GAP_MM = 6.0
METAL_HU = 3071.0
FATTY_MARROW_HU = float(_MATERIAL_HU[MARROW])
BLUNT_MM = 8.0  # bone ends are blunt: a slice just inside an end still shows a sizeable section


@dataclass(frozen=True)
class WholeLegTruth:
    landmarks: dict  # side -> {landmark: S mm}
    sites: dict  # side -> {site: S mm}
    regions: dict  # side -> {region: (low S, high S)}


@dataclass(frozen=True)
class _Body:
    """Lengths along S, mm from the tip of the medial malleolus (0)."""

    scale: float

    @property
    def plafond(self):
        return 12.0 * self.scale

    @property
    def tibia_top(self):
        return 360.0 * self.scale

    @property
    def femur_bottom(self):
        return self.tibia_top + KNEE_GAP_MM

    @property
    def femur_top(self):
        return self.femur_bottom + 430.0 * self.scale

    @property
    def patella(self):
        return self.femur_bottom + 12.0, self.femur_bottom + 54.0

    @property
    def fibula(self):
        return -8.0, self.tibia_top - 25.0

    @property
    def bottom(self):
        return -40.0

    @property
    def top(self):
        return self.femur_top + 25.0

    def landmarks(self):
        return {"femur_top": self.femur_top, "femur_bottom": self.femur_bottom, "tibia_top": self.tibia_top,
                "tibia_bottom": 0.0, "plafond": self.plafond, "patella_top": self.patella[1],
                "fibula_top": self.fibula[1]}


def make_whole_leg_phantom(seed=0, slice_mm=5.0, pixel_mm=2.0, orientation="LPS", legs=("right", "left"),
                           touching=None, amputation_mm=None, metal_knee=False, noise=10.0, blur=0.6):
    """Build the hip-to-ankle phantom; see the module notes. Returns (ct, truth, WholeLegTruth)."""
    rng = np.random.default_rng(seed)
    body = _Body(rng.uniform(0.92, 1.06))
    girth = {side: (rng.uniform(0.9, 1.1), rng.uniform(0.9, 1.1), rng.uniform(0.8, 1.4)) for side in ("right", "left")}
    if touching is None:
        touching = bool(rng.random() < 0.5)
    slices = int(np.ceil((body.top - body.bottom) / slice_mm))
    half_width = 2 * 82 * 1.1 + 20
    shape = (slices, int(round(240 / pixel_mm)), int(round(2 * half_width / pixel_mm)))
    spacing = (slice_mm, pixel_mm, pixel_mm)
    grid = _Grid(shape, spacing)
    offset = float(grid.s[0]) - body.bottom  # RAS S = S from the malleolus + offset
    materials = np.zeros(shape, np.uint8)
    cushion_top = 0.55 * float(grid.y[-1])
    _paint_table(materials, grid, cushion_top)
    canvas = _Canvas(materials, _MATERIAL_HU[materials], pixel_mm)
    y, x = np.meshgrid(grid.y, grid.x, indexing="ij")
    for index in range(slices):
        s = float(grid.s[index]) - offset
        plane = canvas.window(np.s_[index])
        for side in legs:
            leg = _LegSlice(body, side, girth[side], s, touching, amputation_mm if side == "left" else None,
                            metal_knee and side == "right")
            leg.paint(plane, x, y, cushion_top)
    truth_labels = _MATERIAL_LABEL[materials]
    ct = _render_hu(canvas.hu, materials, spacing, rng, noise, blur)
    canonical = Volume.from_spacing(np.zeros(shape, np.uint8), spacing[::-1], grid.origin_ras,
                                    np.diag([-1.0, -1.0, 1.0]))
    ct_volume, truth_volume = _store(canonical, ct, truth_labels, orientation)
    return ct_volume, truth_volume, _truth(body, legs, offset, amputation_mm)


def _truth(body: _Body, legs, offset, amputation_mm) -> WholeLegTruth:
    marks = {name: value + offset for name, value in body.landmarks().items()}
    tibia_length = marks["tibia_top"] - marks["tibia_bottom"]
    sites = {"mid_thigh": (marks["femur_top"] + marks["femur_bottom"]) / 2,
             **{f"tibia_{p}": marks["plafond"] + p / 100 * tibia_length for p in (66, 38, 4)}}
    regions = {"thigh": (marks["patella_top"], marks["femur_top"]), "knee": (marks["fibula_top"], marks["patella_top"]),
               "calf": (marks["plafond"], marks["fibula_top"])}
    landmarks = {side: dict(marks) for side in legs}
    if amputation_mm is not None and "left" in legs:
        landmarks["left"] = {name: value for name, value in marks.items() if value - offset >= amputation_mm}
    return WholeLegTruth(landmarks, {side: dict(sites) for side in legs}, {side: dict(regions) for side in legs})


def _knots(body: _Body, calf: float, thigh: float):
    """Skin radius (mm) against S from the malleolus: heel, ankle, widest calf, knee, thigh, hip."""
    return ((body.bottom, 55.0), (body.plafond - 15, 53.0), (body.plafond + 30, 52.0), (body.plafond + 80, 50.0),
            (0.72 * body.tibia_top, 58.0 * calf), (body.tibia_top, 55.0), (body.femur_bottom + 60, 60.0),
            (body.femur_bottom + 0.4 * (body.femur_top - body.femur_bottom), 70.0 * thigh),
            (body.femur_top, 80.0 * thigh), (body.top, 82.0 * thigh))


def _blunt(distance_from_end):
    return float(np.clip(distance_from_end / BLUNT_MM, 0.0, 1.0) ** 0.25)


def _ramp(s, s0, s1, v0, v1):
    return float(np.interp(s, (s0, s1), (v0, v1)))


class _LegSlice:
    """One leg in one axial slice: outline and bones at S = s (mm from the medial malleolus's tip)."""

    def __init__(self, body, side, girth, s, touching, amputation_mm, metal_knee):
        self.body, self.s = body, s
        self.sign = -1 if side == "right" else 1  # the right leg lies towards the patient's right (x < 0)
        knots = _knots(body, girth[0], girth[1])
        self.radius = float(np.interp(s, *zip(*knots)))
        self.sat = girth[2] * 0.1 * self.radius
        self.amputation_mm, self.metal_knee = amputation_mm, metal_knee
        widest = max(radius for _, radius in knots)
        if touching == "throughout":
            self.centre_x = 0.97 * self.radius
        elif touching:
            self.centre_x = 0.97 * widest
        else:
            self.centre_x = widest + 12.0

    def paint(self, canvas, x, y, cushion_top):
        radius = self.radius
        if self.amputation_mm is not None:
            stump = self.s - (self.amputation_mm - 30.0)  # soft tissue ends 30 mm below the cut bones
            if stump <= 0:
                return
            radius *= min(1.0, np.sqrt(stump / 30.0))
        u = self.sign * (x - self.sign * self.centre_x)  # lateral
        v = y - (cushion_top - self.radius + 3.0)  # posterior
        r = np.hypot(u, v)
        canvas.fill(radius - r, SKIN)
        canvas.fill(radius - 2.0 - r, SAT)
        canvas.fill(radius - 2.0 - self.sat - r, FASCIA)
        compartment = canvas.fill(radius - 2.8 - self.sat - r, MUSCLE)
        for angle in (0.6, 2.4):  # two fatty septa from the bones outwards
            reach = 0.3 * radius
            end = radius - self.sat
            distance = _segment_distance(u, v, reach * np.cos(angle), reach * np.sin(angle), end * np.cos(angle),
                                         end * np.sin(angle))
            canvas.fill(1.0 - distance, IMAT, within=compartment)
        if self.amputation_mm is not None and self.s < self.amputation_mm:
            return
        pieces = [(shape(u, v), cortex, marrow_hu, metal) for shape, cortex, marrow_hu, metal in self._bones()]
        for depth, _, _, metal in pieces:  # every cortex first, so one piece's cortex never covers another's marrow
            canvas.fill(depth, CORTEX, hu=METAL_HU if metal else None)
        for depth, cortex, marrow_hu, metal in pieces:
            canvas.fill(depth - cortex, MARROW, hu=METAL_HU if metal else marrow_hu)

    # Each piece: (depth function of (u, v) in mm, cortex mm, marrow HU, metal).
    def _bones(self):
        body, s = self.body, self.s
        pieces = []
        if body.femur_bottom <= s <= body.femur_top:
            pieces += self._femur()
        low, high = body.patella
        if low <= s <= high:
            pieces.append((_ellipse(4, -36, 14 * _blunt(min(s - low, high - s)), 6 * _blunt(min(s - low, high - s))),
                           1.5, TRABECULAR_HU, False))
        if body.plafond <= s <= body.tibia_top:
            pieces.append(self._tibia())
        if 0 <= s < body.plafond:
            pieces.append((_ellipse(-22, -8, 6 * _blunt(s), 6 * _blunt(s)), 1.5, TRABECULAR_HU, False))
        low, high = body.fibula
        if low <= s <= high:
            head = s > high - 25
            size = (9.0 if head else 8.0 if s < body.plafond + 10 else 6.5) * _blunt(min(s - low, high - s))
            pieces.append((_ellipse(32, 10, size, size), 1.4 if head else 2.2,
                           TRABECULAR_HU if head or s < body.plafond + 10 else FATTY_MARROW_HU, False))
        talus = (body.plafond - ANKLE_GAP_MM - 30, body.plafond - ANKLE_GAP_MM)
        if talus[0] <= s <= talus[1]:
            size = 14 * _blunt(min(s - talus[0], talus[1] - s))
            pieces.append((_ellipse(4, 0, size, size), 1.2, TRABECULAR_HU, False))
        if s <= body.plafond - 28:
            size = 15 * _blunt(body.plafond - 28 - s)
            pieces.append((_ellipse(0, 26, size, size), 1.2, TRABECULAR_HU, False))
        return pieces

    def _femur(self):
        body, s = self.body, self.s
        above = s - body.femur_bottom
        flare = float(np.clip(1 - (above - 40) / 70, 0, 1))  # 1 at the condyles, 0 in the shaft
        metal = self.metal_knee and above <= 25
        pieces = []
        if s <= body.femur_top - 40:
            end = _blunt(above)
            pieces.append((_ellipse(4, 0, (13 + 21 * flare) * end, (13 + 11 * flare) * end), 6 - 4.5 * flare,
                           _ramp(flare, 0, 1, FATTY_MARROW_HU, TRABECULAR_HU), metal))
        top = body.femur_top
        head_centre = np.array([-30.0, 0.0, top - 22.0])
        neck_start = np.array([4.0, 0.0, top - 75.0])
        if s >= top - 95:
            pieces.append((_ball(head_centre, 22.0, s), 1.5, TRABECULAR_HU, False))
            pieces.append((_capsule(neck_start, head_centre, 11.0, s), 1.5, TRABECULAR_HU, False))
        if top - 95 <= s <= top - 35:
            size = 14 * _blunt(min(s - (top - 95), top - 35 - s))
            pieces.append((_ellipse(24, 4, size, size), 1.5, TRABECULAR_HU, False))
        return pieces

    def _tibia(self):
        body, s = self.body, self.s
        distal = float(np.clip(1 - (s - body.plafond) / 60, 0, 1))
        proximal = float(np.clip((s - (body.tibia_top - 60)) / 50, 0, 1))
        end = _blunt(body.tibia_top - s)
        a = (11 + 9 * distal + 17 * proximal) * end
        b = (11 + 9 * distal + 11 * proximal) * end
        metal = self.metal_knee and s >= body.tibia_top - 15
        spongy = max(distal, proximal)
        return (_ellipse(-4, -8, a, b), 4.5 - 3.2 * spongy, _ramp(spongy, 0, 1, FATTY_MARROW_HU, TRABECULAR_HU),
                metal)


def _ellipse(cu, cv, a, b):
    """Approximate signed depth (mm) inside an ellipse of semi-axes a (lateral) and b (posterior)."""
    def depth(u, v):
        if min(a, b) <= 0:
            return np.full(u.shape, -1e3, np.float32)
        return ((1 - np.sqrt(((u - cu) / a) ** 2 + ((v - cv) / b) ** 2)) * min(a, b)).astype(np.float32)
    return depth


def _ball(centre, radius, s):
    def depth(u, v):
        return (radius - np.sqrt((u - centre[0]) ** 2 + (v - centre[1]) ** 2 + (s - centre[2]) ** 2)).astype(np.float32)
    return depth


def _capsule(start, stop, radius, s):
    """Depth inside a 3D capsule (a cylinder with round ends) from `start` to `stop`, in the slice at s."""
    def depth(u, v):
        direction = stop - start
        t = np.clip(((u - start[0]) * direction[0] + (v - start[1]) * direction[1] + (s - start[2]) * direction[2])
                    / float(direction @ direction), 0, 1)
        distance = np.sqrt((u - start[0] - t * direction[0]) ** 2 + (v - start[1] - t * direction[1]) ** 2
                           + (s - start[2] - t * direction[2]) ** 2)
        return (radius - distance).astype(np.float32)
    return depth
