"""Landmark sites in the scene: one markup point per measured site and leg, named "<site> <side>" (for example
"mid_thigh right"), and the rows of the sites table read back so that one site can be re-measured when its
point is moved (needs the `slicer` MRML API).

The points node references the volume, segmentation and sites table it belongs to, and keeps the measurement
settings as a node attribute, so the point alone says how to re-measure it.
"""

from __future__ import annotations

import json
import math

import vtk

from LegSegNetLib.measuring.sites import add_site_asymmetry
from LegSegNetLib.settings import MeasurementSettings

VOLUME_ROLE = "LegSegNetVolume"
SEGMENTATION_ROLE = "LegSegNetSegmentation"
SITES_TABLE_ROLE = "LegSegNetSitesTable"
SETTINGS_ATTRIBUTE = "LegSegNet.measurement"


def point_label(site: str, side: str) -> str:
    return f"{site} {side}"


def site_of_label(label: str) -> tuple:
    """(site, side) of a point label made by point_label."""
    site, _, side = label.rpartition(" ")
    if side not in ("right", "left") or not site:
        raise ValueError(f"'{label}' is not a LegSegNet site point (named '<site> right' or '<site> left')")
    return site, side


def point_description(row: dict) -> str:
    return f"S {row['slice_S_mm']:.1f} mm, muscle {row['SM_area_cm2']:.1f} cm2"


def store_settings(points_node, settings: MeasurementSettings) -> None:
    points_node.SetAttribute(SETTINGS_ATTRIBUTE, json.dumps(settings.record()))


def stored_settings(points_node) -> MeasurementSettings:
    text = points_node.GetAttribute(SETTINGS_ATTRIBUTE)
    if not text:
        return MeasurementSettings()
    record = json.loads(text)
    return MeasurementSettings(muscle_bands=tuple(map(tuple, record["muscle_bands"])),
                               user_sites=tuple(map(tuple, record["user_sites"])), height_m=record["height_m"])


class SitePoints:
    """New control points for the site points node, set by a transaction step (undone by restoring the old ones)."""

    def __init__(self, points_node, site_rows: list):
        self.node = points_node
        self.points = [(point_label(row["site"], row["side"]), row["point_ras"], point_description(row))
                       for row in site_rows if row["measured"]]
        self.old_points = [self._point(index) for index in range(points_node.GetNumberOfControlPoints())]

    def _point(self, index: int) -> tuple:
        position = [0.0, 0.0, 0.0]
        self.node.GetNthControlPointPosition(index, position)
        return self.node.GetNthControlPointLabel(index), position, self.node.GetNthControlPointDescription(index)

    def apply(self) -> None:
        self._set(self.points)

    def restore(self) -> None:
        self._set(self.old_points)

    def _set(self, points: list) -> None:
        self.node.RemoveAllControlPoints()
        for label, position, description in points:
            index = self.node.AddControlPoint(vtk.vtkVector3d(*position), label)
            self.node.SetNthControlPointDescription(index, description)


def table_rows(table_node) -> list:
    """The rows of a table node as dicts (text cells as str, the others as float; NaN stays NaN)."""
    table = table_node.GetTable()
    names = [table.GetColumnName(column) for column in range(table.GetNumberOfColumns())]
    rows = []
    for row in range(table.GetNumberOfRows()):
        values = {}
        for column, name in enumerate(names):
            array = table.GetColumn(column)
            values[name] = array.GetValue(row) if isinstance(array, vtk.vtkStringArray) else float(array.GetValue(row))
        rows.append(values)
    return rows


def replace_row(rows: list, new_row: dict) -> list:
    """`rows` with the row of the same site and side replaced by `new_row` (NaN for its empty cells), and that
    site's asymmetry between the legs worked out again."""
    new_row = {key: math.nan if value is None else value for key, value in new_row.items()}
    rows = [new_row if (row["site"], row["side"]) == (new_row["site"], new_row["side"]) else row for row in rows]
    pair = {row["side"]: row for row in rows if row["site"] == new_row["site"]}
    if len(pair) == 2:
        add_site_asymmetry(pair["right"], pair["left"])
    return rows
