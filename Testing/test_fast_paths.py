"""Speed paths of the LegSegNet engine: background preparation and the optional ONNX Runtime and OpenVINO
backends (their tests skip where the optional packages are not installed)."""

import sys
from pathlib import Path

import numpy as np
import torch
import pytest

from LegSegNetLib.segmenting.engines.base import PreparingSliceEngine
from LegSegNetLib.segmenting.engines.factory import create_engine
from LegSegNetLib.segmenting.engines.nnunet.engine import LegSegNetEngine
from LegSegNetLib.segmenting.engines.nnunet.backends import BackendUnavailableError
from LegSegNetLib.synthetic.leg_phantom import make_leg_phantom
from LegSegNetLib.segmenting.pipeline import segment_volume
from model_factory import make_model_folder
from LegSegNetLib.settings import SegmentationSettings, SettingsError


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_folder(tmp_path_factory.mktemp("model"), folds=(0,), seed=5)


@pytest.fixture(scope="module")
def phantom():
    ct, _ = make_leg_phantom(seed=4, shape=(3, 120, 160))
    return ct


def test_engine_splits_preparation_from_the_network(model_dir, phantom):
    engine = LegSegNetEngine.from_model_folder(model_dir, SegmentationSettings(device="cpu", batch_size=2))
    assert isinstance(engine, PreparingSliceEngine)
    hu = phantom.array[:2]
    np.testing.assert_array_equal(engine.segment_prepared(engine.prepare_slices(hu, (1.0, 1.0))),
                                  engine.segment_slices(hu, (1.0, 1.0)))


def test_overlapped_volume_equals_slice_by_slice(model_dir, phantom):
    engine = LegSegNetEngine.from_model_folder(model_dir, SegmentationSettings(device="cpu"))
    overlapped = segment_volume(phantom, engine, batch_size=2).array

    class OneAtATime:  # the same engine without the split: the plain sequential path
        name, in_plane_orientation = engine.name, engine.in_plane_orientation
        segment_slices = staticmethod(engine.segment_slices)

    np.testing.assert_array_equal(overlapped, segment_volume(phantom, OneAtATime(), batch_size=1).array)


def test_onnx_backend_agrees_and_caches_its_export(model_dir, phantom, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    monkeypatch.setenv("LEGSEGNET_HOME", str(tmp_path))
    exact = create_engine(SegmentationSettings(engine="legsegnet", model=str(model_dir), device="cpu"))
    fast = create_engine(SegmentationSettings(engine="legsegnet", model=str(model_dir), device="cpu", backend="onnx"))

    exported = sorted((tmp_path / "onnx").glob("*.onnx"))
    assert len(exported) == 1  # one per fold
    reference = segment_volume(phantom, exact).array
    labels = segment_volume(phantom, fast).array
    # Random weights put near-ties everywhere; float differences in the last bits flip only a few of them.
    assert np.mean(labels == reference) > 0.999

    stamps = [path.stat().st_mtime_ns for path in exported]
    create_engine(SegmentationSettings(engine="legsegnet", model=str(model_dir), device="cpu", backend="onnx"))
    assert [path.stat().st_mtime_ns for path in sorted((tmp_path / "onnx").glob("*.onnx"))] == stamps
    assert not list((tmp_path / "onnx").glob(".*partial"))


def test_onnx_backend_without_onnxruntime_says_what_to_install(model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(BackendUnavailableError, match="pip install onnxruntime onnx"):
        create_engine(SegmentationSettings(engine="legsegnet", model=str(model_dir), device="cpu", backend="onnx"))


def test_openvino_backend_without_openvino_says_what_to_install(model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(BackendUnavailableError, match="pip install openvino onnx"):
        create_engine(SegmentationSettings(engine="legsegnet", model=str(model_dir), device="cpu", backend="openvino"))


def test_openvino_float32_agrees_and_reads_the_cached_export(model_dir, phantom, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    pytest.importorskip("onnx")
    monkeypatch.setenv("LEGSEGNET_HOME", str(tmp_path))
    reference = segment_volume(phantom, create_engine(SegmentationSettings(engine="legsegnet", model=str(model_dir), device="cpu"))).array
    labels = segment_volume(phantom, create_engine(SegmentationSettings(engine="legsegnet", model=str(model_dir), device="cpu", backend="openvino"))).array
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 1
    assert np.mean(labels == reference) > 0.999  # random weights: near-ties everywhere
    compiled = {path: path.stat().st_mtime_ns for path in (tmp_path / "onnx" / "openvino").iterdir()}
    assert compiled  # kept for later runs, which load it (not compile and write it again) and label the same
    again = create_engine(SegmentationSettings(engine="legsegnet", model=str(model_dir), device="cpu", backend="openvino"))
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "onnx" / "openvino").iterdir()} == compiled
    np.testing.assert_array_equal(segment_volume(phantom, again).array, labels)


def test_openvino_runs_where_its_compiled_networks_cannot_be_kept(model_dir, phantom, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    pytest.importorskip("onnx")
    import os

    from LegSegNetLib.segmenting.engines.nnunet import openvino_backend

    monkeypatch.setenv("LEGSEGNET_HOME", str(tmp_path))
    kept = tmp_path / "onnx" / "openvino"
    kept.mkdir(parents=True)
    writable = os.access  # a read-only folder (the tests may run as root, who can write anywhere)
    monkeypatch.setattr(openvino_backend.os, "access", lambda path, mode: Path(path) != kept and writable(path, mode))
    engine = create_engine(SegmentationSettings(engine="legsegnet", model=str(model_dir), device="cpu", backend="openvino"))
    assert segment_volume(phantom, engine).array.any() and not any(kept.iterdir())  # compiled, not kept


def test_backend_choice_is_checked(model_dir):
    with pytest.raises(SettingsError, match="unknown backend"):
        SegmentationSettings(model=str(model_dir), device="cpu", backend="tensorrt")
    with pytest.raises(SettingsError, match="threshold engine takes no backend"):
        SegmentationSettings(engine="threshold", backend="onnx")


@pytest.fixture(scope="module")
def bootstrap_exact(phantom):
    from LegSegNetLib.resources import resources_dir

    bootstrap = str(resources_dir() / "Models" / "legsegnet-bootstrap")
    labels = segment_volume(phantom, create_engine(SegmentationSettings(engine="legsegnet", model=bootstrap, device="cpu"))).array
    assert np.count_nonzero(labels) > 0.2 * labels.size  # the model really labels tissue here
    return bootstrap, labels


@pytest.mark.parametrize("backend, packages, least_agreement", [
    ("onnx", ("onnxruntime", "onnx"), 0.9999),
    ("openvino", ("openvino", "onnx"), 0.9999),
    ("openvino-bf16", ("openvino", "onnx"), 0.999),  # 8-bit mantissa: more near-ties flip
])
def test_backends_agree_with_the_exact_path_on_a_trained_model(backend, packages, least_agreement, phantom,
                                                               bootstrap_exact, tmp_path, monkeypatch):
    """Random weights tie classes everywhere; the trained bootstrap model shows the agreement users get."""
    for package in packages:
        pytest.importorskip(package)
    monkeypatch.setenv("LEGSEGNET_HOME", str(tmp_path))
    bootstrap, reference = bootstrap_exact
    try:
        engine = create_engine(SegmentationSettings(engine="legsegnet", model=bootstrap, device="cpu", backend=backend))
    except BackendUnavailableError as error:
        assert backend == "openvino-bf16" and "no bfloat16" in str(error)
        pytest.skip(str(error))
    assert np.mean(segment_volume(phantom, engine).array == reference) > least_agreement


def test_the_export_key_follows_the_weights(model_dir, tmp_path):
    from LegSegNetLib.segmenting.engines.nnunet.model import load_model_folder
    from LegSegNetLib.segmenting.engines.nnunet.onnx_backend import network_key

    model, again = load_model_folder(model_dir), load_model_folder(model_dir)
    other = load_model_folder(make_model_folder(tmp_path / "other", folds=(0,), seed=6))
    assert network_key(model, model.networks[0]) == network_key(again, again.networks[0])
    changed = load_model_folder(model_dir)
    with torch.no_grad():
        next(iter(changed.networks[0].parameters())).view(-1)[0] += 1e-6  # one weight, one ulp or so
    keys = {network_key(model, model.networks[0]), network_key(other, other.networks[0]),
            network_key(changed, changed.networks[0])}
    assert len(keys) == 3
