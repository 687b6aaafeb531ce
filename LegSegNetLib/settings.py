"""The one settings object that crosses from the command line or the Slicer module into the core.

`SegmentationSettings` is frozen and checked when it is made: an engine name, device or fold list that cannot
work fails here, with a message that says what to give instead, before any volume is read or model loaded.
The command line builds it once from its arguments, the Slicer widget from its parameter node; the engine
factory, the segmentation run and the batch records all read it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from LegSegNetLib.device import check_device_name
from LegSegNetLib.models.folds import parse_folds
from LegSegNetLib.reading.layout import SliceLayout, SliceRange
from LegSegNetLib.segmenting.engines.nnunet.backends import BACKENDS, DEFAULT_BACKEND

ENGINES = ("legsegnet", "threshold")
MODEL_ENGINE, THRESHOLD_ENGINE = ENGINES
DEFAULT_MODEL = "legsegnet"  # registry name of the published LegSegNet weights
PREPROCESSING = ("legsegnet", "native")  # None: the model folder or registry entry says which
# Fields that choose or run a model: the threshold engine takes none of them.
MODEL_OPTIONS = ("model", "folds", "checkpoint", "tta", "batch_size", "preprocessing", "backend")
DEFAULT_IMAT_FAT_FRACTION = 0.1  # VinceWohl/MuscleSeg's threshold of the Dixon fat fraction inside muscle masks


class SettingsError(ValueError):
    """Settings that cannot work together; the message says what to change."""


# Skeletal-muscle attenuation bands (HU, both ends included) reported at each site: all muscle, the 0..100 band,
# low and normal attenuation (Long et al., PLoS One 2019, recommend reporting every one of them).
DEFAULT_MUSCLE_BANDS = ((-29.0, 150.0), (0.0, 100.0), (-29.0, 29.0), (30.0, 150.0))
SITE_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


@dataclass(frozen=True)
class MeasurementSettings:
    """What is measured at the landmark sites: muscle HU bands, extra sites given by position, the patient's
    height. Checked when made, like SegmentationSettings."""

    muscle_bands: tuple = DEFAULT_MUSCLE_BANDS  # ((low, high) HU, ...)
    user_sites: tuple = ()  # ((name, S position in mm), ...)
    height_m: Optional[float] = None  # None: from the DICOM PatientSize when the input has one

    def __post_init__(self):
        bands = tuple((float(low), float(high)) for low, high in self.muscle_bands)
        if not bands or any(not (math.isfinite(low) and math.isfinite(high) and low <= high) for low, high in bands):
            raise SettingsError(f"muscle bands need a low and a high HU each, low <= high, not {self.muscle_bands!r}")
        object.__setattr__(self, "muscle_bands", bands)
        sites = tuple((str(name), float(position)) for name, position in self.user_sites)
        for name, position in sites:
            if not name or set(name) - SITE_NAME_CHARACTERS or not math.isfinite(position):
                raise SettingsError(f"a site needs a name of lower-case letters, digits and _ and a finite S position "
                                    f"in mm, e.g. knee_line=-420, not {name}={position}")
        names = [name for name, _ in sites]
        if names:
            self._check_site_names(names)
        object.__setattr__(self, "user_sites", sites)
        if self.height_m is not None and not 0.5 <= float(self.height_m) <= 2.6:
            raise SettingsError(f"the height is given in metres (0.5 to 2.6), not {self.height_m}")

    @classmethod
    def from_text(cls, muscle_bands: str = "", user_sites: str = "", height_m: Optional[float] = None):
        """From the texts a form or the command line takes: bands "LOW:HIGH,..." (empty: the defaults), sites
        "NAME=S_MM,..." (empty: none). ValueError that shows the expected form for anything else."""
        try:
            bands = tuple(tuple(float(end) for end in _two(part, ":")) for part in muscle_bands.split(",")
                          ) if muscle_bands.strip() else DEFAULT_MUSCLE_BANDS
        except ValueError:
            raise SettingsError(f"muscle bands are LOW:HIGH HU pairs separated by commas, e.g. -29:150,0:100, "
                                f"not {muscle_bands!r}") from None
        try:
            sites = tuple((name.strip(), float(position)) for name, position
                          in (_two(part, "=") for part in user_sites.split(",") if part.strip()))
        except ValueError:
            raise SettingsError(f"sites are NAME=S_MM separated by commas, e.g. knee_line=-420, "
                                f"not {user_sites!r}") from None
        return cls(muscle_bands=bands, user_sites=sites, height_m=height_m)

    @staticmethod
    def _check_site_names(names: list) -> None:
        from LegSegNetLib.measuring.sites import SITE_NAMES  # here: the sites module reads these settings

        if len(set(names)) != len(names) or set(names) & set(SITE_NAMES):
            raise SettingsError(f"each site needs a name of its own, other than {', '.join(SITE_NAMES)}; "
                                f"not {', '.join(names)}")

    def record(self) -> dict:
        return {"muscle_bands": [list(band) for band in self.muscle_bands],
                "user_sites": [list(site) for site in self.user_sites], "height_m": self.height_m}


def _is_plain_file_name(name: str) -> bool:
    """A file name without any folder part, so that it cannot reach outside the model folder."""
    return isinstance(name, str) and name not in ("", ".", "..") and not any(sep in name for sep in "/\\:")


@dataclass(frozen=True)
class SegmentationSettings:
    engine: str = MODEL_ENGINE
    model: Optional[str] = None  # model folder or installed/registry name; None: DEFAULT_MODEL
    folds: Union[None, str, tuple] = None  # fold numbers to ensemble, or their text ("0,1,2", "all"); None: all
    checkpoint: Optional[str] = None  # file name in each fold folder; None: final, else best
    tta: bool = False
    device: str = "auto"
    backend: str = DEFAULT_BACKEND
    batch_size: Optional[int] = None  # slices per network pass; None: the engine chooses
    preprocessing: Optional[str] = None
    slice_range: Optional[SliceRange] = None  # display slice indices, half-open
    range_mm: Optional[tuple] = None  # (start, stop) RAS S positions in mm; at most one of the two ranges
    imat_fat_fraction: float = DEFAULT_IMAT_FAT_FRACTION  # Dixon MRI: muscle voxels above it count as IMAT
    measurement: MeasurementSettings = MeasurementSettings()  # muscle bands, user sites, height

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise SettingsError(f"unknown engine {self.engine!r}: choose one of {', '.join(ENGINES)}")
        object.__setattr__(self, "device", check_device_name(self.device))
        if isinstance(self.folds, str):
            object.__setattr__(self, "folds", parse_folds(self.folds))
        elif self.folds is not None:
            object.__setattr__(self, "folds", tuple(sorted({int(fold) for fold in self.folds})))
        if self.backend not in BACKENDS:
            raise SettingsError(f"unknown backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if self.preprocessing not in (None, *PREPROCESSING):
            raise SettingsError(f"unknown preprocessing {self.preprocessing!r}: choose {' or '.join(PREPROCESSING)}")
        if self.checkpoint is not None and not _is_plain_file_name(self.checkpoint):
            raise SettingsError(f"--checkpoint names a file inside each fold folder of the model (such as "
                                f"checkpoint_best.pth), not a path: {self.checkpoint!r}")
        if not 0.0 < self.imat_fat_fraction < 1.0:
            raise SettingsError(f"the IMAT fat-fraction threshold must lie between 0 and 1, not {self.imat_fat_fraction}")
        if self.batch_size is not None and self.batch_size < 1:
            raise SettingsError(f"the batch size must be at least 1, not {self.batch_size}")
        self._check_ranges()
        if self.engine == THRESHOLD_ENGINE:
            self._refuse_model_options()

    def _check_ranges(self) -> None:
        if self.slice_range is not None and self.range_mm is not None:
            raise SettingsError("give the axial range in slice indices or in millimetres, not both")
        if self.range_mm is not None:
            if len(self.range_mm) != 2 or not all(math.isfinite(float(value)) for value in self.range_mm):
                raise SettingsError(f"the axial range in mm needs two finite positions, not {self.range_mm!r}")
            object.__setattr__(self, "range_mm", tuple(float(value) for value in self.range_mm))

    def _refuse_model_options(self) -> None:
        defaults = SegmentationSettings()
        named = [name for name in MODEL_OPTIONS if getattr(self, name) != getattr(defaults, name)]
        if named:
            raise SettingsError(f"the threshold engine takes no {', '.join(named)}: those choose a LegSegNet model")

    @property
    def uses_model(self) -> bool:
        return self.engine == MODEL_ENGINE

    def replace(self, **changes) -> "SegmentationSettings":
        return dataclasses.replace(self, **changes)

    def slices_to_segment(self, layout: SliceLayout) -> Optional[SliceRange]:
        """The chosen axial range as display slice indices of a volume with this layout (None: every slice)."""
        if self.range_mm is not None:
            return layout.range_between_mm(*self.range_mm)
        return self.slice_range

    def model_used(self) -> str:
        """For the tables: the model folder as an absolute path, or the installed model's name ('' without one)."""
        if not self.uses_model:
            return ""
        model = self.model or DEFAULT_MODEL
        path = Path(model).expanduser()
        return str(path.resolve()) if path.is_dir() else model

    def record(self) -> dict:
        """The settings that decide the labels, as JSON data kept in each batch input's record: a done input is
        reused only when made with the same ones."""
        return {"engine": self.engine, "model": self.model, "folds": list(self.folds) if self.folds else None,
                "checkpoint": self.checkpoint, "tta": self.tta, "backend": self.backend,
                "preprocessing": self.preprocessing,
                "range": [self.slice_range.start, self.slice_range.stop] if self.slice_range else None,
                "range_mm": list(self.range_mm) if self.range_mm else None,
                # only when changed (_RECORD_DEFAULTS)
                **{key: value for key, value in self._optional_record().items() if value != _RECORD_DEFAULTS[key]}}

    def _optional_record(self) -> dict:
        return {"imat_fat_fraction": self.imat_fat_fraction, "measurement": self.measurement.record()}

    def record_differences(self, made_with: dict) -> list:
        """How the settings of an earlier record (`made_with`, from record()) differ from these, one
        'KEY THEN there, NOW now' text per setting; a setting the record leaves out had its default."""
        now, then = {**_RECORD_DEFAULTS, **self.record()}, {**_RECORD_DEFAULTS, **made_with}
        return [f"{key} {then.get(key)} there, {value} now" for key, value in now.items() if then.get(key) != value]


# Settings a record holds only when changed, so that records written before these options existed still match.
_RECORD_DEFAULTS = SegmentationSettings()._optional_record()


def _two(text: str, separator: str) -> tuple:
    """'a<separator>b' -> ('a', 'b'); ValueError for any other number of parts."""
    parts = text.split(separator)
    if len(parts) != 2:
        raise ValueError(text)
    return tuple(parts)
