"""A segmentation node against a reference, tissue by tissue, as table content (needs the `slicer` MRML API).

The reference is another segmentation node (say, a manual segmentation loaded from a file: its segments are
recognised as LegSegNet's are, else by name, "Skeletal muscle" or "SM" in any case) or tissue labels already on
a grid (the labels LegSegNet first wrote, to measure how much a user corrected; a labelmap volume node). The
numbers are those of `legsegnet compare` (LegSegNetLib.measuring.comparison), on the CT volume's grid.
"""

from __future__ import annotations

from SlicerLegSegNetLib import mrml_segmentation, mrml_tables
from LegSegNetLib.measuring.comparison import PER_CASE_COLUMNS, compare_case
from LegSegNetLib.reading.label_files import tissue_key_of_segment, tissue_labels
from LegSegNetLib.reading.volume import Volume

# The per-case columns of `legsegnet compare` without the case and prediction names.
COMPARISON_COLUMNS = tuple(column for column in PER_CASE_COLUMNS if column.name not in ("case", "prediction"))


def reference_segment_ids(segmentation_node) -> dict:
    """Tissue key -> segment id in a reference segmentation: LegSegNet's own segments, else segments named after
    a tissue. Raises ValueError when none is found."""
    found = mrml_segmentation.tissue_segment_ids(segmentation_node)
    if not found:
        segmentation = segmentation_node.GetSegmentation()
        for segment_id in segmentation.GetSegmentIDs():
            key = tissue_key_of_segment(segment_id, segmentation.GetSegment(segment_id).GetName())
            if key is not None:
                found.setdefault(key, segment_id)
    if not found:
        raise ValueError(f"no segment of '{segmentation_node.GetName()}' is a LegSegNet tissue or is named after "
                         "one: name the reference's segments (e.g. 'Skeletal muscle' or 'SM')")
    return found


def comparison_table_content(ct: Volume, labels: Volume, reference: Volume, notes=()) -> mrml_tables.TableContent:
    """One row per tissue: Dice, HD95, ASSD, volumes and mean HU of `labels` and `reference` (any grid that
    overlaps the CT's; tissue values) on the CT's grid."""
    reference_labels = tissue_labels(reference, source="the reference")
    result = compare_case("", labels, reference_labels.labels, ct=ct, notes=[*notes, *reference_labels.notes])
    return mrml_tables.table_content(COMPARISON_COLUMNS, result.rows)
