"""Shared fixtures and helpers for the model download / install tests (imported by Testing/test_models_*.py)."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from model_factory import make_model_folder
from weights_server import WeightsServer

HF_FILES = ("plans.json", "dataset.json", "fold_0/checkpoint_best.pth")
# Big enough (about 2 MB) that a transfer takes several reads, so it can be cut, resumed and cancelled midway.
SERVED_FEATURES = (8, 16, 32, 64, 128)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Each test gets its own LEGSEGNET_HOME and no proxy, mirror or extra registry from the environment."""
    home = tmp_path / "legsegnet-home"
    monkeypatch.setenv("LEGSEGNET_HOME", str(home))
    for variable in ("LEGSEGNET_WEIGHTS_URL", "LEGSEGNET_REGISTRY", "http_proxy", "https_proxy", "all_proxy",
                     "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    return home


@pytest.fixture(scope="session")
def hf_model(tmp_path_factory) -> Path:
    """A model folder in the layout Hugging Face serves (plans.json, dataset.json, fold_0/checkpoint_best.pth)."""
    return make_model_folder(tmp_path_factory.mktemp("hf") / "LegSegNet", checkpoint_name="checkpoint_best.pth",
                             features_per_stage=SERVED_FEATURES)


@pytest.fixture
def server(hf_model, monkeypatch):
    """The served model behind a local stand-in for Hugging Face, set as the weights mirror."""
    with WeightsServer(hf_model) as running:
        monkeypatch.setenv("LEGSEGNET_WEIGHTS_URL", running.base_url)
        yield running


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_registry(path: Path, folder: Path, files=HF_FILES, name="legsegnet", checksums=True,
                   sha256_override=None, version="test-1") -> Path:
    """A registry file (for LEGSEGNET_REGISTRY) describing folder's files; registries name https addresses only,
    so tests serve the files through a mirror (LEGSEGNET_WEIGHTS_URL, which may be a local http server)."""
    entries = []
    for relative in files:
        size = (folder / relative).stat().st_size if checksums else None
        digest = (sha256_override or {}).get(relative, sha256(folder / relative)) if checksums else None
        entries.append({"path": relative, "size": size, "sha256": digest})
    path.write_text(json.dumps({"models": [{
        "name": name, "version": version, "url_pattern": f"https://weights.invalid/{name}/{{path}}", "files": entries,
        "in_plane_orientation": "PL"}]}))
    return path


def zip_folder(folder: Path, archive: Path, inside: str = "") -> Path:
    """Zip every file of folder, stored under the folder name `inside` ('' = at the archive's top)."""
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                bundle.write(path, "/".join(filter(None, [inside, path.relative_to(folder).as_posix()])))
    return archive


def nnunet_results_layout(model: Path, root: Path) -> Path:
    """The folder nnU-Net training leaves: DatasetXXX/trainer__plans__2d/ with fold_0/checkpoint_final.pth and extras."""
    trained = root / "Dataset001_LegCT" / "nnUNetTrainer__nnUNetPlans__2d"
    (trained / "fold_0" / "validation").mkdir(parents=True)
    for name in ("plans.json", "dataset.json"):
        shutil.copy(model / name, trained / name)
    shutil.copy(model / "fold_0" / "checkpoint_best.pth", trained / "fold_0" / "checkpoint_final.pth")
    (trained / "fold_0" / "validation" / "summary.json").write_text("{}")
    (trained / "fold_0" / "training_log.txt").write_text("epoch 0\n")
    (trained / "dataset_fingerprint.json").write_text("{}")
    return root
