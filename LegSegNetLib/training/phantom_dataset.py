"""Synthetic training data and evaluation from leg phantoms with exact truth (for the bootstrap model and tests).

Each seed gives one phantom scan whose region, matrix, field of view, slab length, noise and blur all follow
from the seed, so a dataset is reproduced from its seed range alone and unseen seeds make a fair test set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from LegSegNetLib.synthetic.leg_phantom import REGIONS, make_leg_phantom
from LegSegNetLib.segmenting.pipeline import segment_volume
from LegSegNetLib.tissues import TISSUES
from LegSegNetLib.training.export import export_training_pairs


@dataclass(frozen=True)
class PhantomSpec:
    seed: int
    region: str
    matrix: int  # rows = columns
    slices: int
    slab_mm: float
    fov_mm: float
    noise: float
    blur: float

    def make(self):
        spacing = (self.slab_mm / self.slices, self.fov_mm / self.matrix, self.fov_mm / self.matrix)
        return make_leg_phantom(seed=self.seed, region=self.region, shape=(self.slices, self.matrix, self.matrix),
                                spacing=spacing, noise=self.noise, blur=self.blur)


def phantom_spec(seed: int, slices: int = 12) -> PhantomSpec:
    """The scan parameters of phantom `seed`: calf or thigh, 256 or 512 matrix, field of view 0.8-1.25x the
    region's default, a 100-200 mm slab, 6-20 HU noise, 0.4-1.0 mm blur."""
    rng = np.random.default_rng([seed, 7919])
    region = ("calf", "thigh")[seed % 2]
    return PhantomSpec(
        seed=seed, region=region, matrix=512 if seed % 3 == 0 else 256, slices=slices,
        slab_mm=float(rng.uniform(100, 200)), fov_mm=float(REGIONS[region].fov_mm * rng.uniform(0.8, 1.25)),
        noise=float(rng.uniform(6, 20)), blur=float(rng.uniform(0.4, 1.0)),
    )


def export_phantom_dataset(out_dir, seeds: Iterable[int], slices: int = 12) -> int:
    """Export the phantoms of `seeds` as an nnU-Net raw dataset (appending); returns the number of slices."""
    total = 0
    for seed in seeds:
        spec = phantom_spec(seed, slices)
        ct, truth = spec.make()
        total += len(export_training_pairs(ct, truth, out_dir, name=f"phantom-{seed}-{spec.region}").slices)
    return total


def phantom_dice(engine, seeds: Iterable[int], slices: int = 12) -> dict:
    """Dice of each tissue over all slices of the phantoms of `seeds`, segmented by `engine` on their own grid."""
    counts = np.zeros((3, len(TISSUES)))  # true positives, false positives, false negatives
    for seed in seeds:
        ct, truth = phantom_spec(seed, slices).make()
        predicted = segment_volume(ct, engine).array
        for column, tissue in enumerate(TISSUES):
            mine, true = predicted == tissue.value, truth.array == tissue.value
            counts[:, column] += [np.count_nonzero(mine & true), np.count_nonzero(mine & ~true),
                                  np.count_nonzero(~mine & true)]
    dice = 2 * counts[0] / np.maximum(2 * counts[0] + counts[1] + counts[2], 1)
    return {tissue.key: float(value) for tissue, value in zip(TISSUES, dice)}
