"""Synthetic lower-extremity CT with exact tissue truth, for tests, demos and self-checks.

`make_leg_phantom` draws two legs (thigh: femur; calf: tibia and fibula) resting on a scanner cushion
and table: skin, subcutaneous fat of varying thickness, the deep fascia, muscle groups separated by
fatty septa, intermuscular fat islands and streaks, fibrous strands in the subcutaneous fat,
neurovascular bundles in their fat sheaths,
superficial veins, bone with cortex and fatty marrow that turns trabecular towards the knee. The
shape changes smoothly from slice to slice, and everything follows from the seed.

Each shape is painted with partial volume: it covers a voxel by the fraction of the voxel inside it
(from the signed distance to its edge), which mixes the HU of edge voxels as a scanner does; the
truth is the shape holding the voxel's centre. Then comes a slowly varying tissue texture, the
scanner's blur (Gaussian PSF) and correlated noise. Truth labels follow the HU-threshold
convention the four-tissue task uses (see tissues.TISSUES):
  1 SAT: fat between skin and deep fascia (skin, superficial veins and fibrous strands are background 0);
  2 SM: muscle inside the fascia, with the fascia itself and the deep vessels (muscle-range HU);
  3 IMAT: fat inside the fascia (septa, islands, streaks, vessel sheaths);
  4 Bone: cortex and the marrow it encloses, fatty or trabecular.

The image is built in radiological display order ([slice, row, column] = [inferior->superior,
anterior->posterior, patient right->left], i.e. LPS storage) and then stored in the orientation asked
for with `Volume.reoriented`, so the truth stays voxel-for-voxel consistent with the CT.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from LegSegNetLib.reading.volume import Volume

# Materials: (HU, truth label). Painted in this numbering, looked up at the end.
(AIR, CUSHION, TABLE_SHELL, TABLE_CORE, SKIN, SAT, SAT_VEIN, SAT_STRAND, FASCIA, MUSCLE, IMAT, VESSEL, CORTEX,
 MARROW) = range(14)
_MATERIAL_HU = np.array([-1000, -780, 250, -900, 35, -102, 40, 30, 55, 50, -88, 40, 1300, -60], dtype=np.float32)
_MATERIAL_LABEL = np.array([0, 0, 0, 0, 0, 1, 0, 0, 2, 2, 3, 2, 4, 4], dtype=np.uint8)
STRAND_MM = 0.7  # fibrous strands (retinacula cutis) crossing the subcutaneous fat
TRABECULAR_HU = 230.0  # marrow HU at the knee end, where the shaft opens into cancellous bone
FASCIA_MM = 0.8
TEXTURE_HU = 6.0  # amplitude of the slowly varying tissue texture (muscle groups differ a little)
TEXTURE_SIGMA_MM = 5.0

ORIENTATIONS_HELP = ("a 3-letter storage code such as LPS, RAS, LAS, PIR (directions of the i, j, k axes), "
                     "'permuted' (ILP) or 'oblique' (LPS tilted 12 and 5 degrees)")


@dataclass(frozen=True)
class _Bone:
    centre: tuple[float, float]  # (lateral, posterior) mm from the leg centre, at the nominal radius
    radius: float  # mm at the nominal leg radius
    cortex: float  # mm in the shaft
    lobes: float  # amplitude of a 3-lobed (triangular) outline
    lobe_angle: float  # radians; where one lobe points
    flares: bool  # widens into trabecular bone at the knee end


@dataclass(frozen=True)
class _Region:
    radius_range: tuple[float, float]  # nominal skin radius, mm
    sat_range: tuple[float, float]  # mean subcutaneous fat thickness, mm
    taper_per_100mm: float  # relative radius change per 100 mm towards superior
    posterior_bulge: float
    knee_end: str  # "superior" or "inferior": where the bones flare
    bones: tuple[_Bone, ...]
    septa: tuple[tuple[tuple[float, float], tuple[float, float]], ...]  # segments (u, v) -> (u, v), mm
    bundles: tuple[tuple[float, float, float], ...]  # deep vessels: (u, v, vessel radius mm)
    superficial_veins: tuple[tuple[float, float], ...]  # (angle, vein radius mm) mid-depth in SAT
    fov_mm: float  # default square in-plane field of view


_UP = -np.pi / 2  # local angle pointing anterior (v is posterior)
REGIONS = {
    "calf": _Region(
        radius_range=(44.0, 54.0), sat_range=(4.0, 9.0), taper_per_100mm=0.12, posterior_bulge=0.07,
        knee_end="superior",
        bones=(
            _Bone((-10.0, -17.0), 12.5, 4.5, 0.13, _UP, True),  # tibia, crest anterior
            _Bone((21.0, 3.0), 6.5, 2.2, 0.05, 0.0, False),  # fibula
        ),
        septa=(
            ((21.0, 3.0), (48.0, -26.0)),  # anterior intermuscular septum
            ((21.0, 3.0), (40.0, 36.0)),  # posterior intermuscular septum
            ((-50.0, 6.0), (18.0, 12.0)),  # transverse septum (deep / superficial posterior)
            ((2.0, 30.0), (2.0, 60.0)),  # between the gastrocnemius heads
        ),
        bundles=((8.0, -9.0, 1.5), (-12.0, 13.0, 1.8), (13.0, 12.0, 1.5)),
        superficial_veins=((np.pi * 1.0, 2.0), (np.pi * 0.5, 1.6)),  # great (medial), small (posterior) saphenous
        fov_mm=280.0,
    ),
    "thigh": _Region(
        radius_range=(70.0, 84.0), sat_range=(8.0, 18.0), taper_per_100mm=0.10, posterior_bulge=0.03,
        knee_end="inferior",
        bones=(_Bone((6.0, -4.0), 14.5, 6.0, 0.06, np.pi / 2, True),),  # femur, linea aspera posterior
        septa=(
            ((6.0, -4.0), (84.0, 24.0)),  # lateral intermuscular septum
            ((6.0, -4.0), (-62.0, -56.0)),  # medial intermuscular septum
            ((6.0, -4.0), (-42.0, 76.0)),  # posterior (adductor / hamstring) septum
            ((-4.0, -52.0), (8.0, -90.0)),  # rectus femoris / vasti
            ((12.0, 40.0), (18.0, 90.0)),  # biceps / semimembranosus
        ),
        bundles=((-30.0, -34.0, 4.0), (-8.0, 24.0, 2.5)),  # femoral, profunda
        superficial_veins=((np.pi * 1.1, 2.6),),  # great saphenous, medial
        fov_mm=440.0,
    ),
}


def make_leg_phantom(seed=0, region="calf", shape=(40, 256, 256), spacing=None, fov_mm=None,
                     orientation="LPS", noise=12.0, blur=0.6):
    """Build a two-leg CT and its truth labels.

    shape: (slices, rows, columns). spacing: (slice, row, column) mm; by default 2.5 mm slices and
    the region's field of view (or `fov_mm`) over the rows and columns. orientation: the storage
    orientation (see ORIENTATIONS_HELP). noise: HU standard deviation. blur: Gaussian PSF sigma, mm.
    Returns (ct: Volume int16 HU, truth: Volume uint8 labels 0..4) on the same grid.
    """
    if region not in REGIONS:
        raise ValueError(f"unknown phantom region {region!r}; choose one of {', '.join(REGIONS)}")
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"phantom shape must be three positive sizes (slices, rows, columns), got {shape}")
    anatomy = REGIONS[region]
    spacing = _spacing(shape, spacing, fov_mm or anatomy.fov_mm)
    rng = np.random.default_rng(seed)
    grid = _Grid(shape, spacing)

    materials = np.full(shape, AIR, dtype=np.uint8)
    cushion_top = 0.55 * float(grid.y[-1])  # legs in the upper part of the picture, the table below
    _paint_table(materials, grid, cushion_top)
    canvas = _Canvas(materials, _MATERIAL_HU[materials], (spacing[1] + spacing[2]) / 2)
    for side in (-1, 1):
        _Leg.random(anatomy, side, rng).paint(canvas, grid, cushion_top, rng)

    truth = _MATERIAL_LABEL[materials]
    ct = _render_hu(canvas.hu, materials, spacing, rng, noise, blur)
    canonical = Volume.from_spacing(np.zeros(shape, np.uint8), spacing[::-1], grid.origin_ras, np.diag([-1.0, -1.0, 1.0]))
    return _store(canonical, ct, truth, orientation)


def _spacing(shape, spacing, fov_mm):
    if spacing is None:
        return (2.5, fov_mm / shape[1], fov_mm / shape[2])
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"phantom spacing must be three positive sizes in mm (slice, row, column), got {spacing}")
    return spacing


class _Grid:
    """Millimetre coordinates of the canonical grid: s (superior), y (posterior), x (patient left)."""

    def __init__(self, shape, spacing):
        self.shape, self.spacing = shape, spacing
        centre = (np.array(shape, dtype=float) - 1) / 2
        self.s = ((np.arange(shape[0]) - centre[0]) * spacing[0]).astype(np.float32)
        self.y = ((np.arange(shape[1]) - centre[1]) * spacing[1]).astype(np.float32)
        self.x = ((np.arange(shape[2]) - centre[2]) * spacing[2]).astype(np.float32)
        # RAS of voxel (0, 0, 0): x grows to the left (R decreases), y posterior (A decreases).
        self.origin_ras = (-self.x[0], -self.y[0], self.s[0])

    @property
    def knee_fraction(self):
        """0 at the inferior end of the slab, 1 at the superior end."""
        return np.linspace(0.0, 1.0, self.shape[0], dtype=np.float32)


def _per_slice(values):
    return np.asarray(values, dtype=np.float32)[:, None, None]


class _Leg:
    """One leg's outline and anatomy as smooth functions of the slice position."""

    def __init__(self, anatomy, side, radius, params):
        self.anatomy, self.side, self.radius = anatomy, side, radius
        self.p = params

    @classmethod
    def random(cls, anatomy, side, rng):
        radius = rng.uniform(*anatomy.radius_range)
        p = {
            "ellipse": rng.uniform(-0.06, 0.06), "ellipse_angle": rng.uniform(0, np.pi), "twist": rng.uniform(-0.004, 0.004),
            "lobe3": rng.uniform(0.0, 0.025), "lobe3_angle": rng.uniform(0, 2 * np.pi),
            "lobe4": rng.uniform(0.0, 0.015), "lobe4_angle": rng.uniform(0, 2 * np.pi),
            "sat": rng.uniform(*anatomy.sat_range), "sat_var": rng.uniform(0.25, 0.5),
            "sat_angle": rng.uniform(0.4, 1.1) * np.pi, "sat_var2": rng.uniform(0.0, 0.2), "sat_angle2": rng.uniform(0, np.pi),
            "skin": rng.uniform(1.5, 2.2), "drift": rng.uniform(-0.05, 0.05),
            "gap": rng.uniform(6.0, 30.0), "septum_width": rng.uniform(1.4, 2.8, size=len(anatomy.septa)),
        }
        return cls(anatomy, side, radius, p)

    # --- outline ----------------------------------------------------------------------------
    def radius_at(self, s):
        return self.radius * (1 + self.anatomy.taper_per_100mm * s / 100.0)

    def max_extent(self):
        p = self.p
        return self.radius * (1 + abs(p["ellipse"]) + p["lobe3"] + p["lobe4"] + self.anatomy.posterior_bulge)

    def centre_x(self, s):
        half = self.max_extent() * (1 + 0.5 * self.anatomy.taper_per_100mm) + self.p["gap"] / 2
        return self.side * half + self.p["drift"] * s

    def centre_y(self, s, cushion_top):
        """Resting on the cushion, sunk 3 mm into it."""
        return cushion_top - self.radius_at(s) * (1 + self.anatomy.posterior_bulge + abs(self.p["ellipse"])) + 3.0

    def skin_radius(self, theta, s):
        p, a = self.p, self.anatomy
        turn = p["twist"] * s
        shape = (1 + p["ellipse"] * np.cos(2 * (theta - p["ellipse_angle"] - turn))
                 + p["lobe3"] * np.cos(3 * theta - p["lobe3_angle"] - turn)
                 + p["lobe4"] * np.cos(4 * theta - p["lobe4_angle"] + turn)
                 + a.posterior_bulge * np.cos(theta - np.pi / 2))
        return self.radius_at(s) * shape

    def sat_thickness(self, theta, s):
        p = self.p
        wave = 1 + 0.15 * np.sin(s / 40.0 + self.side)
        thickness = p["sat"] * wave * (1 + p["sat_var"] * np.cos(theta - p["sat_angle"])
                                       + p["sat_var2"] * np.cos(2 * theta - p["sat_angle2"]))
        return np.maximum(thickness, 1.5)

    # --- painting ---------------------------------------------------------------------------
    def paint(self, canvas, grid, cushion_top, rng):
        """Paint this leg on the canvas."""
        columns = self._column_window(grid)
        self._frame = (grid, columns, cushion_top)
        canvas = canvas.window(np.s_[:, :, columns])
        s = _per_slice(grid.s)
        u = self.side * (grid.x[None, None, columns] - self.centre_x(s))
        v = grid.y[None, :, None] - self.centre_y(s, cushion_top)
        u, v = np.broadcast_arrays(u, v)
        r, theta = np.hypot(u, v), np.arctan2(v, u)

        skin = self.skin_radius(theta, s)
        canvas.fill(skin - r, SKIN)
        sat_inner = skin - self.p["skin"]
        subcutaneous = canvas.fill(sat_inner - r, SAT)
        self._paint_fibrous_strands(canvas, u, v, subcutaneous, rng)
        fascia = sat_inner - self.sat_thickness(theta, s)
        canvas.fill(fascia - r, FASCIA)
        compartment = canvas.fill(fascia - FASCIA_MM - r, MUSCLE)
        del skin, sat_inner, fascia

        scale = self.radius_at(s) / self.radius
        self._paint_septa(canvas, u, v, scale, compartment)
        self._paint_fat_islands(canvas, u, v, grid, compartment, rng)
        self._paint_bundles(canvas, u, v, scale, compartment)
        self._paint_bones(canvas, u, v, scale, grid)
        self._paint_superficial_veins(canvas, u, v, s)

    def _box(self, cu, cv, half, slices=slice(None)):
        """Index of the part of the leg window within `half` mm of local point (cu, cv) (scalars or per slice)."""
        grid, columns, cushion_top = self._frame
        s = grid.s[slices]
        x = self.centre_x(s) + self.side * np.ravel(cu)[slices] if np.ndim(cu) else self.centre_x(s) + self.side * cu
        y = self.centre_y(s, cushion_top) + (np.ravel(cv)[slices] if np.ndim(cv) else cv)
        x0 = grid.x[columns.start]
        c0, c1 = _index_span(x.min() - half - x0, x.max() + half - x0, grid.spacing[2], columns.stop - columns.start)
        r0, r1 = _index_span(y.min() - half - grid.y[0], y.max() + half - grid.y[0], grid.spacing[1], len(grid.y))
        return slices, slice(r0, r1), slice(c0, c1)

    def _column_window(self, grid):
        reach = self.max_extent() * 1.4 + 5
        centre = self.centre_x(0.0)
        inside = np.flatnonzero(np.abs(grid.x - centre) <= reach + abs(self.p["drift"]) * np.abs(grid.s).max())
        return slice(int(inside.min()), int(inside.max()) + 1) if inside.size else slice(0, 0)

    def _paint_septa(self, canvas, u, v, scale, compartment):
        for ((u0, v0), (u1, v1)), width in zip(self.anatomy.septa, self.p["septum_width"]):
            distance = _segment_distance(u, v, u0 * scale, v0 * scale, u1 * scale, v1 * scale)
            canvas.fill(width / 2 - distance, IMAT, within=compartment)

    def _paint_fibrous_strands(self, canvas, u, v, subcutaneous, rng):
        """Thin connective-tissue strands from the skin inwards (cut off at the fascia by later paint)."""
        for angle in rng.uniform(0, 2 * np.pi, size=int(rng.integers(6, 12))):
            bend = rng.uniform(-0.25, 0.25)
            u0, v0 = 1.15 * self.radius * np.cos(angle), 1.15 * self.radius * np.sin(angle)
            u1, v1 = 0.75 * self.radius * np.cos(angle + bend), 0.75 * self.radius * np.sin(angle + bend)
            box = self._box((u0 + u1) / 2, (v0 + v1) / 2, 0.3 * self.radius + 2)
            distance = _segment_distance(u[box], v[box], u0, v0, u1, v1)
            canvas.window(box).fill(STRAND_MM / 2 - distance, SAT_STRAND, within=subcutaneous[box])

    def _paint_fat_islands(self, canvas, u, v, grid, compartment, rng):
        """Ellipsoidal fat islands (round) and streaks (long, thin), each spanning some slices."""
        reach = self.radius * 0.85
        count = int(rng.integers(14, 24))
        for index in range(count):
            streak = index % 3 == 0
            angle, distance = rng.uniform(0, 2 * np.pi), reach * np.sqrt(rng.uniform(0.05, 1.0))
            cu, cv = distance * np.cos(angle), distance * np.sin(angle)
            length = rng.uniform(7, 16) if streak else rng.uniform(2.0, 4.5)
            width = rng.uniform(1.3, 2.2) if streak else length * rng.uniform(0.6, 1.0)
            s_centre, s_half = rng.uniform(grid.s[0], grid.s[-1]), rng.uniform(8, 30)
            direction = rng.uniform(0, np.pi)
            rows = np.flatnonzero(np.abs(grid.s - s_centre) < s_half)
            if rows.size == 0:
                continue
            reach_mm = length * (1 + canvas.pixel_mm / (2 * width)) + 1  # where the coverage ramp ends
            box = self._box(cu, cv, reach_mm, slice(rows[0], rows[-1] + 1))
            du, dv = u[box] - cu, v[box] - cv
            along = du * np.cos(direction) + dv * np.sin(direction)
            across = -du * np.sin(direction) + dv * np.cos(direction)
            along_s = ((grid.s[box[0]] - s_centre) / s_half)[:, None, None]
            rho = np.sqrt((along / length) ** 2 + (across / width) ** 2 + along_s ** 2)
            canvas.window(box).fill((1 - rho) * width, IMAT, within=compartment[box])

    def _paint_bundles(self, canvas, u, v, scale, compartment):
        for bu, bv, vessel_radius in self.anatomy.bundles:
            box = self._box(bu * scale, bv * scale, vessel_radius * 2.2 + 2)
            r = np.hypot(u[box] - bu * scale, v[box] - bv * scale)
            canvas.window(box).fill(vessel_radius * 2.2 - r, IMAT, within=compartment[box])
            canvas.window(box).fill(vessel_radius - r, VESSEL, within=compartment[box])

    def _paint_bones(self, canvas, u, v, scale, grid):
        knee = grid.knee_fraction if self.anatomy.knee_end == "superior" else 1 - grid.knee_fraction
        flare = np.clip((knee - 0.8) / 0.2, 0.0, 1.0) ** 2  # 0 in the shaft, 1 at the knee end of the slab
        marrow_hu = _per_slice(_MATERIAL_HU[MARROW] + (TRABECULAR_HU - _MATERIAL_HU[MARROW]) * flare)
        for bone in self.anatomy.bones:
            grow = _per_slice(1 + 0.35 * flare) if bone.flares else 1.0
            cortex = _per_slice(bone.cortex - (bone.cortex - 1.3) * flare) if bone.flares else bone.cortex
            cu, cv = bone.centre[0] * scale, bone.centre[1] * scale
            box = self._box(cu, cv, bone.radius * np.max(scale * grow) * (1 + bone.lobes) + 2)
            du, dv = u[box] - cu, v[box] - cv
            theta = np.arctan2(dv, du)
            outline = bone.radius * scale * grow * (1 + bone.lobes * np.cos(3 * (theta - bone.lobe_angle)))
            depth = outline - np.hypot(du, dv)
            canvas.window(box).fill(depth, CORTEX)
            canvas.window(box).fill(depth - cortex, MARROW, hu=marrow_hu)

    def _paint_superficial_veins(self, canvas, u, v, s):
        for angle, vein_radius in self.anatomy.superficial_veins:
            sat = self.sat_thickness(np.float32(angle), s)
            depth = self.skin_radius(np.float32(angle), s) - self.p["skin"] - sat / 2
            cu, cv = depth * np.cos(angle), depth * np.sin(angle)
            box = self._box(cu, cv, vein_radius + 2)
            canvas.window(box).fill(np.minimum(vein_radius, sat / 3) - np.hypot(u[box] - cu, v[box] - cv), SAT_VEIN)


class _Canvas:
    """Materials at voxel centres (the truth) and HU with partial volume.

    A shape covers each voxel by the fraction of a one-pixel box around the centre that lies inside
    it, a ramp of the signed distance to its edge, so edge voxels mix tissues the way a scanner's
    voxels do, and a voxel is labelled with a shape when its centre is inside (coverage >= 1/2).
    """

    def __init__(self, materials, hu, pixel_mm):
        self.materials, self.hu, self.pixel_mm = materials, hu, pixel_mm

    def window(self, index):
        return _Canvas(self.materials[index], self.hu[index], self.pixel_mm)

    def fill(self, depth_mm, material, hu=None, within=None):
        """Paint where `depth_mm` (signed distance inside the shape) is positive; returns the coverage."""
        coverage = np.clip(0.5 + depth_mm / self.pixel_mm, 0, 1).astype(np.float32)
        if within is not None:
            coverage = np.minimum(coverage, within)
        self.materials[coverage >= 0.5] = material
        value = _MATERIAL_HU[material] if hu is None else hu
        self.hu += coverage * (value - self.hu)
        return coverage


def _index_span(low_mm, high_mm, step_mm, size):
    """Index range [start, stop) of grid points from low_mm to high_mm (offsets from point 0), within the grid."""
    start = int(np.clip(np.floor(low_mm / step_mm), 0, size))
    return start, int(np.clip(np.ceil(high_mm / step_mm) + 1, start, size))


def _segment_distance(u, v, u0, v0, u1, v1):
    du, dv = u1 - u0, v1 - v0
    t = np.clip(((u - u0) * du + (v - v0) * dv) / (du * du + dv * dv), 0, 1)
    return np.hypot(u - u0 - t * du, v - v0 - t * dv)


def _paint_table(materials, grid, cushion_top):
    """A foam cushion the legs sink into, on a curved carbon-fibre tabletop with a foam core."""
    y, x = grid.y[:, None], grid.x[None, :]
    width = 0.45 * (grid.x[-1] - grid.x[0])
    cushion = (y >= cushion_top) & (y <= cushion_top + 30) & (np.abs(x) <= width)
    table_top = cushion_top + 32 + 4e-4 * x ** 2
    shell = (np.abs(y - table_top) <= 1.2) | (np.abs(y - table_top - 22) <= 1.2)
    core = (y > table_top + 1.2) & (y < table_top + 20.8)
    plane = np.full(cushion.shape, AIR, dtype=np.uint8)
    plane[cushion] = CUSHION
    plane[core & (np.abs(x) <= width * 1.05)] = TABLE_CORE
    plane[shell & (np.abs(x) <= width * 1.05)] = TABLE_SHELL
    materials[:] = plane


def _render_hu(hu, materials, spacing, rng, noise, blur):
    """Tissue texture, scanner blur and noise on the partial-volume HU; int16."""
    soft = (materials >= SKIN) & (materials <= VESSEL)
    texture = ndimage.gaussian_filter(rng.standard_normal(materials.shape).astype(np.float32),
                                      [TEXTURE_SIGMA_MM / d for d in spacing])
    hu[soft] += (TEXTURE_HU / max(texture.std(), 1e-6)) * texture[soft]
    if blur > 0:
        hu = ndimage.gaussian_filter(hu, [blur / d for d in spacing])
    if noise > 0:
        grain = ndimage.gaussian_filter(rng.standard_normal(materials.shape).astype(np.float32), (0, 0.6, 0.6))
        hu += (noise / max(grain.std(), 1e-6)) * grain
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)


def _store(canonical, ct, truth, orientation):
    """Both arrays as one storage orientation: a 3-letter code, or 'oblique' (LPS tilted 12 and 5 deg)."""
    code = _ORIENTATION_ALIASES.get(str(orientation).upper(), str(orientation).upper())
    if code == "OBLIQUE":
        rotation = _rotation([1, 0, 0], 12.0) @ _rotation([0, 0, 1], 5.0)
        matrix = canonical.ijk_to_ras.copy()
        matrix[:3, :] = rotation @ matrix[:3, :]
        return Volume(ct, matrix), Volume(truth, matrix.copy())
    axis_order, flips = _axis_order_for(code)
    return (Volume(ct, canonical.ijk_to_ras).reoriented(axis_order, flips),
            Volume(truth, canonical.ijk_to_ras).reoriented(axis_order, flips))


_ORIENTATION_ALIASES = {"PERMUTED": "ILP"}  # slices along i, the last array axis
_CANONICAL_AXIS = {"L": (2, False), "R": (2, True), "P": (1, False), "A": (1, True), "S": (0, False), "I": (0, True)}


def _axis_order_for(code):
    """Reorientation taking the canonical LPS storage to `code` (directions of the i, j, k axes)."""
    if len(code) != 3 or any(letter not in _CANONICAL_AXIS for letter in code) \
            or len({_CANONICAL_AXIS[letter][0] for letter in code}) != 3:
        raise ValueError(f"unknown phantom orientation {code!r}: use {ORIENTATIONS_HELP}")
    kji = code[::-1]  # array axis 0 is k
    return tuple(_CANONICAL_AXIS[letter][0] for letter in kji), tuple(_CANONICAL_AXIS[letter][1] for letter in kji)


def _rotation(axis, degrees):
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    angle = np.radians(degrees)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross
