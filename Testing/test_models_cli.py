"""`legsegnet models ...` end to end against the local weights server."""

from __future__ import annotations

import io

import pytest

from LegSegNetLib.cli import main
from LegSegNetLib.models import INSTALLED, NOT_INSTALLED, model_status
from models_helpers import hf_model, isolated_home, nnunet_results_layout, server, zip_folder  # noqa: F401


def answer(monkeypatch, text):
    monkeypatch.setattr("sys.stdin", io.StringIO(text))


def test_download_list_verify_remove(server, capsys, monkeypatch):
    assert main(["models", "download", "legsegnet"]) == 0
    out, err = capsys.readouterr()
    assert "installed legsegnet (folds 0)" in out
    assert "downloading fold_0/checkpoint_best.pth (3/3)" in err and "2605.30829" in err

    assert main(["models", "list"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("legsegnet"))
    assert row.split()[:4] == ["legsegnet", "installed", "1.0", "0"]

    assert main(["models", "verify"]) == 0
    assert "legsegnet: OK" in capsys.readouterr().out

    answer(monkeypatch, "n\n")
    assert main(["models", "remove", "legsegnet"]) == 1
    assert model_status("legsegnet").state == INSTALLED
    answer(monkeypatch, "y\n")
    assert main(["models", "remove", "legsegnet"]) == 0
    assert model_status("legsegnet").state == NOT_INSTALLED


def test_install_asks_before_replacing_and_verify_flags_damage(hf_model, tmp_path, capsys, monkeypatch):
    archive = zip_folder(hf_model, tmp_path / "weights.zip")
    assert main(["models", "install", str(archive)]) == 0
    answer(monkeypatch, "")
    assert main(["models", "install", str(nnunet_results_layout(hf_model, tmp_path / "results"))]) == 1
    assert "pass --yes" in capsys.readouterr().err
    assert main(["models", "install", str(tmp_path / "results"), "--yes"]) == 0

    checkpoint = model_status("legsegnet").path / "fold_0" / "checkpoint_final.pth"
    data = bytearray(checkpoint.read_bytes())
    data[-10] ^= 1
    checkpoint.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["models", "verify", "legsegnet"]) == 1
    assert "legsegnet: DAMAGED" in capsys.readouterr().out


def test_errors_are_one_clear_line(server, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LEGSEGNET_WEIGHTS_URL", server.base_url + "/missing")
    assert main(["models", "download"]) == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line.startswith("legsegnet: error: ") and "HTTP 404" in last_line
    assert main(["models", "install", str(tmp_path / "none.zip")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["models", "verify", "nonesuch"]) == 2
    assert "not installed: nonesuch" in capsys.readouterr().err


def test_a_missing_or_wrong_source_is_refused_before_asking_to_replace(hf_model, tmp_path, capsys, monkeypatch):
    assert main(["models", "install", str(hf_model)]) == 0
    (tmp_path / "notes.txt").write_text("not a model")
    answer(monkeypatch, "y\n")  # a question would be answered yes: the refusal must come first
    for source, message in ((tmp_path / "none.zip", "does not exist"), (tmp_path / "notes.txt", "neither a folder")):
        assert main(["models", "install", str(source)]) == 2
        captured = capsys.readouterr()
        assert message in captured.err and "replace it" not in captured.out + captured.err
    assert model_status("legsegnet").state == INSTALLED
    assert main(["models", "download", "nonesuch"]) == 2
    assert "no model named 'nonesuch'" in capsys.readouterr().err
