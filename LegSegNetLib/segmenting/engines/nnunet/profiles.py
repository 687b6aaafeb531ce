"""Which preprocessing profile runs a model, decided without torch (the engine factory and `models list` share it).

`legsegnet`: LegSegNet's 8-bit window and 256x256 stretch (models trained on its PNG slices); `native`: nnU-Net's
own 2D path on real intensities and spacing. The first of these that says one wins: the run's settings
(--preprocessing), the model folder's legsegnet.json ("preprocessing"), the model's registry entry, and last
the model's training data: PNG slices (dataset.json file_ending .png) mean legsegnet, anything else native.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from LegSegNetLib.settings import PREPROCESSING

LEGSEGNET_PROFILE, NATIVE_PROFILE = PREPROCESSING
MODEL_PROPERTIES_FILE = "legsegnet.json"  # beside plans.json: what nnU-Net's files do not say
PREPROCESSING_KEY = "preprocessing"  # in legsegnet.json


def choose_preprocessing(dataset_json: dict, properties: dict, folder: Path, requested: Optional[str] = None,
                         registry_profile: Optional[str] = None) -> str:
    """The profile, by the rule of this module's notes; `properties`: the folder's legsegnet.json content."""
    declared = properties.get(PREPROCESSING_KEY)
    if declared is not None and declared not in PREPROCESSING:
        raise ValueError(f"{Path(folder) / MODEL_PROPERTIES_FILE} names preprocessing {declared!r}; "
                         f"use one of {', '.join(PREPROCESSING)}")
    if requested or declared or registry_profile:
        return requested or declared or registry_profile
    return LEGSEGNET_PROFILE if dataset_json.get("file_ending") == ".png" else NATIVE_PROFILE
