"""The four LegSegNet tissues: label values, names, colours and SNOMED CT codes, shared by every output."""

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


TISSUE_CATEGORY = ("SCT", "85756007", "Tissue")
ANATOMICAL_STRUCTURE = ("SCT", "123037004", "Anatomical Structure")

TISSUES: tuple[Tissue, ...] = (
    Tissue(1, "SAT", "Subcutaneous fat", (0.90, 0.80, 0.35), TISSUE_CATEGORY, ("SCT", "67769002", "Subcutaneous fat")),
    Tissue(2, "SM", "Skeletal muscle", (0.75, 0.25, 0.25), ANATOMICAL_STRUCTURE, ("SCT", "127954009", "Skeletal muscle")),
    Tissue(3, "IMAT", "Intermuscular fat", (0.95, 0.55, 0.10), TISSUE_CATEGORY, ("SCT", "55603005", "Fat"),
           region=("SCT", "71616004", "Muscle")),
    Tissue(4, "Bone", "Bone", (0.95, 0.95, 0.85), TISSUE_CATEGORY, ("SCT", "272673000", "Bone")),
)

TISSUE_BY_KEY = {tissue.key: tissue for tissue in TISSUES}
TISSUE_BY_VALUE = {tissue.value: tissue for tissue in TISSUES}
BACKGROUND = 0
