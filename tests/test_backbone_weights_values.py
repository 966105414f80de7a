"""``model.weights_file``: every refusal's exact text, and which trailing tensors count as a foreign classifier.

Built on timm's tiny ``test_resnet`` (90 tensors, 96 pooled features) with its own weights renamed or
trimmed, so each message can be written out in full: the test of the real EfficientNet-Lite0 file
(``tests/test_pretrained_weights.py``) matches parts of them only.
"""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file

from bincount.models.backbone import PretrainedWeightsUnavailable, _arch, create_backbone, load_weights_file


@pytest.fixture(scope="module")
def own() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.clone() for k, v in create_backbone("test_resnet").state_dict().items()}


def fresh():
    torch.manual_seed(1)
    return create_backbone("test_resnet")


def saved(tmp_path, state: dict, name: str = "w.pth"):
    """A ``.pth`` keeps the order it was saved in (what mapping by order needs); a ``.safetensors`` does not."""
    path = tmp_path / name
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


def renamed(state: dict) -> dict:
    """The same tensors in the same order under foreign names (``_t0``, ``_t1``, ...)."""
    return {f"_t{i}": v for i, v in enumerate(state.values())}


def refusal(model, path, mode: str) -> str:
    with pytest.raises(PretrainedWeightsUnavailable) as e:
        load_weights_file(model, path, mode)
    return str(e.value)


def test_the_architecture_named_is_timms_else_the_class_name():
    assert _arch(fresh()) == "test_resnet"
    assert _arch(torch.nn.Linear(2, 2)) == "Linear"
    model = torch.nn.Linear(2, 2)
    model.pretrained_cfg = {"classifier": "fc"}  # a config without an architecture
    assert _arch(model) == "Linear"


def test_foreign_names_by_name_are_refused_naming_three_of_each_side(own, tmp_path):
    path = saved(tmp_path, renamed(own))
    assert refusal(fresh(), path, "false") == (
        f"model.weights_file={str(path)!r} does not match 'test_resnet' by name: 90 of its 90 tensors are not in "
        "the model (e.g. '_t0', '_t1', '_t2') and 90 of the model's 90 are missing (e.g. 'conv1.0.weight', "
        "'conv1.1.weight', 'conv1.1.bias'). If it is this architecture saved under other names, set "
        "model.weights_remap=true (maps tensors by order, with shape checks).")


def test_a_file_with_only_missing_tensors_says_none_are_foreign(own, tmp_path):
    path = saved(tmp_path, {k: v for k, v in own.items() if k != "conv1.1.bias"})
    assert refusal(fresh(), path, "false") == (
        f"model.weights_file={str(path)!r} does not match 'test_resnet' by name: 0 of its 89 tensors are not in "
        "the model (e.g. none) and 1 of the model's 90 are missing (e.g. 'conv1.1.bias'). If it is this "
        "architecture saved under other names, set model.weights_remap=true (maps tensors by order, with shape "
        "checks).")


@pytest.mark.parametrize("mode", ["true", "auto"])
def test_by_order_every_tensor_lands_where_its_position_says(own, tmp_path, mode, caplog):
    model = fresh()
    path = saved(tmp_path, renamed(own))
    with caplog.at_level(logging.INFO, logger="bincount.models.backbone"):
        load_weights_file(model, path, mode)
    assert all(torch.equal(v, own[k]) for k, v in model.state_dict().items())
    assert [r.getMessage() for r in caplog.records if r.name == "bincount.models.backbone"] == [
        f"model.weights_file={path}: 90 tensors mapped by order onto test_resnet"]


@pytest.mark.parametrize("extra", [
    {"_fc.weight": torch.ones(10, 96)},  # a weight alone
    {"_fc.weight": torch.ones(10, 96), "_fc.bias": torch.ones(10)},  # weight and bias
])
def test_a_trailing_classifier_over_the_pooled_features_is_dropped(own, tmp_path, extra):
    model = fresh()
    load_weights_file(model, saved(tmp_path, {**renamed(own), **extra}), "true")
    assert all(torch.equal(v, own[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("extra, first", [
    ({"_fc.weight": torch.ones(10, 95)}, "_fc.weight"),  # not over the 96 features
    ({"_fc.weight": torch.ones(10, 96), "_fc.bias": torch.ones(11)}, "_fc.weight"),  # a bias of another size
    ({"_fc.weight": torch.ones(10, 96), "_fc.bias": torch.ones(10), "_x": torch.ones(1)}, "_fc.weight"),  # three
    ({"_fc.weight": torch.ones(96)}, "_fc.weight"),  # not a matrix
])
def test_trailing_tensors_that_are_not_a_classifier_are_refused_naming_the_first(own, tmp_path, extra, first):
    path = saved(tmp_path, {**renamed(own), **extra})
    assert refusal(fresh(), path, "true") == (
        f"model.weights_file={str(path)!r} cannot be mapped by order onto 'test_resnet': it has {90 + len(extra)} "
        f"tensors and the model 90; the first unpaired one is {first!r}.")


def test_a_file_one_tensor_short_names_the_models_first_unpaired_tensor(own, tmp_path):
    path = saved(tmp_path, dict(list(renamed(own).items())[:-1]))
    assert refusal(fresh(), path, "true") == (
        f"model.weights_file={str(path)!r} cannot be mapped by order onto 'test_resnet': it has 89 tensors and the "
        "model 90; the first unpaired one is 'layer4.0.downsample.2.num_batches_tracked'.")


def test_the_first_tensor_of_another_shape_is_named_with_both_shapes(own, tmp_path):
    state = renamed(own)
    state["_t1"] = torch.ones(17)  # conv1.1.weight is (16,)
    path = saved(tmp_path, state)
    assert refusal(fresh(), path, "auto") == (
        f"model.weights_file={str(path)!r} cannot be mapped by order onto 'test_resnet': tensor #1 '_t1' has shape "
        "(17,) but the model's 'conv1.1.weight' has (16,). It is not a state dict of this architecture (or not in "
        "its order).")


@pytest.mark.parametrize("mode", ["true", "auto"])
def test_a_safetensors_file_is_never_mapped_by_order(own, tmp_path, mode):
    """safetensors stores tensors sorted, not in their saved order: by order would pair the wrong ones."""
    path = saved(tmp_path, renamed(own), "w.safetensors")
    assert refusal(fresh(), path, mode) == (
        f"model.weights_file={str(path)!r} cannot be mapped by order (model.weights_remap={mode}): a .safetensors "
        "file stores its tensors sorted by dtype and name, not in the order they were saved, so their positions say "
        "nothing about the model's. Use the .pth or .bin it was made from, or a file under the model's own names.")
    # under the model's own names it loads by name (auto), whatever order the file keeps
    if mode == "auto":
        model = fresh()
        load_weights_file(model, saved(tmp_path, own, "own.safetensors"), mode)
        assert all(torch.equal(v, own[k]) for k, v in model.state_dict().items())
