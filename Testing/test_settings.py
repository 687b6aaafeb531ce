"""The one settings object: checked when made, parsed once, and recorded so that earlier batch results still count."""

import pytest

from LegSegNetLib.reading.layout import SliceRange
from LegSegNetLib.settings import MeasurementSettings, SegmentationSettings, SettingsError

# What a batch record's settings held before the measurement, Dixon and preprocessing options existed.
RECORD_OF_THE_FIRST_ROUND = {"engine": "threshold", "model": None, "folds": None, "checkpoint": None, "tta": False,
                             "backend": "torch", "range": [2, 9], "range_mm": None}


def test_folds_are_parsed_once_whatever_form_they_come_in():
    assert SegmentationSettings(folds="2, 0,2").folds == (0, 2)
    assert SegmentationSettings(folds=[3, 1]).folds == (1, 3)
    assert SegmentationSettings(folds="all").folds is None
    with pytest.raises(ValueError, match="fold numbers"):
        SegmentationSettings(folds="zero")


@pytest.mark.parametrize("fields, message", [
    ({"engine": "magic"}, "unknown engine"),
    ({"backend": "tensorrt"}, "unknown backend"),
    ({"preprocessing": "raw"}, "unknown preprocessing"),
    ({"batch_size": 0}, "at least 1"),
    ({"slice_range": SliceRange(0, 3), "range_mm": (0, 10)}, "not both"),
    ({"range_mm": (0, float("nan"))}, "two finite positions"),
    ({"engine": "threshold", "tta": True, "model": "x"}, "takes no model, tta"),
])
def test_settings_that_cannot_work_are_refused_when_made(fields, message):
    with pytest.raises(SettingsError, match=message):
        SegmentationSettings(**fields)


def test_earlier_records_still_match_while_new_options_keep_their_defaults():
    settings = SegmentationSettings(engine="threshold", slice_range=SliceRange(2, 9))
    assert settings.record() == {**RECORD_OF_THE_FIRST_ROUND, "preprocessing": None}
    changed = settings.replace(measurement=MeasurementSettings(height_m=1.7), imat_fat_fraction=0.2).record()
    assert changed["measurement"]["height_m"] == 1.7 and changed["imat_fat_fraction"] == 0.2


def test_measurement_settings_from_the_texts_of_a_form():
    settings = MeasurementSettings.from_text(" -29:150, 0:100", "knee_line=-420, calf_top=10.5", 1.7)
    assert settings.muscle_bands == ((-29.0, 150.0), (0.0, 100.0))
    assert settings.user_sites == (("knee_line", -420.0), ("calf_top", 10.5)) and settings.height_m == 1.7
    assert MeasurementSettings.from_text() == MeasurementSettings()
    for bands, sites, message in (("-29", "", "LOW:HIGH"), ("a:b", "", "LOW:HIGH"), ("150:-29", "", "low <= high"),
                                  ("", "knee", "NAME=S_MM"), ("", "Knee=3", "lower-case"),
                                  ("", "mid_thigh=3", "name of its own")):
        with pytest.raises(SettingsError, match=message):
            MeasurementSettings.from_text(bands, sites)
