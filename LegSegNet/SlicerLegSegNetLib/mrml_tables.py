"""Measurements -> Slicer table nodes and a plot of per-slice areas (needs the `slicer` MRML API).

Column units and descriptions go into each table node's column properties (Slicer shows them as tooltips and
writes them to the `.schema.csv` beside a saved table). New contents are built completely before a node is
touched, and every node change can be undone, so a failure never leaves a half-filled table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import slicer
import vtk

from LegSegNetLib.measuring.measurements import (
    SIDE_PREFIX, SIDE_SCOPE, SIDES, SLICE_POSITION_COLUMNS, TISSUE_COLUMNS, ColumnInfo, Measurements,
)
from LegSegNetLib.measuring.sites import REGION_COLUMNS, site_columns
from LegSegNetLib.tissues import LEGSEGNET_LABELS, TISSUES, LabelSet
from LegSegNetLib.writing.tables import WARNINGS_COLUMN, warnings_cell


@dataclass
class TableContent:
    table: vtk.vtkTable
    columns: tuple[ColumnInfo, ...]


def table_content(columns, rows: list[dict]) -> TableContent:
    """A vtkTable with one column per ColumnInfo, typed from the values (text, integer or real)."""
    table = vtk.vtkTable()
    for column in columns:
        array = _column_array(column.name, [row[column.name] for row in rows])
        table.AddColumn(array)
    return TableContent(table, tuple(columns))


def _column_array(name: str, values: list):
    if any(isinstance(value, str) for value in values):
        array = vtk.vtkStringArray()
        convert = str
    elif values and all(isinstance(value, int) for value in values):
        array = vtk.vtkIntArray()
        convert = int
    else:
        array = vtk.vtkDoubleArray()
        convert = float
    array.SetName(name)
    for value in values:
        array.InsertNextValue(convert(value))
    return array


def tissue_table_content(measurements: Measurements) -> TableContent:
    """One row per tissue for both legs together, then per leg when some slices show two separable legs."""
    separable = measurements.summary.get("separable_slice_count", 0) > 0
    rows = [row for row in measurements.tissue_rows if separable or row["side"] == "both"]
    return table_content(measurements.tissue_columns or TISSUE_COLUMNS, rows)


def summary_table_content(measurements: Measurements, warnings=()) -> TableContent:
    """One row holding every derived measurement (volumes, mean HU, fat ratios, attenuation bands, per leg, then
    per leg and region: thigh, knee, calf, NaN where a region is not measured; or a model's own labels'
    measurements), after the warnings about the input they were measured on."""
    own_labels = measurements.summary_columns is not None
    region_columns = () if own_labels else REGION_COLUMNS
    regions = {column.name: math.nan for column in region_columns} | measurements.regions
    return table_content((WARNINGS_COLUMN, *measurements.columns, *region_columns),
                         [{WARNINGS_COLUMN.name: warnings_cell(warnings), **measurements.summary, **regions}])


def site_table_content(site_rows: list, bands) -> TableContent:
    """One row per landmark site and leg (measuring.sites), measured or with the reason why not."""
    return table_content(site_columns(bands), site_rows)


def area_column_name(side: str, tissue_key: str) -> str:
    return f"{SIDE_PREFIX[side]}{tissue_key}_area_cm2"


# The slice-area table: one row per slice, one area column per side and tissue (wide, for plotting).
SLICE_AREA_COLUMNS: tuple[ColumnInfo, ...] = SLICE_POSITION_COLUMNS + tuple(
    ColumnInfo(area_column_name(side, tissue.key), "cm2", f"{tissue.name} cross-sectional area ({SIDE_SCOPE[side]})")
    for side in SIDES for tissue in TISSUES
)


def slice_area_columns(label_set: LabelSet = LEGSEGNET_LABELS) -> tuple:
    """SLICE_AREA_COLUMNS for the four tissues; a model's own labels have areas of both legs together only."""
    if label_set.is_legsegnet_tissues:
        return SLICE_AREA_COLUMNS
    return SLICE_POSITION_COLUMNS + tuple(
        ColumnInfo(area_column_name("both", label.key), "cm2", f"{label.name} cross-sectional area")
        for label in label_set.labels)


def slice_area_table_content(measurements: Measurements, label_set: LabelSet = LEGSEGNET_LABELS) -> TableContent:
    """One row per labelled slice, inferior to superior, with each label's area per side (wide, for plotting)."""
    columns = slice_area_columns(label_set)
    rows = {}
    for entry in measurements.slice_rows:
        row = rows.setdefault(entry["slice_index"], _empty_area_row(entry, columns))
        row[area_column_name(entry["side"], entry["tissue"])] = entry["area_cm2"]
    return table_content(columns, list(rows.values()))


def _empty_area_row(entry: dict, columns: tuple) -> dict:
    row = {column.name: math.nan for column in columns}
    row["slice_index"] = int(entry["slice_index"])
    row["S_mm"] = float(entry["S_mm"])
    return row


class TableReplacement:
    """Put new content into a table node; restore() brings back what it held before."""

    def __init__(self, table_node, content: TableContent):
        self.node = table_node
        self.content = content
        self.old_table = _deep_copy(table_node.GetTable())
        self.old_schema = _deep_copy(table_node.GetSchema())

    def apply(self) -> None:
        for index in range(self.old_table.GetNumberOfColumns()):
            self.node.RemoveAllColumnProperties(self.old_table.GetColumnName(index))
        self.node.SetAndObserveTable(self.content.table)
        for column in self.content.columns:
            if column.unit:
                self.node.SetColumnUnitLabel(column.name, column.unit)
            self.node.SetColumnDescription(column.name, column.description)
        self.node.Modified()

    def restore(self) -> None:
        self.node.SetAndObserveTable(self.old_table)
        self.node.SetAndObserveSchema(self.old_schema)
        self.node.Modified()


def _deep_copy(table):
    copy = vtk.vtkTable()
    if table is not None:
        copy.DeepCopy(table)
    return copy


def add_slice_area_chart(add_node, slice_table_node, name: str, label_set: LabelSet = LEGSEGNET_LABELS):
    """A plot chart of each label's area (both legs) against the slice position; returns the chart node.
    add_node(class_name, name) adds a node to the scene."""
    chart = add_node("vtkMRMLPlotChartNode", name)
    chart.SetTitle("Cross-sectional area along the leg")
    chart.SetXAxisTitle("S (mm)")
    chart.SetYAxisTitle("area (cm2)")
    for tissue in label_set.labels:
        series = add_node("vtkMRMLPlotSeriesNode", f"{name} {tissue.name}")
        series.SetAndObserveTableNodeID(slice_table_node.GetID())
        series.SetXColumnName("S_mm")
        series.SetYColumnName(area_column_name("both", tissue.key))
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
        series.SetColor(*tissue.color)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return chart
