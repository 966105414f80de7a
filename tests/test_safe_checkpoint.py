"""bincount.safe_checkpoint: a checkpoint's pickle is read, never run, and only tensor imports pass."""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path

import pytest

from bincount.safe_checkpoint import (ALLOWED_GLOBALS, MAX_PICKLE_BYTES, UnsafeCheckpoint, check_checkpoint,
                                      load_checkpoint, pickle_imports)


def lightning_like(path: Path) -> Path:
    """What a Lightning checkpoint holds, as far as these checks go: tensors, a parameter, dtypes, sizes, nesting."""
    import torch

    torch.manual_seed(0)
    torch.save({"epoch": 3, "state_dict": collections.OrderedDict(w=torch.randn(2, 3), n=torch.tensor([1, 2])),
                "hyper_parameters": {"backbone": "test_resnet", "head": {"name": "linear"}, "lr": 1e-3},
                "optimizer_states": [{"state": {0: {"step": torch.tensor(4.0)}}, "param_groups": [{"lr": 0.1}]}],
                "extra": {"size": torch.Size([2, 3]), "dtype": torch.bfloat16, "half": torch.ones(2).half(),
                          "p": torch.nn.Parameter(torch.zeros(1))}}, path)
    return path


def zip_with(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def refusal(path: Path) -> str:
    with pytest.raises(UnsafeCheckpoint) as e:
        check_checkpoint(path)
    return str(e.value)


def test_a_checkpoint_of_tensors_and_containers_loads_unchanged(tmp_path):
    import torch

    path = lightning_like(tmp_path / "ok.ckpt")
    assert check_checkpoint(path) is None
    got = load_checkpoint(path)
    assert torch.equal(got["state_dict"]["w"], torch.load(path, weights_only=True)["state_dict"]["w"])
    assert got["extra"]["dtype"] is torch.bfloat16 and got["extra"]["size"] == torch.Size([2, 3])
    assert got["hyper_parameters"] == {"backbone": "test_resnet", "head": {"name": "linear"}, "lr": 1e-3}
    assert got["state_dict"]["w"].device.type == "cpu"


def test_an_object_in_a_checkpoint_is_refused_by_name_and_nothing_runs(tmp_path):
    import torch

    marker = tmp_path / "ran"

    class Planted:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').close()",)

    path = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}, "planted": Planted()}, path)  # protocol 2: builtins are named __builtin__
    message = refusal(path)
    assert message.startswith(f"{path} would import ['__builtin__ exec']; a checkpoint is loaded only if it imports "
                              "nothing but ['_codecs encode', 'collections OrderedDict', ")
    assert message.endswith("(tensors and plain containers); refused unread")
    with pytest.raises(UnsafeCheckpoint):
        load_checkpoint(path)
    assert not marker.exists()


def test_every_import_is_listed_in_order_and_none_is_run():
    data = b"\x80\x02cos\nsystem\nq\x00X\x05\x00\x00\x00echo!q\x01\x85q\x02Rq\x03ctorch\nSize\n."
    assert pickle_imports(data) == ["os system", "torch Size"]


def test_stack_global_names_come_from_the_two_strings_just_pushed():
    assert pickle_imports(pickle.dumps(collections.OrderedDict, protocol=4)) == ["collections OrderedDict"]
    # "os system" pushed, then two allowed strings pushed and popped: the real operands are os/system
    hidden = (b"\x80\x04\x8c\x02os\x8c\x06system\x8c\x05torch\x8c\x04Size00\x93.")
    with pytest.raises(UnsafeCheckpoint, match=r"^STACK_GLOBAL at byte 29 takes a name that is not a literal"):
        pickle_imports(hidden)
    memo = b"\x80\x04\x8c\x05torch\x94\x8c\x04Size\x94\x93."  # MEMOIZE leaves the stack as it was
    assert pickle_imports(memo) == ["torch Size"]


@pytest.mark.parametrize("opcode,data,at", [
    ("EXT1", b"\x80\x02\x82\x01.", 2),
    ("INST", b"(ios\nsystem\n.", 1),
    ("OBJ", b"(cos\nsystem\no.", 12),
])
def test_imports_by_another_route_are_refused(opcode, data, at, tmp_path):
    path = zip_with(tmp_path / "x.ckpt", {"archive/data.pkl": data})
    assert refusal(path) == (f"{path}: opcode {opcode} at byte {at} imports by a route this check cannot name; "
                             "refused unread")


def test_the_allowed_imports_are_only_tensor_rebuilding_and_plain_types():
    modules = {g.split()[0] for g in ALLOWED_GLOBALS}
    assert modules == {"collections", "torch._utils", "torch", "_codecs"}
    assert "builtins eval" not in ALLOWED_GLOBALS and "torch load" not in ALLOWED_GLOBALS
    assert {"torch FloatStorage", "torch._utils _rebuild_tensor_v2", "collections OrderedDict"} <= ALLOWED_GLOBALS


def test_not_a_zip_is_refused_as_the_legacy_format(tmp_path):
    path = tmp_path / "legacy.ckpt"
    path.write_bytes(pickle.dumps({"a": 1}))
    assert refusal(path) == (f"{path} is not a torch zip checkpoint (File is not a zip file); the legacy format is "
                             "refused")


@pytest.mark.parametrize("members,count", [({"a/other.pkl": b"."}, 0),
                                           ({"a/data.pkl": b"\x80\x02}.", "b/data.pkl": b"\x80\x02}."}, 2)])
def test_a_zip_without_exactly_one_pickle_is_refused(members, count, tmp_path):
    path = zip_with(tmp_path / "z.ckpt", members)
    assert refusal(path) == f"{path} holds {count} data.pkl members, not 1: not a torch checkpoint"


def test_a_pickle_above_the_cap_is_refused_unread(tmp_path, monkeypatch):
    from bincount import safe_checkpoint

    path = zip_with(tmp_path / "big.ckpt", {"a/data.pkl": b"\x80\x02}." + b" " * 96})  # 100 bytes
    monkeypatch.setattr(safe_checkpoint, "MAX_PICKLE_BYTES", 100)
    assert check_checkpoint(path) is None  # at the cap: read
    monkeypatch.setattr(safe_checkpoint, "MAX_PICKLE_BYTES", 99)
    assert refusal(path) == (f"{path}: data.pkl is 100 bytes, above the 99 a checkpoint's structure needs; "
                             "refused unread")
    assert MAX_PICKLE_BYTES == 64 << 20


def test_a_pickle_that_does_not_parse_is_refused(tmp_path):
    path = zip_with(tmp_path / "cut.ckpt", {"a/data.pkl": b"\x80\x02X\xff\x00\x00\x00abc"})
    assert refusal(path).startswith(f"{path}: the pickle does not parse (")


def test_a_stack_global_with_nothing_pushed_before_it_is_refused():
    """No PROTO, nothing on the stack: the names cannot come from anywhere this check has seen."""
    with pytest.raises(UnsafeCheckpoint, match=r"^STACK_GLOBAL at byte 0 takes a name that is not a literal string$"):
        pickle_imports(b"\x93.")


def test_a_data_pkl_nested_deeper_counts_as_a_second_pickle(tmp_path):
    """``archive/extra/data.pkl`` beside ``archive/data.pkl``: the file name is what follows the last slash."""
    path = tmp_path / "nested.ckpt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}.")
        z.writestr("archive/extra/data.pkl", b"\x80\x02}.")
    with pytest.raises(UnsafeCheckpoint) as e:
        check_checkpoint(path)
    assert str(e.value) == f"{path} holds 2 data.pkl members, not 1: not a torch checkpoint"


def test_stack_global_takes_the_last_two_of_three_pushed_strings():
    # "torch", then "builtins" and "exec": the import is builtins/exec, not torch/builtins nor torch/exec
    data = b"\x80\x04\x8c\x05torch\x8c\x08builtins\x8c\x04exec\x93."
    assert pickle_imports(data) == ["builtins exec"]
