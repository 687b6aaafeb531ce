"""Hostile model sources (registries, servers, archives, model folders): no file outside the model folder is
written or deleted, no download grows without bound, and every broken model is one line with exit status 2.

Beside test_hostile_inputs.py (hostile images and outputs); these need the isolated home and the local weights
server of the model tests.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import zipfile

import pytest

from LegSegNetLib.cli import main
from LegSegNetLib.models import NOT_INSTALLED, download_model, model_status, paths
from LegSegNetLib.models.download import DiskFullError, DownloadDeadlineError, OversizedDownloadError
from LegSegNetLib.reading.volume_files import write_volume
from LegSegNetLib.synthetic.leg_phantom import make_leg_phantom
from models_helpers import HF_FILES, hf_model, isolated_home, server, write_registry, zip_folder  # noqa: F401

CHECKPOINT = "fold_0/checkpoint_best.pth"


def registry_entry(path, url_pattern, files):
    path.write_text(json.dumps({"models": [{"name": "legsegnet", "version": "x", "url_pattern": url_pattern,
                                            "files": files}]}))
    return path


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("legsegnet: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


# ---- 1. the registry cannot reach outside the model folder ------------------------------------------------------

@pytest.mark.parametrize("escape", ["absolute", "dotdot"])
def test_a_registry_path_outside_the_model_folder_is_refused_and_nothing_there_deleted(
        server, tmp_path, monkeypatch, isolated_home, escape):
    victim = (tmp_path / "victim.txt") if escape == "absolute" else (isolated_home / "victim.txt")
    victim.parent.mkdir(parents=True, exist_ok=True)
    victim.write_text("the user's file")
    listed = str(victim) if escape == "absolute" else "../../victim.txt"  # from models/.partial-legsegnet/
    files = [{"path": "plans.json"}, {"path": listed, "size": 3, "sha256": "0" * 64}]
    monkeypatch.setenv("LEGSEGNET_REGISTRY", str(registry_entry(tmp_path / "r.json", "https://x.invalid/{path}", files)))
    with pytest.raises(ValueError, match="not a relative path inside the model folder"):
        download_model("legsegnet")
    assert victim.read_text() == "the user's file"


def test_file_urls_are_refused_in_registries_and_mirrors(tmp_path, monkeypatch, isolated_home, hf_model):
    files = [{"path": name} for name in HF_FILES]
    monkeypatch.setenv("LEGSEGNET_REGISTRY", str(registry_entry(tmp_path / "r.json", f"file://{hf_model}/{{path}}", files)))
    with pytest.raises(ValueError, match="only https addresses are allowed"):
        download_model("legsegnet")
    monkeypatch.delenv("LEGSEGNET_REGISTRY")
    monkeypatch.setenv("LEGSEGNET_WEIGHTS_URL", f"file://{hf_model}")
    with pytest.raises(ValueError, match="only https or http addresses are allowed"):
        download_model("legsegnet")
    assert not paths.models_dir().exists() or not any(paths.models_dir().rglob("plans.json*"))


# ---- 4. downloads are bounded in size, time and disk -----------------------------------------------------------

def partial_file(relative):
    return paths.partial_download_dir("legsegnet") / (relative + ".part")


def test_an_endless_response_stops_at_the_declared_size(server, hf_model, tmp_path, monkeypatch):
    monkeypatch.setenv("LEGSEGNET_REGISTRY", str(write_registry(tmp_path / "r.json", hf_model)))
    server.misbehaviour.endless.add(f"/model/{CHECKPOINT}")
    with pytest.raises(OversizedDownloadError, match="sent more than the .* bytes the file has"):
        download_model("legsegnet")
    assert not partial_file(CHECKPOINT).exists()
    assert model_status("legsegnet").state == NOT_INSTALLED
    # The client hung up after the declared size; the server had at most its socket buffers' worth more queued.
    assert server.bytes_sent < (hf_model / CHECKPOINT).stat().st_size + (16 << 20)


def test_a_trickling_server_meets_the_overall_deadline(server, hf_model):
    server.misbehaviour.trickle_s["/model/plans.json"] = 0.05  # a byte well within the idle timeout, every time
    with pytest.raises(DownloadDeadlineError, match="did not arrive within its time limit"):
        download_model("legsegnet", timeout=5, deadline=1.0)
    assert not partial_file("plans.json").exists()
    assert server.bytes_sent < (hf_model / "plans.json").stat().st_size


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux) to fill a disk")
def test_a_full_disk_names_the_path_and_removes_the_part(server):
    with pytest.raises(Exception):
        download_model("legsegnet", cancel=lambda: True)  # leaves the partial folder with an empty plans.json.part
    part = partial_file("plans.json")
    part.unlink()
    part.symlink_to("/dev/full")  # every write there fails with ENOSPC, as on a full disk
    with pytest.raises(DiskFullError, match=f"the disk is full while writing {part}.*LEGSEGNET_HOME"):
        download_model("legsegnet")
    assert not os.path.lexists(part)


# ---- 6. broken model folders and archives: one line, exit 2 ----------------------------------------------------

@pytest.fixture(scope="module")
def ct_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ct") / "leg.nrrd"
    write_volume(make_leg_phantom(seed=1, shape=(2, 64, 64))[0], path)
    return path


def _edit_plans(edit):
    def apply(folder):
        plans = json.loads((folder / "plans.json").read_text())
        edit(plans)
        (folder / "plans.json").write_text(json.dumps(plans))  # NaN is written as NaN, as Python's json does
    return apply


def _architecture(plans):
    return plans["configurations"]["2d"]["architecture"]


BROKEN_MODELS = {
    "text checkpoint": lambda folder: (folder / CHECKPOINT).write_text("not a checkpoint\n"),
    "random-byte checkpoint": lambda folder: (folder / CHECKPOINT).write_bytes(os.urandom(4000)),
    "plans.json a list": lambda folder: (folder / "plans.json").write_text("[1, 2]"),
    "non-network class": _edit_plans(lambda plans: _architecture(plans).update(network_class_name="torch.nn.Linear")),
    "tensor class": _edit_plans(lambda plans: _architecture(plans).update(network_class_name="torch.nn.Parameter")),
    "inherits_from loop": _edit_plans(lambda plans: plans["configurations"].update(
        {"2d": {**plans["configurations"]["2d"], "inherits_from": "a"}, "a": {"inherits_from": "2d"}})),
    "NaN patch size": _edit_plans(lambda plans: plans["configurations"]["2d"].update(patch_size=[math.nan, 256])),
    "huge patch size": _edit_plans(lambda plans: plans["configurations"]["2d"].update(patch_size=[20000, 20000])),
    "huge network": _edit_plans(lambda plans: _architecture(plans)["arch_kwargs"].update(
        features_per_stage=[10 ** 6] * 5)),
}
EXPECTED = {
    "text checkpoint": "not a torch file", "random-byte checkpoint": "not a torch file",
    "plans.json a list": "holds a JSON list", "non-network class": "cannot build the network",
    "tensor class": "is not a network class", "inherits_from loop": "inherit from each other in a loop",
    "NaN patch size": "patch size", "huge patch size": "each side must be a whole number of pixels from 8 to 2048",
    "huge network": "beyond the supported size",
}


@pytest.mark.parametrize("damage", sorted(BROKEN_MODELS))
def test_a_broken_model_folder_is_one_line_with_exit_2(hf_model, tmp_path, ct_file, capsys, damage):
    folder = shutil.copytree(hf_model, tmp_path / "model")
    BROKEN_MODELS[damage](folder)
    assert main(["segment", str(ct_file), "--model", str(folder), "--device", "cpu",
                 "--measurements", str(tmp_path / "m.csv")]) == 2
    assert EXPECTED[damage] in one_line_error(capsys)
    assert main(["models", "install", str(folder), "--name", "broken"]) == 2
    assert EXPECTED[damage] in one_line_error(capsys)
    assert not (tmp_path / "m.csv").exists() and not paths.installed_model_dir("broken").exists()


@pytest.mark.parametrize("checkpoint", ["../../elsewhere.pth", "/tmp/checkpoint_best.pth", "..", "a\\..\\b.pth"])
def test_a_checkpoint_outside_the_model_folder_is_refused(hf_model, tmp_path, ct_file, capsys, checkpoint):
    assert main(["segment", str(ct_file), "--model", str(hf_model), "--checkpoint", checkpoint,
                 "--measurements", str(tmp_path / "m.csv")]) == 2
    assert "names a file inside each fold folder" in one_line_error(capsys)


def _flip_a_byte_of_plans(archive):
    with zipfile.ZipFile(archive) as bundle:
        info = bundle.getinfo("plans.json")
    data = bytearray(archive.read_bytes())
    where = info.header_offset + 30 + len(info.filename) + 10  # inside the stored (uncompressed) bytes
    data[where] ^= 0x01
    archive.write_bytes(bytes(data))


def _set_encrypted_flag(archive):
    data = bytearray(archive.read_bytes())
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local and central headers
        start = 0
        while (start := data.find(signature, start)) >= 0:
            data[start + flag_offset] |= 0x01
            start += 4
    archive.write_bytes(bytes(data))


@pytest.mark.parametrize("damage,message", [(_flip_a_byte_of_plans, "it is damaged (Bad CRC-32"),
                                            (_set_encrypted_flag, "is encrypted")])
def test_a_damaged_or_encrypted_zip_is_one_line_with_exit_2(hf_model, tmp_path, capsys, damage, message):
    archive = zip_folder(hf_model, tmp_path / "model.zip")
    damage(archive)
    assert main(["models", "install", str(archive)]) == 2
    assert message in one_line_error(capsys)
    assert not paths.installed_model_dir("legsegnet").exists()
