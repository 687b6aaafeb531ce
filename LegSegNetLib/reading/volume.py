"""A CT volume as an array plus the geometry that places each voxel in patient space.

The array is indexed [k, j, i] (slowest axis first), the order SimpleITK's GetArrayFromImage and
Slicer's arrayFromVolume both use, so no copy is needed at either boundary. Geometry is kept as a 4x4
IJK-to-RAS matrix (Slicer's convention); ITK/DICOM LPS geometry converts with LPS_TO_RAS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Volume:
    array: np.ndarray  # [k, j, i]
    ijk_to_ras: np.ndarray  # 4x4, maps (i, j, k, 1) to RAS millimetres
    patient_height_m: Optional[float] = None  # DICOM PatientSize (0010,1020) when the file gives it

    def __post_init__(self):
        self.ijk_to_ras = np.asarray(self.ijk_to_ras, dtype=float)
        if self.ijk_to_ras.shape != (4, 4):
            raise ValueError("ijk_to_ras must be a 4x4 matrix")

    @classmethod
    def from_spacing(cls, array, spacing_ijk=(1.0, 1.0, 1.0), origin_ras=(0.0, 0.0, 0.0), directions_ras=None):
        """Build from spacing, origin and a 3x3 matrix whose columns are the i, j, k unit directions in RAS."""
        directions = np.eye(3) if directions_ras is None else np.asarray(directions_ras, dtype=float)
        matrix = np.eye(4)
        matrix[:3, :3] = directions @ np.diag(np.asarray(spacing_ijk, dtype=float))
        matrix[:3, 3] = origin_ras
        return cls(np.asarray(array), matrix)

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along i, j, k in millimetres."""
        return np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)

    @property
    def directions(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit RAS directions of the i, j, k axes."""
        return self.ijk_to_ras[:3, :3] / self.spacing

    @property
    def origin(self) -> np.ndarray:
        return self.ijk_to_ras[:3, 3].copy()

    @property
    def voxel_volume_mm3(self) -> float:
        return float(abs(np.linalg.det(self.ijk_to_ras[:3, :3])))

    def same_grid(self, other: "Volume") -> bool:
        """Whether `other` has this volume's voxel grid: shape, spacing, origin and directions (within 1e-4 mm)."""
        return self.array.shape == other.array.shape and np.allclose(self.ijk_to_ras, other.ijk_to_ras, atol=1e-4)

    def with_array(self, array: np.ndarray) -> "Volume":
        """The same geometry carrying another array (for example a label map)."""
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} does not match volume shape {self.array.shape}")
        return Volume(array, self.ijk_to_ras.copy())

    def reoriented(self, axis_order=(0, 1, 2), flips=(False, False, False)) -> "Volume":
        """The same physical image stored another way: array axes permuted (new axis n is old axis
        axis_order[n], [k, j, i] numbering) and then flipped where `flips` says; geometry follows."""
        array = np.transpose(self.array, axis_order)
        kji_to_ras = self.ijk_to_ras.copy()
        kji_to_ras[:, :3] = kji_to_ras[:, 2::-1]  # columns now follow array axes k, j, i
        matrix = np.eye(4)
        matrix[:, 3] = kji_to_ras[:, 3]
        for new_axis, old_axis in enumerate(axis_order):
            column = kji_to_ras[:3, old_axis]
            if flips[new_axis]:
                matrix[:3, 3] += column * (self.array.shape[old_axis] - 1)
                column = -column
            matrix[:3, new_axis] = column
            if flips[new_axis]:
                array = np.flip(array, axis=new_axis)
        matrix[:, :3] = matrix[:, 2::-1]  # back to i, j, k columns
        return Volume(np.ascontiguousarray(array), matrix)

    def ras_of_index(self, kji) -> np.ndarray:
        """RAS position of voxel index (k, j, i); accepts an (N, 3) array."""
        kji = np.atleast_2d(np.asarray(kji, dtype=float))
        ijk1 = np.column_stack([kji[:, ::-1], np.ones(len(kji))])
        return (ijk1 @ self.ijk_to_ras.T)[:, :3]

    def index_of_ras(self, ras) -> np.ndarray:
        """Continuous (k, j, i) index of RAS positions; accepts an (N, 3) array."""
        ras = np.atleast_2d(np.asarray(ras, dtype=float))
        ras1 = np.column_stack([ras, np.ones(len(ras))])
        ijk = (ras1 @ np.linalg.inv(self.ijk_to_ras).T)[:, :3]
        return ijk[:, ::-1]
