"""Axial slicing of a volume in any storage orientation.

A `SliceLayout` says which array axis runs along the patient's superior-inferior axis and how to
transpose and flip the other two so every slice is presented in a model's declared in-plane
orientation. It is computed from the direction cosines alone, never from the array order or file
orientation codes, so a scan stored LPS, RAS, permuted or slightly oblique yields the same picture.

`display_view` returns a numpy *view* [slice, row, column]; writing labels through the same view of
the output array puts them back on the input's own voxel grid with no resampling.

The layout also holds each slice's superior-inferior position, so positions and axial ranges in mm are
computed once per volume, in this one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from LegSegNetLib.reading.volume import Volume

# Unit RAS vector of each anatomical direction letter.
_DIRECTION_RAS = {
    "R": (1, 0, 0), "L": (-1, 0, 0),
    "A": (0, 1, 0), "P": (0, -1, 0),
    "S": (0, 0, 1), "I": (0, 0, -1),
}
_OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}

# Radiological display of an axial CT: row index grows towards posterior (anterior at the top),
# column index grows towards the patient's left (patient right on the image's left).
RADIOLOGICAL = "PL"


class OrientationError(ValueError):
    pass


class EmptyRangeError(ValueError):
    """An axial range that selects no slice; the message gives the volume's extent."""


@dataclass(frozen=True)
class SliceRange:
    """Half-open range of display slice indices [start, stop) to segment; None ends mean the volume's ends."""

    start: Optional[int] = None
    stop: Optional[int] = None

    def __post_init__(self):
        # Python's negative indices (count from the end) would silently pick other slices than meant.
        if any(end is not None and end < 0 for end in (self.start, self.stop)):
            raise ValueError(f"slice indices start at 0: {self.start}:{self.stop} has a negative end "
                             "(for positions in mm, which may be negative, use the range in mm)")

    def resolve(self, slice_count: int) -> range:
        start, stop, _ = slice(self.start, self.stop).indices(slice_count)
        if stop <= start:
            raise EmptyRangeError(
                f"the axial range {self.start}:{self.stop} selects no slice of a volume with {slice_count} slices"
            )
        return range(start, stop)


@dataclass(frozen=True)
class SliceLayout:
    slice_axis: int  # array axis ([k, j, i] numbering) closest to superior-inferior
    row_axis: int  # array axis shown as image rows
    column_axis: int  # array axis shown as image columns
    flip_rows: bool
    flip_columns: bool
    spacing_slice_mm: float
    spacing_row_mm: float
    spacing_column_mm: float
    superior_step_mm: float  # signed S-I displacement per slice index (positive: index goes superior)
    positions_mm: np.ndarray = field(compare=False, repr=False)  # RAS S of each slice's centre, by slice index

    @property
    def pixel_area_mm2(self) -> float:
        return self.spacing_row_mm * self.spacing_column_mm

    def display_view(self, array: np.ndarray) -> np.ndarray:
        """View of a [k, j, i] array as [slice, row, column] in display orientation (no copy)."""
        view = np.transpose(array, (self.slice_axis, self.row_axis, self.column_axis))
        if self.flip_rows:
            view = view[:, ::-1, :]
        if self.flip_columns:
            view = view[:, :, ::-1]
        return view

    def array_index(self, display_index, shape) -> tuple:
        """The (k, j, i) array index of a (slice, row, column) display index (floats allowed) of an array of
        `shape`: display_view read backwards."""
        slice_index, row, column = display_index
        if self.flip_rows:
            row = shape[self.row_axis] - 1 - row
        if self.flip_columns:
            column = shape[self.column_axis] - 1 - column
        kji = [0.0, 0.0, 0.0]
        kji[self.slice_axis], kji[self.row_axis], kji[self.column_axis] = slice_index, row, column
        return tuple(kji)

    def slice_count(self, shape) -> int:
        return shape[self.slice_axis]

    def range_between_mm(self, start_mm: float, stop_mm: float) -> SliceRange:
        """Slices whose centre lies between two superior-inferior positions (RAS S coordinate, mm, either order)."""
        positions = self.positions_mm
        low, high = sorted((start_mm, stop_mm))
        inside = np.flatnonzero((positions >= low - 1e-6) & (positions <= high + 1e-6))
        if inside.size == 0:
            raise EmptyRangeError(
                f"no slice centre lies between S = {low:g} and {high:g} mm; the volume spans "
                f"S = {positions.min():g} to {positions.max():g} mm"
            )
        return SliceRange(int(inside.min()), int(inside.max()) + 1)


def slice_layout(volume: Volume, in_plane_orientation: str = RADIOLOGICAL) -> SliceLayout:
    """Work out how to present a volume's axial slices in `in_plane_orientation`.

    `in_plane_orientation` is two letters: the anatomical direction in which the row index grows,
    then the one in which the column index grows (default "PL", radiological display).
    """
    row_letter, column_letter = _parse_in_plane(in_plane_orientation)
    directions_kji = volume.directions[:, ::-1]  # columns now follow array axes 0, 1, 2 = k, j, i
    spacing_kji = volume.spacing[::-1]
    superior = np.array(_DIRECTION_RAS["S"], dtype=float)

    slice_axis = int(np.argmax(np.abs(superior @ directions_kji)))
    in_plane = [axis for axis in range(3) if axis != slice_axis]
    row_target = np.array(_DIRECTION_RAS[row_letter], dtype=float)
    column_target = np.array(_DIRECTION_RAS[column_letter], dtype=float)
    row_alignment = [row_target @ directions_kji[:, axis] for axis in in_plane]
    column_alignment = [column_target @ directions_kji[:, axis] for axis in in_plane]
    # Choose the assignment of the two in-plane axes to rows/columns that aligns best.
    keep = abs(row_alignment[0]) + abs(column_alignment[1])
    swap = abs(row_alignment[1]) + abs(column_alignment[0])
    if keep >= swap:
        row_axis, column_axis, row_dot, column_dot = in_plane[0], in_plane[1], row_alignment[0], column_alignment[1]
    else:
        row_axis, column_axis, row_dot, column_dot = in_plane[1], in_plane[0], row_alignment[1], column_alignment[0]

    return SliceLayout(
        slice_axis=slice_axis,
        row_axis=row_axis,
        column_axis=column_axis,
        flip_rows=bool(row_dot < 0),
        flip_columns=bool(column_dot < 0),
        spacing_slice_mm=float(spacing_kji[slice_axis]),
        spacing_row_mm=float(spacing_kji[row_axis]),
        spacing_column_mm=float(spacing_kji[column_axis]),
        superior_step_mm=float(spacing_kji[slice_axis] * (superior @ directions_kji[:, slice_axis])),
        positions_mm=_slice_positions_mm(volume, slice_axis),
    )


def _slice_positions_mm(volume: Volume, slice_axis: int) -> np.ndarray:
    """Superior-inferior (RAS S) coordinate of each slice's centre."""
    count = volume.array.shape[slice_axis]
    centre = (np.array(volume.array.shape, dtype=float) - 1) / 2
    kji = np.tile(centre, (count, 1))
    kji[:, slice_axis] = np.arange(count)
    return volume.ras_of_index(kji)[:, 2]


def _parse_in_plane(orientation: str) -> tuple[str, str]:
    letters = orientation.upper()
    if len(letters) != 2 or any(letter not in _DIRECTION_RAS for letter in letters):
        raise OrientationError(
            f"in-plane orientation {orientation!r} must be two of R/L/A/P (row direction, then column direction), e.g. 'PL'"
        )
    row, column = letters
    if row in "SI" or column in "SI" or column in (row, _OPPOSITE[row]):
        raise OrientationError(
            f"in-plane orientation {orientation!r} must name two perpendicular axial directions, e.g. 'PL'"
        )
    return row, column
