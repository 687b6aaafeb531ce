"""The measurement files: one row per input (wide CSV with a JSON twin giving each column's unit and
description; whole scan, then per leg and region), per-slice areas (long CSV) and the landmark sites (long CSV,
one row per input, site and leg, with a JSON twin).

CSV cells of undefined values (NaN: a ratio or mean with a zero denominator) are empty; JSON has null.
CSV numbers have 10 significant digits, so binary rounding noise (2233.8160000000003) stays out of
spreadsheets; the JSON files keep full precision.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from LegSegNetLib.measuring.label_measurements import CT
from LegSegNetLib.measuring.measurements import SLICE_COLUMNS, SUMMARY_COLUMNS, TISSUE_COLUMNS, ColumnInfo, Measurements
from LegSegNetLib.measuring.sites import REGION_COLUMNS, site_columns
from LegSegNetLib.settings import MeasurementSettings
from LegSegNetLib.writing.outputs import write_text

WARNINGS_COLUMN = ColumnInfo("warnings", "", "doubts about the input or the result (see the README's list), "
                                             "joined by ' | '; empty when there were none")
# Columns the command line puts before the summary columns in its one-row-per-input table.
INPUT_COLUMNS = (
    ColumnInfo("input", "", "the CT file or DICOM folder measured"),
    ColumnInfo("engine", "", "the engine that made the labels"),
    ColumnInfo("model", "", "the model folder or installed model name the legsegnet engine used"),
    WARNINGS_COLUMN,
)
RECORD_COLUMNS = INPUT_COLUMNS + SUMMARY_COLUMNS + REGION_COLUMNS
SLICE_RECORD_COLUMNS = INPUT_COLUMNS[:1] + SLICE_COLUMNS


def measurement_record(input_name: str, engine_name: str, measurements: Measurements, model: str = "",
                       warnings=(), modality: str = CT) -> dict:
    """Everything measured on one input, as plain JSON-able data (NaN becomes None); `warnings`: the run's doubts
    about the input or result, kept with the numbers they concern; `modality`: CT (Hounsfield units) or MR."""
    record = {
        "input": input_name, "engine": engine_name, "model": model, "modality": modality, "warnings": list(warnings),
        "summary": measurements.summary,
        "tissue_rows": measurements.tissue_rows, "slice_rows": measurements.slice_rows,
        "regions": measurements.regions, "region_notes": measurements.region_notes, "site_rows": measurements.site_rows,
    }
    if measurements.summary_columns:  # a model's own labels: the columns differ from LegSegNet's
        record["columns"] = [column.__dict__ for column in measurements.summary_columns]
    return _json_safe(record)


def write_summary_table(records: list, path, overwrite: bool = False) -> None:
    """One row per record (wide CSV) plus a .json twin that adds column units/descriptions and tissue rows."""
    rows = [{"input": record["input"], "engine": record["engine"], "model": record.get("model", ""),
             "warnings": warnings_cell(record.get("warnings", [])), **record["summary"], **record.get("regions", {})}
            for record in records]
    columns = _record_columns(records)
    twin = {"columns": [column.__dict__ for column in columns], "rows": rows,
            "tissue_columns": [column.__dict__ for column in TISSUE_COLUMNS],
            "tissue_rows": {record["input"]: record["tissue_rows"] for record in records},
            "region_notes": {record["input"]: record.get("region_notes", {}) for record in records}}
    write_text(path, csv_text(columns, rows), overwrite)
    write_text(json_twin_path(path), json.dumps(_json_safe(twin), indent=1), overwrite)


def warnings_cell(warnings) -> str:
    return " | ".join(warnings)


def _record_columns(records: list) -> tuple:
    """INPUT_COLUMNS and the summary columns of every record, in order of first appearance (RECORD_COLUMNS
    when all records measured LegSegNet's four tissues)."""
    columns = {column.name: column for column in INPUT_COLUMNS}
    for record in records:
        given = ([ColumnInfo(**column) for column in record["columns"]] if "columns" in record
                 else SUMMARY_COLUMNS + REGION_COLUMNS)
        columns.update({column.name: column for column in given if column.name not in columns})
    return tuple(columns.values())


def write_slice_table(records: list, path, overwrite: bool = False) -> None:
    """The per-slice areas of every record, long format (CSV)."""
    rows = [{"input": record["input"], **row} for record in records for row in record["slice_rows"]]
    write_text(path, csv_text(SLICE_RECORD_COLUMNS, rows), overwrite)


def write_site_table(records: list, path, overwrite: bool = False) -> None:
    """The landmark sites of every record, long format (CSV), plus a .json twin with column units/descriptions."""
    columns = INPUT_COLUMNS[:1] + site_columns(_muscle_bands(records))
    rows = [{"input": record["input"], **row} for record in records for row in record.get("site_rows", [])]
    write_table_with_twin(columns, rows, path, overwrite)


def _muscle_bands(records: list) -> tuple:
    """The bands the records were measured with (one run's records share their settings)."""
    for record in records:
        bands = ((record.get("settings") or {}).get("measurement") or {}).get("muscle_bands")
        if bands:
            return tuple(tuple(band) for band in bands)
    return MeasurementSettings().muscle_bands


def json_twin_path(csv_path) -> Path:
    return Path(csv_path).with_suffix(".json")


def csv_text(columns, rows: list) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([column.name for column in columns])
    for row in rows:
        writer.writerow([_cell(row.get(column.name)) for column in columns])
    return buffer.getvalue()


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.10g}" if isinstance(value, float) else str(value)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def write_table_with_twin(columns, rows: list, path, overwrite: bool = False) -> None:
    """Any table as CSV plus a .json twin holding the column units and descriptions and the rows (NaN: null)."""
    twin = {"columns": [column.__dict__ for column in columns],
            "rows": [{column.name: row.get(column.name) for column in columns} for row in rows]}
    write_text(path, csv_text(columns, rows), overwrite)
    write_text(json_twin_path(path), json.dumps(_json_safe(twin), indent=1), overwrite)
