"""Labels: the four LegSegNet tissues, and the label set of any model, with names, colours and SNOMED CT codes.

A model's dataset.json names its labels ("psoas", "quadriceps", "SAT", ...). `label_set_from_names` turns them
into `Tissue`s: names this project knows get their SNOMED CT codes (taken from the DICOM/SNOMED tables 3D Slicer
and TotalSegmentator use), named muscles without a code here are typed "Skeletal muscle", fat labels "Fat", and
anything else the generic "Tissue". `kind` (muscle, fat, bone or "") decides which measurements a label gets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

CodedTerm = tuple[str, str, str]  # (coding scheme, code value, code meaning)


@dataclass(frozen=True)
class Tissue:
    value: int  # label value in label maps, as LegSegNet's dataset.json numbers it
    key: str  # short name used in table columns and file names
    name: str  # segment name shown to users
    color: tuple[float, float, float]  # RGB in 0..1
    category: CodedTerm
    type: CodedTerm
    region: Optional[CodedTerm] = None
    kind: str = ""  # MUSCLE, FAT, BONE or "": what the measurements treat it as


MUSCLE, FAT, BONE = "muscle", "fat", "bone"
TISSUE_CATEGORY = ("SCT", "85756007", "Tissue")
ANATOMICAL_STRUCTURE = ("SCT", "123037004", "Anatomical Structure")
SKELETAL_MUSCLE = ("SCT", "127954009", "Skeletal muscle")
FAT_TYPE = ("SCT", "55603005", "Fat")

TISSUES: tuple[Tissue, ...] = (
    Tissue(1, "SAT", "Subcutaneous fat", (0.90, 0.80, 0.35), TISSUE_CATEGORY, ("SCT", "67769002", "Subcutaneous fat"),
           kind=FAT),
    Tissue(2, "SM", "Skeletal muscle", (0.75, 0.25, 0.25), ANATOMICAL_STRUCTURE, SKELETAL_MUSCLE, kind=MUSCLE),
    Tissue(3, "IMAT", "Intermuscular fat", (0.95, 0.55, 0.10), TISSUE_CATEGORY, FAT_TYPE,
           region=("SCT", "71616004", "Muscle"), kind=FAT),
    Tissue(4, "Bone", "Bone", (0.95, 0.95, 0.85), TISSUE_CATEGORY, ("SCT", "272673000", "Bone"), kind=BONE),
)

TISSUE_BY_KEY = {tissue.key: tissue for tissue in TISSUES}
TISSUE_BY_VALUE = {tissue.value: tissue for tissue in TISSUES}
BACKGROUND = 0


@dataclass(frozen=True)
class _KnownTerm:
    aliases: tuple  # label names as models spell them, lower case, words separated by single spaces
    name: str
    category: CodedTerm
    type: CodedTerm
    kind: str
    color: tuple
    region: Optional[CodedTerm] = None


def _muscle(aliases, name, code, color=(0.75, 0.25, 0.25)) -> _KnownTerm:
    return _KnownTerm(aliases, name, ANATOMICAL_STRUCTURE, ("SCT", code, name), MUSCLE, color)


def _bone(aliases, name, code) -> _KnownTerm:
    return _KnownTerm(aliases, name, ANATOMICAL_STRUCTURE, ("SCT", code, name), BONE, (0.95, 0.95, 0.85))


# Codes as 3D Slicer's and TotalSegmentator's DICOM terminology tables give them.
_KNOWN_TERMS = (
    *(_KnownTerm(aliases, tissue.name, tissue.category, tissue.type, tissue.kind, tissue.color, tissue.region)
      for tissue, aliases in zip(TISSUES, (
          ("sat", "subcutaneous fat", "subcutaneous adipose tissue", "subcutaneous fatty tissue"),
          ("sm", "skeletal muscle", "muscle", "muscles"),
          ("imat", "intermuscular fat", "intermuscular adipose tissue", "intramuscular fat"),
          ("bone", "bones")))),
    _KnownTerm(("vat", "visceral fat", "visceral adipose tissue"), "Visceral fat", TISSUE_CATEGORY, FAT_TYPE, FAT,
               (0.85, 0.65, 0.30), region=("SCT", "52731004", "Abdominal cavity")),
    _muscle(("psoas", "psoas major", "psoas muscle"), "Psoas major muscle", "64038003", (0.75, 0.41, 0.35)),
    _muscle(("iliopsoas",), "Iliopsoas muscle", "68455001", (0.75, 0.41, 0.35)),
    _muscle(("erector spinae", "erector spinae muscle"), "Erector spinae muscle", "44947003", (0.67, 0.33, 0.27)),
    _muscle(("paraspinal", "paraspinal muscle", "paraspinal muscles", "paraspinals", "autochthon", "deep back muscle"),
            "Deep muscle of back", "244849004", (0.67, 0.33, 0.27)),
    _muscle(("rectus abdominis",), "Rectus abdominis muscle", "77634003", (0.71, 0.39, 0.35)),
    _muscle(("external oblique",), "External oblique muscle", "44530005", (0.62, 0.30, 0.30)),
    _muscle(("internal oblique",), "Internal oblique muscle", "33147005", (0.58, 0.28, 0.33)),
    _muscle(("quadratus lumborum",), "Quadratus lumborum muscle", "47560002", (0.66, 0.36, 0.40)),
    _muscle(("quadriceps", "quadriceps femoris", "extensors", "knee extensors", "thigh extensors"),
            "Quadriceps femoris muscle", "21989003", (0.80, 0.30, 0.25)),
    _muscle(("adductors", "thigh adductors", "medial thigh muscles", "thigh medial compartment"),
            "Structure of medial muscle of thigh", "1179657002", (0.60, 0.35, 0.60)),
    _muscle(("hamstrings", "flexors", "knee flexors", "thigh flexors", "posterior thigh muscles",
             "thigh posterior compartment"), "Posterior muscle of thigh structure", "128511007", (0.35, 0.45, 0.75)),
    _muscle(("sartorius",), "Sartorius muscle", "12595009", (0.45, 0.70, 0.45)),
    _muscle(("gluteus maximus",), "Gluteus maximus muscle", "181674001", (0.70, 0.35, 0.45)),
    _muscle(("gluteus medius",), "Gluteus medius muscle", "78333006", (0.65, 0.40, 0.50)),
    _bone(("femur",), "Femur", "71341001"),
    _bone(("tibia",), "Tibia", "12611008"),
    _bone(("fibula",), "Fibula", "87342007"),
    _bone(("patella",), "Patella", "64234005"),
)
_TERM_BY_ALIAS = {alias: term for term in _KNOWN_TERMS for alias in term.aliases}
# Words that make an uncoded label a named skeletal muscle (the thigh and calf muscles of Dixon MRI frameworks).
_MUSCLE_WORDS = ("muscle", "vastus", "rectus", "biceps", "semitendinosus", "semimembranosus", "gracilis", "adductor",
                 "gastrocnemius", "soleus", "tibialis", "peroneus", "peroneal", "fibularis", "extensor", "flexor",
                 "popliteus", "plantaris", "pectineus", "tensor", "oblique", "transversus", "abdominal wall")
_FAT_WORDS = ("fat", "imat", "vat", "sat")  # whole words; "adipose" anywhere
GENERIC_TYPE = ("SCT", "85756007", "Tissue")


@dataclass(frozen=True)
class LabelSet:
    """The foreground labels of a label map, in value order (background 0 is not one of them)."""

    labels: tuple

    @property
    def values(self) -> tuple:
        return tuple(label.value for label in self.labels)

    @property
    def is_legsegnet_tissues(self) -> bool:
        """The four LegSegNet tissues with their values: the measurements and tables LegSegNet defines apply."""
        return self.labels == TISSUES

    def by_value(self, value: int) -> Tissue:
        return next(label for label in self.labels if label.value == value)


LEGSEGNET_LABELS = LabelSet(TISSUES)


def label_set_from_names(labels: dict) -> LabelSet:
    """A LabelSet from dataset.json's {name: value} labels ("background" and value 0 left out)."""
    foreground = sorted((value, name) for name, value in labels.items() if value != BACKGROUND)
    keys = [_key(name) for _, name in foreground]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError(f"label names {duplicates} differ only in case or punctuation; give each label its own name")
    if [(value, key.lower()) for (value, _), key in zip(foreground, keys)] == [
            (tissue.value, tissue.key.lower()) for tissue in TISSUES]:
        return LEGSEGNET_LABELS
    return LabelSet(tuple(_label(value, name, key, index)
                          for index, ((value, name), key) in enumerate(zip(foreground, keys))))


def _label(value: int, name: str, key: str, index: int) -> Tissue:
    words = " ".join(name.lower().replace("_", " ").replace("-", " ").split())
    term = _TERM_BY_ALIAS.get(words)
    if term is not None:
        return Tissue(value, key, term.name, term.color, term.category, term.type, term.region, term.kind)
    display = words.capitalize()
    color = _PALETTE[index % len(_PALETTE)]
    if any(word in words for word in _MUSCLE_WORDS):
        return Tissue(value, key, display, color, ANATOMICAL_STRUCTURE, SKELETAL_MUSCLE, kind=MUSCLE)
    if any(word in words.split() for word in _FAT_WORDS) or "adipose" in words:
        return Tissue(value, key, display, color, TISSUE_CATEGORY, FAT_TYPE, kind=FAT)
    return Tissue(value, key, display, color, TISSUE_CATEGORY, GENERIC_TYPE)


def _key(name: str) -> str:
    """A label's key for table columns and segment IDs: its dataset.json name with other characters as '_'."""
    key = "".join(character if character.isalnum() else "_" for character in name.strip()).strip("_")
    if not key:
        raise ValueError(f"label name {name!r} has no letters or digits; name every label in dataset.json")
    return key


# Distinct colours for labels without a known term (Slicer's GenericAnatomyColors-like hues).
_PALETTE = ((0.50, 0.68, 0.50), (0.94, 0.84, 0.57), (0.69, 0.48, 0.39), (0.44, 0.72, 0.82), (0.85, 0.40, 0.40),
            (0.56, 0.45, 0.80), (0.90, 0.60, 0.30), (0.30, 0.60, 0.55), (0.80, 0.55, 0.70), (0.60, 0.60, 0.30),
            (0.40, 0.50, 0.85), (0.85, 0.75, 0.45), (0.55, 0.30, 0.45), (0.35, 0.75, 0.35))
