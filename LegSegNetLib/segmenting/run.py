"""From a CT volume to labels and measurements in one call, shared by the command line and the Slicer module,
plus the measurement files the command line writes (wide CSV with a JSON twin, long per-slice CSV).

CSV cells of undefined values (NaN: a ratio or mean with a zero denominator) are empty; JSON has null.
CSV numbers have 10 significant digits, so binary rounding noise (2233.8160000000003) stays out of
spreadsheets; the JSON files keep full precision.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from LegSegNetLib.segmenting.engines.base import SliceEngine
from LegSegNetLib.reading.layout import slice_layout
from LegSegNetLib.measuring.measurements import SLICE_COLUMNS, SUMMARY_COLUMNS, TISSUE_COLUMNS, ColumnInfo, Measurements, compute_measurements
from LegSegNetLib.writing.outputs import write_text
from LegSegNetLib.segmenting.pipeline import ProgressCallback, SliceRange, segment_volume, slice_range_from_mm
from LegSegNetLib.reading.validation import validate_ct
from LegSegNetLib.reading.volume import Volume

log = logging.getLogger(__name__)

# Columns the command line puts before the summary columns in its one-row-per-input table.
INPUT_COLUMNS = (
    ColumnInfo("input", "", "the CT file or DICOM folder measured"),
    ColumnInfo("engine", "", "the engine that made the labels"),
    ColumnInfo("model", "", "the model folder or installed model name the legsegnet engine used"),
)
RECORD_COLUMNS = INPUT_COLUMNS + SUMMARY_COLUMNS
SLICE_RECORD_COLUMNS = INPUT_COLUMNS[:1] + SLICE_COLUMNS


@dataclass(frozen=True)
class SegmentationResult:
    labels: Volume  # uint8, on the CT's own grid
    measurements: Measurements
    warnings: tuple  # messages about a suspicious input (see validation.validate_ct)


def run_segmentation(
    ct: Volume,
    engine: SliceEngine,
    slice_range: Optional[SliceRange] = None,
    range_mm: Optional[tuple] = None,
    progress: Optional[ProgressCallback] = None,
    batch_size: Optional[int] = None,
) -> SegmentationResult:
    """Validate `ct`, label its axial slices (only those in `slice_range`, or between the S positions
    `range_mm` = (start, stop) in mm) and measure the result. Raises validation.InputError for a volume
    that cannot be segmented, pipeline.EmptyRangeError for a range with no slice, pipeline.Cancelled."""
    warnings = tuple(validate_ct(ct))
    for warning in warnings:
        log.warning(warning)
    labels = segment_volume(ct, engine, selected_slices(ct, slice_range, range_mm), progress, batch_size)
    return SegmentationResult(labels, compute_measurements(ct, labels), warnings)


def selected_slices(ct: Volume, slice_range: Optional[SliceRange], range_mm: Optional[tuple]) -> Optional[SliceRange]:
    if range_mm is None:
        return slice_range
    if slice_range is not None:
        raise ValueError("give the axial range in slice indices or in millimetres, not both")
    return slice_range_from_mm(ct, slice_layout(ct), *range_mm)


def measurement_record(input_name: str, engine_name: str, measurements: Measurements, model: str = "") -> dict:
    """Everything measured on one input, as plain JSON-able data (NaN becomes None)."""
    return _json_safe({
        "input": input_name, "engine": engine_name, "model": model, "summary": measurements.summary,
        "tissue_rows": measurements.tissue_rows, "slice_rows": measurements.slice_rows,
    })


def write_summary_table(records: list, path, overwrite: bool = False) -> None:
    """One row per record (wide CSV) plus a .json twin that adds column units/descriptions and tissue rows."""
    rows = [{"input": record["input"], "engine": record["engine"], "model": record.get("model", ""), **record["summary"]}
            for record in records]
    twin = {"columns": [column.__dict__ for column in RECORD_COLUMNS], "rows": rows,
            "tissue_columns": [column.__dict__ for column in TISSUE_COLUMNS],
            "tissue_rows": {record["input"]: record["tissue_rows"] for record in records}}
    write_text(path, csv_text(RECORD_COLUMNS, rows), overwrite)
    write_text(json_twin_path(path), json.dumps(_json_safe(twin), indent=1), overwrite)


def write_slice_table(records: list, path, overwrite: bool = False) -> None:
    """The per-slice areas of every record, long format (CSV)."""
    rows = [{"input": record["input"], **row} for record in records for row in record["slice_rows"]]
    write_text(path, csv_text(SLICE_RECORD_COLUMNS, rows), overwrite)


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
