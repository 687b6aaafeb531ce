"""Downloads from a local stand-in for Hugging Face: clean, resumed, cancelled, corrupted, refused, stalled, proxied."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time

import pytest
import torch

from LegSegNetLib.models import (CORRUPT, INSTALLED, NOT_INSTALLED, ChecksumMismatchError, DownloadCancelled,
                                 DownloadError, DownloadTimeoutError, ModelExistsError, ModelNotInstalledError,
                                 ModelValidationError, download_model, forget_recorded_checksums, model_status,
                                 resolve_model, verify_model)
from LegSegNetLib.segmenting.engines.nnunet.model import load_model_folder
from models_helpers import HF_FILES, hf_model, isolated_home, server, sha256, write_registry  # noqa: F401
from weights_server import WeightsServer

CHECKPOINT = "fold_0/checkpoint_best.pth"


def url_path(relative):
    return f"/model/{relative}"


def test_clean_download_installs_a_verified_model_that_loads(server, hf_model, isolated_home):
    reports = []
    folder = download_model("legsegnet", progress=reports.append)

    assert folder == isolated_home / "models" / "legsegnet"
    for relative in HF_FILES:
        assert sha256(folder / relative) == sha256(hf_model / relative)
    assert json.loads((folder / "legsegnet.json").read_text()) == {"in_plane_orientation": "PL"}
    status = model_status("legsegnet")
    assert (status.state, status.folds, status.version) == (INSTALLED, (0,), "1.0")
    assert resolve_model("legsegnet") == folder
    assert verify_model("legsegnet") == []
    assert load_model_folder(folder).folds == (0,)
    assert not any(name.startswith(".") for name in os.listdir(folder.parent))  # no partial or staging left
    installed = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert installed == {*HF_FILES, "legsegnet.json", "legsegnet-model.json"}

    total = sum((hf_model / relative).stat().st_size for relative in HF_FILES)
    final = reports[-1]
    assert (final.done, final.total, final.file, final.file_index, final.file_count) == (total, total, CHECKPOINT, 3, 3)
    assert [r.done for r in reports] == sorted(r.done for r in reports)
    recorded = json.loads((isolated_home / "checksums.json").read_text())["legsegnet"]["1.0"]
    assert recorded[CHECKPOINT] == {"size": (hf_model / CHECKPOINT).stat().st_size, "sha256": sha256(hf_model / CHECKPOINT)}


def test_progress_reports_the_transfer_speed(server, hf_model):
    server.misbehaviour.pause_per_64k_s = 0.04  # about 1.6 MB/s at most
    reports = []
    started = time.monotonic()
    download_model("legsegnet", progress=reports.append)
    average = sum((hf_model / f).stat().st_size for f in HF_FILES) / (time.monotonic() - started)
    speeds = [r.bytes_per_second for r in reports if r.bytes_per_second > 0]
    assert speeds and all(average / 3 < speed < average * 3 for speed in speeds)


def test_a_dropped_connection_is_resumed_with_a_range_request(server, hf_model):
    size = (hf_model / CHECKPOINT).stat().st_size
    server.misbehaviour.drop_after[url_path(CHECKPOINT)] = size // 2

    folder = download_model("legsegnet")

    checkpoint_requests = [r for r in server.requests if r.path == url_path(CHECKPOINT)]
    assert [r.range for r in checkpoint_requests] == [None, f"bytes={size // 2}-"]
    assert sha256(folder / CHECKPOINT) == sha256(hf_model / CHECKPOINT)
    assert server.bytes_sent < sum((hf_model / f).stat().st_size for f in HF_FILES) + size // 2 + 1


def test_resuming_follows_a_redirect_to_the_cdn(server, hf_model):
    size = (hf_model / CHECKPOINT).stat().st_size
    server.misbehaviour.redirect_to = "cdn"
    server.misbehaviour.drop_after[f"/cdn/{CHECKPOINT}"] = size // 2

    folder = download_model("legsegnet")

    assert [r.range for r in server.requests if r.path == f"/cdn/{CHECKPOINT}"] == [None, f"bytes={size // 2}-"]
    assert sha256(folder / CHECKPOINT) == sha256(hf_model / CHECKPOINT)


@pytest.mark.parametrize("size_known", [True, False])
def test_a_part_complete_when_the_run_stopped(server, hf_model, tmp_path, monkeypatch, size_known):
    if size_known:
        monkeypatch.setenv("LEGSEGNET_REGISTRY", str(write_registry(tmp_path / "r.json", hf_model)))
    reports = []

    def cancel():  # stop right after the checkpoint's last byte arrived, before it was verified
        return reports[-1].file == CHECKPOINT and reports[-1].file_done == reports[-1].file_total

    with pytest.raises(DownloadCancelled):
        download_model("legsegnet", progress=reports.append, cancel=cancel)
    requests_before, sent_before = len(server.requests), server.bytes_sent
    download_model("legsegnet")

    again = [r.range for r in server.requests[requests_before:] if r.path == url_path(CHECKPOINT)]
    size = (hf_model / CHECKPOINT).stat().st_size
    if size_known:  # nothing to fetch: the part is verified and used
        assert again == [] and server.bytes_sent == sent_before
    else:  # the server refuses a range past the end (416): the file is fetched afresh
        assert again == [f"bytes={size}-", None] and server.bytes_sent == sent_before + size
    assert model_status("legsegnet").state == INSTALLED


def test_an_interrupted_download_is_never_installed_and_the_next_run_resumes(server, hf_model):
    size = (hf_model / CHECKPOINT).stat().st_size
    server.misbehaviour.drop_after[url_path(CHECKPOINT)] = size // 3

    with pytest.raises(DownloadError, match="kept breaking off.*run the download again to resume"):
        download_model("legsegnet", retries=0)
    status = model_status("legsegnet")
    assert status.state == NOT_INSTALLED and status.partial_bytes >= size // 3
    with pytest.raises(ModelNotInstalledError, match="legsegnet models download legsegnet"):
        resolve_model("legsegnet")

    download_model("legsegnet")
    assert server.requests[-1].range == f"bytes={size // 3}-"
    assert model_status("legsegnet").state == INSTALLED


def test_cancel_stops_the_transfer_and_keeps_what_was_fetched(server, hf_model):
    reports, polls = [], []

    def cancel():  # polled before every read: stop after three reads of the checkpoint
        polls.extend([1] if reports[-1].file == CHECKPOINT else [])
        return len(polls) > 3

    with pytest.raises(DownloadCancelled):
        download_model("legsegnet", progress=reports.append, cancel=cancel)
    kept = model_status("legsegnet").partial_bytes
    shared = sum((hf_model / f).stat().st_size for f in HF_FILES if f != CHECKPOINT)
    assert shared < kept < shared + (hf_model / CHECKPOINT).stat().st_size
    assert model_status("legsegnet").state == NOT_INSTALLED
    download_model("legsegnet")
    assert server.requests[-1].range is not None
    assert model_status("legsegnet").state == INSTALLED


def test_a_file_corrupted_in_transit_is_caught_and_deleted(server, hf_model, tmp_path, monkeypatch):
    monkeypatch.setenv("LEGSEGNET_REGISTRY", str(write_registry(tmp_path / "r.json", hf_model)))
    server.misbehaviour.corrupt.add(url_path(CHECKPOINT))

    with pytest.raises(ChecksumMismatchError, match=f"{CHECKPOINT} .* is corrupt: its SHA-256"):
        download_model("legsegnet")
    assert model_status("legsegnet").state == NOT_INSTALLED
    partial = model_status("legsegnet").path.parent / ".partial-legsegnet"
    assert not (partial / (CHECKPOINT + ".part")).exists()  # the next run starts this file afresh

    server.misbehaviour.corrupt.clear()
    assert sha256(download_model("legsegnet") / CHECKPOINT) == sha256(hf_model / CHECKPOINT)


def test_a_registry_checksum_mismatch_is_refused(server, hf_model, tmp_path, monkeypatch):
    wrong = {"plans.json": "0" * 64}
    registry = write_registry(tmp_path / "r.json", hf_model, sha256_override=wrong)
    monkeypatch.setenv("LEGSEGNET_REGISTRY", str(registry))
    with pytest.raises(ChecksumMismatchError, match="plans.json.*expected 0000"):
        download_model("legsegnet")
    assert model_status("legsegnet").state == NOT_INSTALLED


def test_files_are_checked_against_the_first_download_when_the_registry_has_no_checksum(hf_model, tmp_path, monkeypatch):
    served = shutil.copytree(hf_model, tmp_path / "served")
    with WeightsServer(served) as server:
        monkeypatch.setenv("LEGSEGNET_WEIGHTS_URL", server.base_url)
        download_model("legsegnet")
        plans = json.loads((served / "plans.json").read_text())
        (served / "plans.json").write_text(json.dumps(plans, indent=1))  # the server's file changed

        with pytest.raises(ChecksumMismatchError, match="plans.json .* is corrupt.*--forget-checksums"):
            download_model("legsegnet", replace=True)
        assert verify_model("legsegnet") == []  # the installed model was left alone

        forget_recorded_checksums("legsegnet")
        folder = download_model("legsegnet", replace=True)
        assert sha256(folder / "plans.json") == sha256(served / "plans.json")


def test_a_missing_file_gives_a_clear_404_message(server, monkeypatch):
    monkeypatch.setenv("LEGSEGNET_WEIGHTS_URL", server.base_url.replace("/model", "/elsewhere"))
    with pytest.raises(DownloadError, match=r"/elsewhere/plans.json was not found \(HTTP 404\).*legsegnet models install"):
        download_model("legsegnet")


def test_an_unreachable_server_is_explained(monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("LEGSEGNET_WEIGHTS_URL", f"http://127.0.0.1:{port}/model")
    with pytest.raises(DownloadError, match="cannot reach .*HTTPS_PROXY.*legsegnet models install"):
        download_model("legsegnet")


@pytest.mark.parametrize("where", ["stall", "stall_before_headers"])
def test_a_stalled_server_times_out_with_a_clear_message(server, where):
    getattr(server.misbehaviour, where).add(url_path(CHECKPOINT))
    with pytest.raises(DownloadTimeoutError, match="sent nothing for 0.5 s.*Run it again to resume"):
        download_model("legsegnet", timeout=0.5)
    assert model_status("legsegnet").state == NOT_INSTALLED


def test_the_proxy_from_the_environment_is_used(hf_model, monkeypatch):
    with WeightsServer(hf_model) as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.setenv("LEGSEGNET_WEIGHTS_URL", "http://weights.invalid/model")  # resolvable only via the proxy
        download_model("legsegnet")
    assert len(proxy.requests) == len(HF_FILES) and all(r.proxied for r in proxy.requests)
    assert model_status("legsegnet").state == INSTALLED


def test_a_served_checkpoint_that_would_run_code_is_refused(hf_model, tmp_path, monkeypatch):
    served = shutil.copytree(hf_model, tmp_path / "served")
    torch.save({"network_weights": {}, "payload": _RunsCode()}, served / CHECKPOINT)
    monkeypatch.chdir(tmp_path)
    with WeightsServer(served) as server:
        monkeypatch.setenv("LEGSEGNET_WEIGHTS_URL", server.base_url)
        with pytest.raises(ModelValidationError, match="refusing to load"):
            download_model("legsegnet")
    assert not (tmp_path / "pwned").exists()
    status = model_status("legsegnet")
    assert status.state == NOT_INSTALLED and status.partial_bytes == 0  # the refused files are not kept for reuse


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_failed_update_leaves_the_installed_model_working(server, hf_model):
    download_model("legsegnet")
    with pytest.raises(ModelExistsError, match="already installed"):
        download_model("legsegnet")
    server.misbehaviour.stall.add(url_path(CHECKPOINT))
    with pytest.raises(DownloadTimeoutError):
        download_model("legsegnet", replace=True, timeout=0.5)
    assert model_status("legsegnet").state == INSTALLED
    assert verify_model("legsegnet") == []


def test_a_newer_registry_version_is_offered_as_an_update(server, hf_model, tmp_path, monkeypatch):
    registry = write_registry(tmp_path / "r.json", hf_model)
    monkeypatch.setenv("LEGSEGNET_REGISTRY", str(registry))
    download_model("legsegnet")
    assert not model_status("legsegnet").update_available
    write_registry(registry, hf_model, version="test-2")
    assert model_status("legsegnet").update_available
    download_model("legsegnet", replace=True)
    status = model_status("legsegnet")
    assert (status.version, status.update_available) == ("test-2", False)


def test_a_tampered_install_is_reported(server):
    folder = download_model("legsegnet")
    checkpoint = folder / CHECKPOINT
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF
    checkpoint.write_bytes(bytes(data))
    assert model_status("legsegnet").state == INSTALLED  # same size: only hashing finds it
    assert any("differs from the one recorded" in problem for problem in verify_model("legsegnet"))

    checkpoint.write_bytes(bytes(data[:100]))
    assert model_status("legsegnet").state == CORRUPT
    with pytest.raises(ModelNotInstalledError, match="damaged"):
        resolve_model("legsegnet")


def test_only_the_chosen_folds_are_downloaded(tmp_path, monkeypatch):
    from model_factory import make_model_folder

    served = make_model_folder(tmp_path / "served", folds=(0, 1, 2), checkpoint_name="checkpoint_best.pth")
    files = ("plans.json", "dataset.json", *(f"fold_{fold}/checkpoint_best.pth" for fold in (0, 1, 2)))
    with WeightsServer(served) as server:
        registry = write_registry(tmp_path / "r.json", served, files=files, name="five", checksums=False)
        monkeypatch.setenv("LEGSEGNET_REGISTRY", str(registry))
        monkeypatch.setenv("LEGSEGNET_WEIGHTS_URL", server.base_url)
        folder = download_model("five", folds=(0, 2))
        with pytest.raises(ValueError, match=r"no fold \[7\]"):
            download_model("five", folds=(7,), replace=True)
    assert model_status("five").folds == (0, 2)
    assert not (folder / "fold_1").exists()
    assert load_model_folder(folder).folds == (0, 2)
