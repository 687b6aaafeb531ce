import json
import shutil

import pytest
import torch

from LegSegNetLib.segmenting.engines.nnunet.model import ModelFolderError, build_network, load_model_folder
from model_factory import make_model_folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_folder(tmp_path_factory.mktemp("model"), folds=(0, 2))


def copy_of(model_dir, tmp_path):
    return shutil.copytree(model_dir, tmp_path / "copy")


def test_loads_every_fold_with_its_own_weights(model_dir):
    model = load_model_folder(model_dir)
    assert model.folds == (0, 2)
    assert model.configuration_name == "2d"
    assert model.patch_size == (256, 256)
    assert model.inference_allowed_mirroring_axes == (0, 1)
    assert model.label_values == (0, 1, 2, 3, 4)
    first, second = (dict(network.named_parameters()) for network in model.networks)
    name = next(iter(first))
    assert not torch.equal(first[name], second[name])


def test_selects_requested_folds_and_reports_the_checkpoint(model_dir):
    model = load_model_folder(model_dir, folds=[2])
    assert model.folds == (2,)
    assert model.checkpoint_name == "checkpoint_final.pth"


def test_network_matches_the_plans_and_outputs_one_channel_per_label(model_dir):
    plans = json.loads((model_dir / "plans.json").read_text())
    dataset = json.loads((model_dir / "dataset.json").read_text())
    network = build_network(plans, "2d", dataset).eval()
    with torch.inference_mode():
        assert network(torch.zeros(1, 1, 64, 64)).shape == (1, 5, 64, 64)


def test_checkpoint_best_is_found_when_final_is_absent(tmp_path):
    folder = make_model_folder(tmp_path, checkpoint_name="checkpoint_best.pth")
    assert load_model_folder(folder).checkpoint_name == "checkpoint_best.pth"


@pytest.mark.parametrize("missing", ["plans.json", "dataset.json"])
def test_missing_json_is_named(model_dir, tmp_path, missing):
    folder = copy_of(model_dir, tmp_path)
    (folder / missing).unlink()
    with pytest.raises(ModelFolderError, match=missing):
        load_model_folder(folder)


def test_missing_fold_lists_the_available_ones(model_dir):
    with pytest.raises(ModelFolderError, match=r"fold 3 .*fold_0, fold_2"):
        load_model_folder(model_dir, folds=[3])


def test_missing_checkpoint_lists_what_is_there(model_dir):
    with pytest.raises(ModelFolderError, match=r"no checkpoint_best.pth .*checkpoint_final.pth"):
        load_model_folder(model_dir, folds=[0], checkpoint="checkpoint_best.pth")


def test_folder_without_any_fold(tmp_path):
    folder = make_model_folder(tmp_path, folds=())
    with pytest.raises(ModelFolderError, match="no fold_N folder"):
        load_model_folder(folder)


def test_missing_folder(tmp_path):
    with pytest.raises(ModelFolderError, match="not found"):
        load_model_folder(tmp_path / "nowhere")


def test_weights_that_do_not_fit_the_plans(model_dir, tmp_path):
    folder = copy_of(model_dir, tmp_path)
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["2d"]["architecture"]["arch_kwargs"]["features_per_stage"] = [8, 16, 32, 64]
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(ModelFolderError, match="do not fit the network"):
        load_model_folder(folder, folds=[0])


def test_truncated_checkpoint(model_dir, tmp_path):
    folder = copy_of(model_dir, tmp_path)
    checkpoint = folder / "fold_0" / "checkpoint_final.pth"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(ModelFolderError, match="truncated"):
        load_model_folder(folder, folds=[0])


def test_class_outside_the_allowed_packages_is_refused(model_dir, tmp_path):
    folder = copy_of(model_dir, tmp_path)
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["2d"]["architecture"]["arch_kwargs"]["nonlin"] = "os.system"
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(ModelFolderError, match="outside the allowed packages"):
        load_model_folder(folder, folds=[0])


def test_a_resampling_configuration_loads_but_not_with_legsegnet_preprocessing(model_dir, tmp_path):
    folder = copy_of(model_dir, tmp_path)
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["2d"]["spacing"] = [0.5, 0.5]
    (folder / "plans.json").write_text(json.dumps(plans))
    model = load_model_folder(folder, folds=[0])
    assert model.target_spacing == (0.5, 0.5)
    with pytest.raises(ModelFolderError, match=r"\(0.5, 0.5\) mm pixels.*--preprocessing native"):
        model.check_profile("legsegnet")


def test_invalid_json(model_dir, tmp_path):
    folder = copy_of(model_dir, tmp_path)
    (folder / "dataset.json").write_text("{not json")
    with pytest.raises(ModelFolderError, match="not valid JSON"):
        load_model_folder(folder)


def test_fold_all_is_used_only_when_asked_for(tmp_path):
    folder = make_model_folder(tmp_path, folds=(1, "all"))
    assert load_model_folder(folder).folds == (1,)
    assert load_model_folder(folder, folds=["all"]).folds == ("all",)
