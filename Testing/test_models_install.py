"""Offline installs from folders and zips (Hugging Face and nnU-Net results layouts), refusals, removal, folds."""

from __future__ import annotations

import json
import os
import shutil
import sys
import zipfile

import pytest
import torch

from LegSegNetLib.models import (CORRUPT, INSTALLED, NOT_INSTALLED, ModelExistsError, ModelNotInstalledError,
                                 ModelValidationError, UnsafeArchiveError, choose_folds, install_model_from,
                                 legsegnet_home, list_models, model_status, parse_folds, remove_model, resolve_model,
                                 verify_model)
from LegSegNetLib.models.manifest import MANIFEST_NAME
from LegSegNetLib.segmenting.engines.nnunet.model import load_model_folder
from model_factory import make_model_folder
from models_helpers import HF_FILES, hf_model, isolated_home, nnunet_results_layout, sha256, zip_folder  # noqa: F401


def installed_files(folder):
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()}


@pytest.mark.parametrize("inside", ["", "LegSegNet"])
def test_a_zip_in_hugging_face_layout_installs(hf_model, tmp_path, inside):
    folder = install_model_from(zip_folder(hf_model, tmp_path / "weights.zip", inside))

    assert installed_files(folder) == {*HF_FILES, MANIFEST_NAME}
    assert sha256(folder / HF_FILES[2]) == sha256(hf_model / HF_FILES[2])
    status = model_status("legsegnet")
    assert (status.state, status.folds, status.version) == (INSTALLED, (0,), None)  # unknown: registry has no hashes
    assert str(tmp_path / "weights.zip") in status.detail
    assert verify_model("legsegnet") == []
    assert resolve_model("legsegnet") == folder


@pytest.mark.parametrize("packed", [False, True])
def test_an_nnunet_results_folder_installs_only_the_model_files(hf_model, tmp_path, packed):
    results = nnunet_results_layout(hf_model, tmp_path / "nnUNet_results")
    source = zip_folder(results, tmp_path / "results.zip") if packed else results

    folder = install_model_from(source, name="my-leg-model")

    assert installed_files(folder) == {"plans.json", "dataset.json", "fold_0/checkpoint_final.pth", MANIFEST_NAME}
    assert load_model_folder(folder).checkpoint_name == "checkpoint_final.pth"
    assert [s.name for s in list_models()] == ["legsegnet", "legsegnet-bootstrap", "my-leg-model"]
    assert resolve_model("my-leg-model") == folder


def test_a_checkpoint_that_would_run_code_is_refused(hf_model, tmp_path, monkeypatch):
    evil = shutil.copytree(hf_model, tmp_path / "evil")
    torch.save({"network_weights": {}, "init_args": {}, "payload": _RunsCode()}, evil / HF_FILES[2])
    monkeypatch.chdir(tmp_path)

    with pytest.raises(ModelValidationError, match="refusing to load.*system"):
        install_model_from(zip_folder(evil, tmp_path / "evil.zip"))
    assert not (tmp_path / "pwned").exists()
    assert model_status("legsegnet").state == NOT_INSTALLED
    assert os.listdir(legsegnet_home() / "models") == []  # the staging folder was cleaned up


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize("bad_name", ["../escaped.txt", "/tmp/escaped.txt", "LegSegNet/../../escaped.txt"])
def test_a_zip_with_paths_leaving_the_folder_is_refused(hf_model, tmp_path, bad_name):
    archive = zip_folder(hf_model, tmp_path / "model.zip")
    with zipfile.ZipFile(archive, "a") as bundle:
        bundle.writestr(bad_name, "escaped")
    with pytest.raises(UnsafeArchiveError, match="outside the model folder"):
        install_model_from(archive)
    assert not list(tmp_path.rglob("escaped.txt")) and not os.path.exists("/tmp/escaped.txt")
    assert model_status("legsegnet").state == NOT_INSTALLED


def test_weights_that_do_not_fit_the_plans_are_refused(hf_model, tmp_path):
    mixed = shutil.copytree(hf_model, tmp_path / "mixed")
    other = make_model_folder(tmp_path / "other", checkpoint_name="checkpoint_best.pth")  # smaller network
    shutil.copy(other / "plans.json", mixed / "plans.json")
    with pytest.raises(ModelValidationError, match="do not fit the network"):
        install_model_from(mixed)
    assert model_status("legsegnet").state == NOT_INSTALLED


def test_unusable_sources_are_explained(hf_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        install_model_from(tmp_path / "nowhere.zip")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelValidationError, match="neither a folder nor a .zip"):
        install_model_from(tmp_path / "notes.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelValidationError, match="holds no nnU-Net v2 model"):
        install_model_from(empty)
    broken = shutil.copytree(hf_model, tmp_path / "broken")
    (broken / "dataset.json").write_text("{not json")
    with pytest.raises(ModelValidationError, match="dataset.json is not valid JSON"):
        install_model_from(broken)
    with pytest.raises(ValueError, match="not a valid model name"):
        install_model_from(hf_model, name="../outside")


def test_an_installed_model_is_replaced_only_when_asked(hf_model, tmp_path):
    install_model_from(hf_model)
    first = model_status("legsegnet").detail
    with pytest.raises(ModelExistsError, match="already installed.*--yes"):
        install_model_from(hf_model)
    results = nnunet_results_layout(hf_model, tmp_path / "results")
    folder = install_model_from(results, replace=True)
    assert (folder / "fold_0" / "checkpoint_final.pth").is_file() and not (folder / "fold_0" / "checkpoint_best.pth").exists()
    assert model_status("legsegnet").detail != first


def test_remove_deletes_the_model_and_leftovers_of_interrupted_runs(hf_model):
    folder = install_model_from(hf_model)
    leftover = folder.parent / ".partial-legsegnet"
    leftover.mkdir()
    (leftover / "plans.json.part").write_text("{")
    other = folder.parent / ".partial-legsegnet-2"  # another model's download is none of our business
    other.mkdir()
    remove_model("legsegnet")
    assert not folder.exists() and not leftover.exists() and other.exists()
    with pytest.raises(FileNotFoundError, match="not installed"):
        remove_model("legsegnet")


def test_a_folder_without_its_manifest_never_counts_as_installed(hf_model):
    folder = install_model_from(hf_model)
    (folder / MANIFEST_NAME).unlink()  # as if the install had stopped before its last step
    assert model_status("legsegnet").state == NOT_INSTALLED
    with pytest.raises(ModelNotInstalledError, match="legsegnet models download legsegnet.*legsegnet models install"):
        resolve_model("legsegnet")
    (folder / MANIFEST_NAME).write_text("{broken")
    assert model_status("legsegnet").state == CORRUPT
    with pytest.raises(ModelNotInstalledError, match="install record .* is damaged.*legsegnet models remove"):
        resolve_model("legsegnet")


def test_resolve_model_accepts_a_model_folder_and_explains_everything_else(hf_model, tmp_path):
    assert resolve_model(hf_model) == hf_model
    assert resolve_model(str(hf_model)) == hf_model
    with pytest.raises(FileNotFoundError, match="not an nnU-Net v2 model folder"):
        resolve_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        resolve_model(tmp_path / "missing" / "model")
    with pytest.raises(ModelNotInstalledError, match="'custom' is not installed.*not in the registry either") as raised:
        resolve_model("custom")
    assert "models download" not in str(raised.value)  # there is nothing to download under that name
    assert "path of an nnU-Net v2 model folder" in str(raised.value)


def test_several_folds_are_listed_and_chosen(tmp_path):
    source = make_model_folder(tmp_path / "ensemble", folds=(0, 1, 2, 3, 4))
    folder = install_model_from(source, name="ensemble")
    assert model_status("ensemble").folds == (0, 1, 2, 3, 4)
    assert choose_folds(folder) == (0, 1, 2, 3, 4)
    assert choose_folds(folder, parse_folds("3,1")) == (1, 3)
    with pytest.raises(ValueError, match="fold 7 is not in"):
        choose_folds(folder, (1, 7))
    assert parse_folds("all") is None and parse_folds(None) is None
    with pytest.raises(ValueError, match="--folds takes"):
        parse_folds("first")


def test_the_home_folder_is_per_user_unless_overridden(isolated_home, monkeypatch):
    assert legsegnet_home() == isolated_home
    monkeypatch.delenv("LEGSEGNET_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere/cache")
    if sys.platform.startswith("linux"):
        assert str(legsegnet_home()) == "/somewhere/cache/legsegnet"
    assert legsegnet_home().is_absolute()


def test_the_registry_names_the_published_model_and_mirrors_replace_its_address(monkeypatch):
    from LegSegNetLib.models import get_model_spec

    spec = get_model_spec("legsegnet")
    assert spec.url_for("fold_0/checkpoint_best.pth") == \
        "https://huggingface.co/GogoChen/LegSegNet/resolve/main/fold_0/checkpoint_best.pth"
    monkeypatch.setenv("LEGSEGNET_WEIGHTS_URL", "https://mirror.example.org/weights/{model}/")
    assert spec.url_for("fold_0/checkpoint_best.pth") == \
        "https://mirror.example.org/weights/legsegnet/fold_0/checkpoint_best.pth"
    assert [f.path for f in spec.files] == list(HF_FILES) and spec.folds == (0,)
    assert spec.in_plane_orientation == "PL" and "2605.30829" in json.dumps(spec.citation)


def test_any_2d_model_installs_under_a_name_and_is_listed_with_its_profile_labels_and_folds(tmp_path, capsys):
    from LegSegNetLib.cli import main
    from LegSegNetLib.segmenting.engines.factory import create_engine
    from LegSegNetLib.settings import SegmentationSettings

    source = make_model_folder(tmp_path / "l3", folds=(0, 1), patch_size=(160, 160),
                               native={"spacing": (0.78, 0.78), "labels": ["psoas", "paraspinal", "VAT"]})
    assert main(["models", "install", str(source), "--name", "l3-body"]) == 0
    status = model_status("l3-body")
    assert (status.state, status.preprocessing, status.labels, status.folds) == (
        INSTALLED, "native", ("psoas", "paraspinal", "VAT"), (0, 1))
    main(["models", "list"])
    listing = capsys.readouterr().out
    assert "labels: psoas, paraspinal, VAT" in listing and "native" in listing
    engine = create_engine(SegmentationSettings(model="l3-body", folds="1", device="cpu"))
    assert engine.preprocessing == "native" and engine.model.folds == (1,)


def test_the_bundled_bootstrap_model_is_listed_and_used_by_name(capsys):
    from LegSegNetLib.cli import main
    from LegSegNetLib.models import BUNDLED

    status = model_status("legsegnet-bootstrap")
    assert (status.state, status.preprocessing, status.folds) == (BUNDLED, "legsegnet", (0,))
    assert status.labels == ("SAT", "SM", "IMAT", "Bone")
    assert resolve_model("legsegnet-bootstrap") == status.path
    main(["models", "list"])
    assert "legsegnet-bootstrap  bundled" in capsys.readouterr().out
    assert main(["models", "verify", "legsegnet-bootstrap"]) == 2
    assert "read-only" in capsys.readouterr().err
