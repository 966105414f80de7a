"""Exact values of the bundle modules: archive members, metadata checks at their edges, the weights layout,
the class table, versions, the preprocess description and its round trip, loading from S3 keys, and the
provenance record (``trained_on``) with its warnings.

One real bundle (timm's tiny ``test_resnet`` answering 3 for any image, ``write_constant_bundle``) is written
once per module; each test that edits it works on its own copy. Archives above the size caps are plain tar
files whose big members are holes (sparse), so no test writes or reads gigabytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import struct
import tarfile
from pathlib import Path, PurePosixPath
from types import SimpleNamespace

import pytest
from helpers.archives import write_tar
from helpers.bundles import write_constant_bundle
from PIL import Image

from bincount.bundle import BUNDLE_FILE, WEIGHTS_FILE, BundleError, load_model
from bincount.bundle import archive as archive_mod
from bincount.bundle.archive import _bundle_prefix, extract_bundle
from bincount.bundle.format import (check_metadata, check_weights, check_weights_layout, class_table, read_metadata,
                                    sha256_file, versions, weights_file_cap)
from bincount.bundle.load import describe_input, find_bundle_dir
from bincount.bundle.preprocess import describe_eval_transform, transform_from
from bincount.bundle.provenance import (SizeWatch, _image_size, describe, from_config, from_datamodule,
                                        input_mismatch, record, root_kind, trained_on, watch_model)
from bincount.manifest import ClassRange

GIB = 1 << 30
WEIGHTS_CAP = 8 << 30
ARCHIVE_CAP = WEIGHTS_CAP + GIB  # archive.MAX_ARCHIVE_BYTES
LOG = "bincount.wip_bundle_values"


# -- fixtures and builders ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def constant(tmp_path_factory) -> Path:
    return write_constant_bundle(tmp_path_factory.mktemp("constant") / "model")


def copy_bundle(src: Path, dest: Path, edit=None) -> Path:
    """A copy of the bundle in ``dest``; ``edit(meta)`` changes its metadata (the hash covers the weights only)."""
    dest.mkdir(parents=True)
    shutil.copy(src / WEIGHTS_FILE, dest / WEIGHTS_FILE)
    meta = json.loads((src / BUNDLE_FILE).read_text())
    if edit is not None:
        edit(meta)
    (dest / BUNDLE_FILE).write_text(json.dumps(meta))
    return dest


def meta_of(bundle: Path) -> dict:
    return json.loads((bundle / BUNDLE_FILE).read_text())


def png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


def sparse_tar(path: Path, members: list[tuple[str, bytes | int]]) -> Path:
    """A plain tar: ``bytes`` members are written, ``int`` members are holes of that size (never on disk)."""
    with open(path, "wb") as f:
        for name, content in members:
            info = tarfile.TarInfo(name)
            info.size = content if isinstance(content, int) else len(content)
            f.write(info.tobuf(tarfile.PAX_FORMAT))
            if isinstance(content, int):
                f.seek(content + (-content) % 512, os.SEEK_CUR)
            else:
                f.write(content + bytes((-len(content)) % 512))
        f.write(bytes(1024))
    return path


def bundle_files(bundle: Path, prefix: str = "") -> dict[str, bytes]:
    return {prefix + name: (bundle / name).read_bytes() for name in (BUNDLE_FILE, WEIGHTS_FILE)}


# -- archive.py ---------------------------------------------------------------------------------------

def names(*paths: str) -> list[PurePosixPath]:
    return [PurePosixPath(p) for p in paths]


def test_the_shallowest_bundle_folder_wins_then_the_first_by_name():
    assert _bundle_prefix(names("a/b/bincount-model.json", "z/bincount-model.json"), "w") == PurePosixPath("z")
    assert _bundle_prefix(names("z/bincount-model.json", "a/bincount-model.json"), "w") == PurePosixPath("a")
    assert _bundle_prefix(names("sub/bincount-model.json", "other/x.txt"), "w") == PurePosixPath("sub")
    assert _bundle_prefix(names("x/model.safetensors", "bincount-model.json"), "w") == PurePosixPath(".")


@pytest.mark.parametrize("count,tail", [(10, ""), (11, " ...")])
def test_an_archive_without_metadata_lists_its_first_ten_members(count, tail):
    members = [f"f{i}" for i in range(count)]
    with pytest.raises(BundleError) as info:
        _bundle_prefix(names(*members), "s3://b/model.tar.gz")
    shown = [f"f{i}" for i in range(10)]
    assert str(info.value) == f"s3://b/model.tar.gz holds no bincount-model.json (members: {shown}{tail})"


def test_extract_bundle_names_the_archive_when_no_metadata_is_in_it(tmp_path):
    tar = write_tar(tmp_path / "model.tar.gz", {"a.txt": "x"})
    with pytest.raises(BundleError) as info:
        extract_bundle(tar, tmp_path / "out")
    assert str(info.value) == f"{tar} holds no bincount-model.json (members: ['a.txt'])"


def test_a_nested_bundle_is_extracted_alone_and_its_folder_returned(constant, tmp_path):
    files = {"code/train.py": "print()", **bundle_files(constant, "job/out/"), "job/out/last.ckpt": b"pickle"}
    tar = write_tar(tmp_path / "model.tar.gz", files)
    out = extract_bundle(tar, tmp_path / "x")
    assert out == tmp_path / "x" / "job" / "out"
    assert sorted(p.relative_to(tmp_path / "x").as_posix() for p in (tmp_path / "x").rglob("*") if p.is_file()) == \
        ["job/out/bincount-model.json", "job/out/model.safetensors"]
    assert (out / WEIGHTS_FILE).read_bytes() == (constant / WEIGHTS_FILE).read_bytes()


@pytest.mark.parametrize("extra", [{}, {"job/model.safetensors/readme": "a folder"}])
def test_the_weights_must_be_a_regular_file_beside_the_metadata(constant, extra, tmp_path):
    files = {"job/bincount-model.json": (constant / BUNDLE_FILE).read_bytes(), **extra}
    tar = write_tar(tmp_path / "model.tar.gz", files)
    with pytest.raises(BundleError) as info:
        extract_bundle(tar, tmp_path / "x")
    assert str(info.value) == (f"{tar} has no regular file 'job/model.safetensors' beside its bincount-model.json")
    assert not (tmp_path / "x").exists()


def test_an_unsafe_member_is_refused_naming_the_archive(constant, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in bundle_files(constant).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    (tmp_path / "m.tgz").write_bytes(buf.getvalue())
    with pytest.raises(BundleError) as info:
        extract_bundle(tmp_path / "m.tgz", tmp_path / "x")
    assert str(info.value) == (f"{tmp_path / 'm.tgz'}: member 'link' is a symlink; only regular files and "
                               "directories are extracted; refusing the archive")


def test_the_metadata_member_may_be_1_mib_and_not_a_byte_more(constant, tmp_path):
    weights = (constant / WEIGHTS_FILE).read_bytes()
    at_cap = b"{}" + b" " * ((1 << 20) - 2)
    out = extract_bundle(write_tar(tmp_path / "ok.tar.gz", {BUNDLE_FILE: at_cap, WEIGHTS_FILE: weights}), tmp_path / "a")
    assert out == tmp_path / "a" and (out / BUNDLE_FILE).stat().st_size == 1 << 20
    tar = write_tar(tmp_path / "big.tar.gz", {BUNDLE_FILE: at_cap + b" ", WEIGHTS_FILE: weights})
    with pytest.raises(BundleError) as info:
        extract_bundle(tar, tmp_path / "b")
    assert str(info.value) == f"{tar}: 'bincount-model.json' is 1,048,577 bytes, above the limit of 1,048,576"


def test_the_weights_member_is_capped_at_8_gib(constant, tmp_path):
    tar = sparse_tar(tmp_path / "m.tar", [(BUNDLE_FILE, (constant / BUNDLE_FILE).read_bytes()),
                                          (WEIGHTS_FILE, WEIGHTS_CAP + 1)])
    with pytest.raises(BundleError) as info:
        extract_bundle(tar, tmp_path / "x")
    assert str(info.value) == f"{tar}: 'model.safetensors' is 8,589,934,593 bytes, above the limit of 8,589,934,592"


def test_the_weights_cap_is_inclusive(constant, tmp_path, monkeypatch):
    size = (constant / WEIGHTS_FILE).stat().st_size
    tar = write_tar(tmp_path / "m.tar.gz", bundle_files(constant))
    monkeypatch.setattr(archive_mod, "MAX_WEIGHTS_BYTES", size)
    assert extract_bundle(tar, tmp_path / "a") == tmp_path / "a"
    monkeypatch.setattr(archive_mod, "MAX_WEIGHTS_BYTES", size - 1)
    with pytest.raises(BundleError, match=rf"'model.safetensors' is {size:,} bytes, above the limit of {size - 1:,}$"):
        extract_bundle(tar, tmp_path / "b")


def test_a_bundle_archive_may_carry_3_gib_beside_the_bundle_unread(constant, tmp_path):
    """More than untrusted_tar's default 2 GiB in all: a job's leftovers are allowed up to 9 GiB."""
    tar = sparse_tar(tmp_path / "m.tar", [("leftovers.bin", 3 * GIB), *bundle_files(constant).items()])
    out = extract_bundle(tar, tmp_path / "x")
    assert sorted(p.name for p in out.iterdir()) == [BUNDLE_FILE, WEIGHTS_FILE]
    assert (out / BUNDLE_FILE).read_bytes() == (constant / BUNDLE_FILE).read_bytes()


def test_an_archive_above_9_gib_in_all_is_refused(constant, tmp_path):
    tar = sparse_tar(tmp_path / "m.tar", [*bundle_files(constant).items(), ("leftovers.bin", ARCHIVE_CAP)])
    with pytest.raises(BundleError) as info:
        extract_bundle(tar, tmp_path / "x")
    assert str(info.value) == f"{tar}: members add up to more than 9,663,676,416 bytes; refusing the archive"
    assert not (tmp_path / "x").exists()


def test_the_member_count_cap_is_the_bundle_loaders_own(constant, tmp_path, monkeypatch):
    monkeypatch.setattr(archive_mod, "MAX_MEMBERS", 3)
    files = bundle_files(constant)
    assert extract_bundle(write_tar(tmp_path / "3.tar.gz", {**files, "a": "x"}), tmp_path / "a") == tmp_path / "a"
    tar = write_tar(tmp_path / "4.tar.gz", {**files, "a": "x", "b": "y"})
    with pytest.raises(BundleError) as info:
        extract_bundle(tar, tmp_path / "b")
    assert str(info.value) == f"{tar}: more than 3 members; refusing the archive"


# -- format.py: files, versions, the class table -------------------------------------------------------

def test_sha256_file_is_the_digest_of_the_whole_file(tmp_path):
    data = bytes(range(256)) * 9000  # 2.3 MB: more than one 1 MiB block
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    (tmp_path / "e").write_bytes(b"")
    assert sha256_file(str(tmp_path / "e")) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_versions_name_bincount_torch_and_timm():
    from importlib.metadata import version

    import timm
    import torch

    assert versions() == {"bincount": version("bincount"), "torch": torch.__version__, "timm": timm.__version__}


def test_versions_say_unknown_for_an_uninstalled_bincount(monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert versions()["bincount"] == "unknown"


def test_class_table_under_clip_marks_the_last_class_as_or_more():
    assert class_table(1, 5, "clip") == {
        "min_count": 1, "max_count": 5, "overflow": "clip", "counts": [1, 2, 3, 4, 5],
        "meaning": {"0": "1", "1": "2", "2": "3", "3": "4", "4": ">=5"}}


@pytest.mark.parametrize("overflow", ["drop", "fail"])
def test_class_table_without_clip_means_each_count_exactly(overflow):
    assert class_table(0, 3, overflow) == {"min_count": 0, "max_count": 2, "overflow": overflow, "counts": [0, 1, 2],
                                           "meaning": {"0": "0", "1": "1", "2": "2"}}


# -- format.py: the metadata and its limits ----------------------------------------------------------

def refusal(meta, where="b.json") -> str:
    with pytest.raises(BundleError) as info:
        check_metadata(meta, where)
    return str(info.value)


def test_the_written_metadata_passes_the_checks(constant):
    assert check_metadata(meta_of(constant), "w") is None
    assert read_metadata(constant / BUNDLE_FILE) == meta_of(constant)


@pytest.mark.parametrize("meta,got", [([1, 2], "'list'"), ({"format": "other"}, "'other'"), ({}, "None")])
def test_something_else_is_not_a_bundle(meta, got):
    assert refusal(meta) == f"b.json is not a bincount model bundle (format {got}, expected 'bincount-model')"


@pytest.mark.parametrize("version,shown", [(2, "2"), ("1", "'1'"), (None, "None"), (0, "0"), (True, "True"),
                                           (1.0, "1.0")])
def test_an_unknown_format_version_is_refused(constant, version, shown):
    meta = {**meta_of(constant), "format_version": version}
    assert refusal(meta) == (f"b.json has format_version {shown}; this bincount reads [1] (a newer bincount wrote it: "
                             "upgrade bincount, or re-export the run with `bincount export`)")


def test_missing_keys_are_listed(constant):
    meta = meta_of(constant)
    del meta["classes"], meta["preprocess"]
    assert refusal(meta) == ("b.json lacks ['classes', 'preprocess']; a format 1 bundle has ['format', "
                             "'format_version', 'weights', 'model', 'classes', 'preprocess']")


@pytest.mark.parametrize("weights", ["x", {"file": "model.safetensors"}, {"file": "model.bin", "sha256": "ab"},
                                     {"file": "model.safetensors", "sha256": 12}])
def test_the_weights_entry_must_name_the_file_and_a_hash(constant, weights):
    meta = {**meta_of(constant), "weights": weights}
    assert refusal(meta) == (f"b.json: 'weights' must be {{'file': 'model.safetensors', 'sha256': HEX}}, "
                             f"got {weights!r}")


@pytest.mark.parametrize("key", ["model", "classes", "preprocess"])
def test_the_model_classes_and_preprocess_entries_must_be_objects(constant, key):
    meta = {**meta_of(constant), key: [1]}
    assert refusal(meta) == "b.json: 'model', 'classes' and 'preprocess' must be objects"


def with_classes(meta: dict, n: int) -> dict:
    meta["model"]["num_classes"] = n
    meta["classes"]["counts"] = list(range(n))
    return meta


@pytest.mark.parametrize("n", [2, 1000])
def test_num_classes_at_its_bounds_passes(constant, n):
    assert check_metadata(with_classes(meta_of(constant), n), "w") is None


@pytest.mark.parametrize("n,message", [
    (1, "model.num_classes=1 is outside 2 to 1,000, the loader's cap; refused"),
    (1001, "model.num_classes=1,001 is outside 2 to 1,000, the loader's cap; refused"),
    (True, "model.num_classes=True is not an integer (valid: 2 to 1,000)"),
    (5.0, "model.num_classes=5.0 is not an integer (valid: 2 to 1,000)"),
    (None, "model.num_classes=None is not an integer (valid: 2 to 1,000)"),
])
def test_num_classes_outside_its_bounds_is_refused(constant, n, message):
    meta = meta_of(constant)
    meta["model"]["num_classes"] = n
    assert refusal(meta) == f"b.json: {message}"


@pytest.mark.parametrize("counts,shown", [([1, 2, 3, 4], "4 entries"), ("12345", "'12345'"), (None, "None")])
def test_the_class_counts_must_be_a_list_of_num_classes(constant, counts, shown):
    meta = meta_of(constant)
    meta["classes"]["counts"] = counts
    assert refusal(meta) == f"b.json: classes.counts has {shown}; model.num_classes=5 needs 5"


@pytest.mark.parametrize("pixels,message", [
    (1, None), (40_000_000, None),
    (0, "preprocess.max_pixels=0 is outside 1 to 40,000,000, the loader's cap; refused"),
    (40_000_001, "preprocess.max_pixels=40,000,001 is outside 1 to 40,000,000, the loader's cap; refused"),
    (None, "preprocess.max_pixels=None is not an integer (valid: 1 to 40,000,000)"),
    (False, "preprocess.max_pixels=False is not an integer (valid: 1 to 40,000,000)"),
])
def test_max_pixels_bounds(constant, pixels, message):
    meta = meta_of(constant)
    meta["preprocess"]["max_pixels"] = pixels
    if message is None:
        assert check_metadata(meta, "w") is None
    else:
        assert refusal(meta) == f"b.json: {message}"


@pytest.mark.parametrize("key", ["resize", "crop"])
@pytest.mark.parametrize("size,message", [
    ([1, 1024], None), ([1024, 1], None),
    ([0, 32], "preprocess.{key}=0 is outside 1 to 1,024, the loader's cap; refused"),
    ([32, 1025], "preprocess.{key}=1,025 is outside 1 to 1,024, the loader's cap; refused"),
    ([32], "preprocess.{key}=[32] is not [height, width]"),
    ([32, 32, 3], "preprocess.{key}=[32, 32, 3] is not [height, width]"),
    ("ab", "preprocess.{key}='ab' is not [height, width]"),
    ([32, "32"], "preprocess.{key}='32' is not an integer (valid: 1 to 1,024)"),
])
def test_resize_and_crop_sides(constant, key, size, message):
    meta = meta_of(constant)
    meta["preprocess"][key] = size
    if message is None:
        assert check_metadata(meta, "w") is None
    else:
        assert refusal(meta) == "b.json: " + message.format(key=key)


def test_crop_may_be_absent_and_resize_may_not(constant):
    meta = meta_of(constant)
    meta["preprocess"]["crop"] = None
    assert check_metadata(meta, "w") is None
    meta["preprocess"]["resize"] = None
    assert refusal(meta) == "b.json: preprocess.resize=None is not [height, width]"


def test_read_metadata_reads_up_to_1_mib(constant, tmp_path):
    raw = json.dumps(meta_of(constant)).encode()
    (tmp_path / "ok.json").write_bytes(raw + b" " * ((1 << 20) - len(raw)))
    assert read_metadata(tmp_path / "ok.json") == meta_of(constant)
    (tmp_path / "big.json").write_bytes(raw + b" " * ((1 << 20) - len(raw) + 1))
    with pytest.raises(BundleError) as info:
        read_metadata(str(tmp_path / "big.json"))
    assert str(info.value) == (f"{tmp_path / 'big.json'} is 1,048,577 bytes, above the 1,048,576 a bundle's "
                               "metadata may have")


def test_read_metadata_names_bad_json_and_then_what_is_wrong(tmp_path):
    (tmp_path / "bad.json").write_bytes(b"{x")
    with pytest.raises(BundleError) as info:
        read_metadata(tmp_path / "bad.json")
    assert str(info.value) == (f"{tmp_path / 'bad.json'} is not valid JSON (Expecting property name enclosed in "
                               "double quotes: line 1 column 2 (char 1))")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(BundleError) as info:
        read_metadata(tmp_path / "list.json")
    assert str(info.value) == (f"{tmp_path / 'list.json'} is not a bincount model bundle (format 'list', "
                               "expected 'bincount-model')")


# -- format.py: the weights file ------------------------------------------------------------------

LAYOUT = {"a": (2, 3), "b": (4,)}  # header cap 4096 + 2 * 512 = 5120; file cap 8 + 5120 + 8 * 10 = 5208


def st_write(path: Path, header, body: bytes = b"", length: int | None = None, pad: int = 0) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    raw += b" " * pad
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + body)
    return path


def f32_header(**changes) -> dict:
    header = {"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
              "b": {"dtype": "F32", "shape": [4], "data_offsets": [24, 40]}}
    header.update(changes)
    return header


def layout_refusal(path: Path, layout=LAYOUT) -> str:
    with pytest.raises(BundleError) as info:
        check_weights_layout(path, layout, "b.json")
    return str(info.value)


def test_weights_file_cap_is_the_header_cap_plus_every_tensor_at_8_bytes():
    assert weights_file_cap(LAYOUT) == 5208
    assert weights_file_cap({}) == 4104
    assert weights_file_cap({"w": (10, 10, 3)}) == 8 + 4096 + 512 + 2400


def test_a_file_of_exactly_the_cap_with_a_header_of_exactly_its_cap_passes(tmp_path):
    header = {"a": {"dtype": "F64", "shape": [2, 3], "data_offsets": [0, 48]},
              "b": {"dtype": "F64", "shape": [4], "data_offsets": [48, 80]}}
    raw = json.dumps(header).encode()
    path = st_write(tmp_path / "w", header, bytes(80), pad=5120 - len(raw))
    assert path.stat().st_size == 5208
    assert check_weights_layout(path, LAYOUT, "b.json") is None
    path = st_write(tmp_path / "w", header, bytes(80), pad=5121 - len(raw))
    assert layout_refusal(path) == (f"{path} is 5,209 bytes; the model described by b.json has 2 tensors and its "
                                    "weights file can be at most 5,208 bytes; refused unread")


def test_a_header_longer_than_its_cap_is_refused(tmp_path):
    raw = json.dumps(f32_header()).encode()
    path = st_write(tmp_path / "w", f32_header(), bytes(40), pad=5121 - len(raw))
    assert layout_refusal(path) == (f"{path}: header length 5,121 is outside 2 to 5,120; not a safetensors file for "
                                    "this model")


@pytest.mark.parametrize("length,data,top", [(1, b"{" + bytes(40), 41), (100, b"{}" + bytes(48), 50), (0, b"", 0),
                                             (51, b"{}" + bytes(48), 50)])  # one byte more than the file holds
def test_a_header_length_outside_the_file_is_refused(tmp_path, length, data, top):
    path = tmp_path / "w"
    path.write_bytes(struct.pack("<Q", length) + data)
    assert layout_refusal(path) == (f"{path}: header length {length:,} is outside 2 to {top:,}; not a safetensors "
                                    "file for this model")


def test_a_file_shorter_than_the_length_field_is_refused(tmp_path):
    (tmp_path / "w").write_bytes(b"\x01\x02\x03\x04")
    assert layout_refusal(tmp_path / "w") == (f"{tmp_path / 'w'} is 4 bytes, shorter than a safetensors length "
                                              "field (8 bytes); not a safetensors file for this model")


def test_a_two_byte_header_is_read_and_names_what_is_missing(tmp_path):
    path = st_write(tmp_path / "w", b"{}")
    assert layout_refusal(path) == (f"{path} does not fit the model described by b.json: missing ['a', 'b'], "
                                    "unexpected [] (2 and 0 in all)")


def test_a_header_that_is_not_a_json_object_is_refused(tmp_path):
    path = st_write(tmp_path / "w", b"{x", bytes(40))
    assert layout_refusal(path) == (f"{path}: the safetensors header is not valid JSON (Expecting property name "
                                    "enclosed in double quotes: line 1 column 2 (char 1))")
    path = st_write(tmp_path / "w", b"[1, 2]", bytes(40))
    assert layout_refusal(path) == f"{path}: the safetensors header is a JSON list, not an object"


def test_metadata_in_the_header_is_allowed_and_other_names_are_not(tmp_path):
    header = {"__metadata__": {"format": "bincount-model"}, **f32_header()}
    assert check_weights_layout(st_write(tmp_path / "w", header, bytes(40)), LAYOUT, "b.json") is None
    path = st_write(tmp_path / "w", {**f32_header(), "c": {"dtype": "F32", "shape": [1], "data_offsets": [40, 44]}},
                    bytes(44))
    assert layout_refusal(path) == (f"{path} does not fit the model described by b.json: missing [], "
                                    "unexpected ['c'] (0 and 1 in all)")


def test_missing_and_unexpected_names_show_five_of_each_and_the_totals(tmp_path):
    layout = {f"t{i}": (1,) for i in range(7)}
    header = {f"u{i}": {"dtype": "U8", "shape": [1], "data_offsets": [i, i + 1]} for i in range(7)}
    path = st_write(tmp_path / "w", header, bytes(7))
    assert layout_refusal(path, layout) == (
        f"{path} does not fit the model described by b.json: missing ['t0', 't1', 't2', 't3', 't4'], "
        "unexpected ['u0', 'u1', 'u2', 'u3', 'u4'] (7 and 7 in all)")


DTYPES = "['F64', 'F32', 'F16', 'BF16', 'I64', 'I32', 'I16', 'I8', 'U8', 'BOOL']"


@pytest.mark.parametrize("info,shown", [
    ({"dtype": "F8", "shape": [2, 3], "data_offsets": [0, 24]}, "F8 [2, 3]"),
    ({"dtype": "F32", "shape": [3, 2], "data_offsets": [0, 24]}, "F32 [3, 2]"),
    ({"dtype": "F32", "data_offsets": [0, 24]}, "F32 None"),
    (7, "None None"),
])
def test_a_tensor_of_another_shape_or_dtype_is_refused(tmp_path, info, shown):
    path = st_write(tmp_path / "w", f32_header(a=info), bytes(40))
    assert layout_refusal(path) == (f"{path}: tensor 'a' is {shown}; the model described by b.json needs shape "
                                    f"[2, 3] in one of {DTYPES}")


@pytest.mark.parametrize("offsets", [[0, 20], [0.0, 24.0], [False, 24], [0, 24, 0], "0-24", None])
def test_offsets_must_span_the_tensor_exactly(tmp_path, offsets):
    path = st_write(tmp_path / "w", f32_header(a={"dtype": "F32", "shape": [2, 3], "data_offsets": offsets}), bytes(40))
    assert layout_refusal(path) == f"{path}: tensor 'a' has data_offsets {offsets!r}, not 24 bytes"


@pytest.mark.parametrize("dtype,width", [("F64", 8), ("F32", 4), ("F16", 2), ("BF16", 2), ("I64", 8), ("I32", 4),
                                         ("I16", 2), ("I8", 1), ("U8", 1), ("BOOL", 1)])
def test_every_loadable_dtype_has_its_width(tmp_path, dtype, width):
    layout = {"t": (250,)}
    good = st_write(tmp_path / "w", {"t": {"dtype": dtype, "shape": [250], "data_offsets": [0, 250 * width]}},
                    bytes(250 * width))
    assert check_weights_layout(good, layout, "b.json") is None
    bad = st_write(tmp_path / "v", {"t": {"dtype": dtype, "shape": [250], "data_offsets": [0, 250 * width + 1]}},
                   bytes(250 * width + 1))
    assert layout_refusal(bad, layout) == (f"{bad}: tensor 't' has data_offsets [0, {250 * width + 1}], "
                                           f"not {250 * width:,} bytes")


@pytest.mark.parametrize("body", [39, 41])
def test_the_file_must_end_where_the_tensors_do(tmp_path, body):
    path = st_write(tmp_path / "w", f32_header(), bytes(body))
    length = len(json.dumps(f32_header()))
    assert layout_refusal(path) == (f"{path} is {8 + length + body:,} bytes; its header and 40 bytes of tensors make "
                                    f"{8 + length + 40:,}; refused unread")


def test_check_weights_returns_the_bytes_whose_hash_matched(constant, tmp_path):
    data = check_weights(constant, meta_of(constant))
    assert data == (constant / WEIGHTS_FILE).read_bytes()
    bundle = copy_bundle(constant, tmp_path / "b")
    (bundle / WEIGHTS_FILE).write_bytes(b"not weights")  # no layout given: only the hash is checked
    meta = meta_of(bundle)
    meta["weights"]["sha256"] = hashlib.sha256(b"not weights").hexdigest()
    assert check_weights(bundle, meta) == b"not weights"


def test_check_weights_refuses_another_hash_naming_both(constant, tmp_path):
    bundle = copy_bundle(constant, tmp_path / "b")
    meta = meta_of(bundle)
    meta["weights"]["sha256"] = "0" * 64
    actual = sha256_file(bundle / WEIGHTS_FILE)
    with pytest.raises(BundleError) as info:
        check_weights(bundle, meta)
    assert str(info.value) == (f"{bundle / WEIGHTS_FILE}: sha256 {actual} does not match {'0' * 64} recorded in "
                               f"{bundle / BUNDLE_FILE}; the weights were changed or damaged after the bundle was "
                               "written (re-export the run)")


def test_check_weights_refuses_a_missing_file(tmp_path):
    with pytest.raises(BundleError) as info:
        check_weights(tmp_path, {"weights": {"sha256": "0"}})
    assert str(info.value) == (f"{tmp_path / WEIGHTS_FILE} is missing: a bundle is bincount-model.json and "
                               "model.safetensors side by side")


def test_check_weights_caps_the_file_at_8_gib_unread(tmp_path):
    path = tmp_path / WEIGHTS_FILE
    with open(path, "wb") as f:
        f.truncate(WEIGHTS_CAP + 1)
    with pytest.raises(BundleError) as info:
        check_weights(tmp_path, {"weights": {"sha256": "0"}}, {"a": (2,)})
    assert str(info.value) == f"{path} is 8,589,934,593 bytes, above the limit of 8,589,934,592"
    with open(path, "wb") as f:
        f.truncate(WEIGHTS_CAP)
    with pytest.raises(BundleError) as info:  # at the cap: on to the layout, which refuses it unread
        check_weights(tmp_path, {"weights": {"sha256": "0"}}, {"a": (2,)})
    assert str(info.value) == (f"{path} is 8,589,934,592 bytes; the model described by {tmp_path / BUNDLE_FILE} has "
                               "1 tensors and its weights file can be at most 4,632 bytes; refused unread")


# -- load.py ----------------------------------------------------------------------------------------

@pytest.fixture
def model(constant):
    return load_model(constant)


def test_the_loaded_model_reports_its_classes_pixels_and_device(model, constant):
    import torch

    assert model.counts == [1, 2, 3, 4, 5] and model.max_pixels == 40_000_000
    assert model.device == torch.device("cpu") and model.source == str(constant)
    assert model.to("meta") is model and model.device == torch.device("meta")


def test_a_pil_image_is_converted_to_rgb_channels_first(model):
    import numpy as np
    import torch

    rgba = (np.arange(24 * 40 * 4) % 251).astype(np.uint8).reshape(24, 40, 4)  # not square, with an alpha channel
    expected = model.transform(torch.from_numpy(rgba[..., :3].copy()).permute(2, 0, 1))
    got = model.preprocess(Image.fromarray(rgba, "RGBA"))
    assert got.shape == (3, 32, 32) and torch.equal(got, expected)


def test_bytes_paths_and_files_give_the_same_tensor(model, tmp_path):
    import torch

    data = png((20, 30))
    (tmp_path / "i.png").write_bytes(data)
    first = model.preprocess(data)
    for image in (bytearray(data), tmp_path / "i.png", str(tmp_path / "i.png"), io.BytesIO(data)):
        assert torch.equal(model.preprocess(image), first)


def test_bytes_are_decoded_under_the_bundles_own_pixel_cap(constant, tmp_path):
    from bincount.samples import BadImage

    small = load_model(copy_bundle(constant, tmp_path / "b", lambda m: m["preprocess"].update(max_pixels=100)))
    assert small.max_pixels == 100
    assert small.preprocess(png((10, 10))).shape == (3, 32, 32)
    data = png((20, 20))
    with pytest.raises(BadImage) as info:
        small.preprocess(data)
    assert str(info.value) == (f"{len(data):,} bytes: image too large: 20x20 = 400 pixels declared, above the limit "
                               "of 100 (data.max_pixels)")
    with pytest.raises(BadImage, match=r"^bin 7: image too large: 20x20"):
        small.preprocess(data, name="bin 7")


def test_what_is_not_an_image_is_refused_by_kind(model):
    import torch

    with pytest.raises(TypeError) as info:
        model.preprocess(12)
    assert str(info.value) == ("image: expected bytes, a path, a binary file object, a PIL image or a uint8 3xHxW "
                               "tensor, got int")
    for tensor, shown in [(torch.zeros(3, 4, 5), "torch.float32 of shape (3, 4, 5)"),
                          (torch.zeros(1, 4, 5, dtype=torch.uint8), "torch.uint8 of shape (1, 4, 5)"),
                          (torch.zeros(4, 5, dtype=torch.uint8), "torch.uint8 of shape (4, 5)"),
                          (torch.zeros(3, 4, 5, 1, dtype=torch.uint8), "torch.uint8 of shape (3, 4, 5, 1)")]:
        with pytest.raises(ValueError) as info:
            model.preprocess(tensor, name="x")
        assert str(info.value) == f"x: expected a uint8 3xHxW RGB tensor, got {shown}"


def test_predict_counts_a_list_of_raw_images_and_names_a_bad_one(model):
    from bincount.samples import BadImage

    out = model.predict([png((30, 20)), Image.new("RGB", (8, 8))])
    assert out["pred_count"].tolist() == [3, 3]
    with pytest.raises(BadImage, match=r"^image 1 \(4 bytes\): "):
        model.predict([png((30, 20)), b"junk"])


def test_describe_input_names_paths_files_and_sizes(tmp_path):
    (tmp_path / "f.png").write_bytes(b"x")
    assert describe_input(tmp_path / "f.png") == str(tmp_path / "f.png")
    assert describe_input("a/b.jpg") == "a/b.jpg"
    assert describe_input(b"x" * 1234) == "1,234 bytes"
    assert describe_input(bytearray(3)) == "3 bytes"
    with open(tmp_path / "f.png", "rb") as f:
        assert describe_input(f) == str(tmp_path / "f.png")
    fd = os.open(tmp_path / "f.png", os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:  # its name is the descriptor, an int: not a name to show
        assert describe_input(f) == "BufferedReader"
    assert describe_input(io.BytesIO(b"x")) == "BytesIO"
    assert describe_input(SimpleNamespace(name="", read=None)) == "SimpleNamespace"
    assert describe_input(Image.new("RGB", (2, 2))) == "image"


def test_a_run_directory_loads_its_model_folder_and_anything_else_is_named(constant, tmp_path):
    run = tmp_path / "run"
    copy_bundle(constant, run / "model")
    assert find_bundle_dir(run) == run / "model" and find_bundle_dir(run / "model") == run / "model"
    assert load_model(run).counts == [1, 2, 3, 4, 5]
    with pytest.raises(BundleError) as info:
        find_bundle_dir(tmp_path)
    assert str(info.value) == (f"{tmp_path} holds no bincount-model.json (nor model/bincount-model.json): pass a "
                               "bundle, a run directory, a model.tar.gz or an s3:// URI of one; for a run that "
                               "predates bundles, run `bincount export RUN`")
    with pytest.raises(FileNotFoundError) as info:
        load_model(tmp_path / "nope")
    assert str(info.value) == (f"model {tmp_path / 'nope'} does not exist (a bundle dir, run dir, model.tar.gz or "
                               "s3:// URI)")


def test_load_model_expands_the_home_directory(constant, tmp_path, monkeypatch):
    copy_bundle(constant, tmp_path / "home" / "b")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    model = load_model("~/b")
    assert model.source == "~/b" and model.counts == [1, 2, 3, 4, 5]


# -- load.py: s3:// sources, through a store that records what was asked of it --------------------------

class Recorder:
    """``open_store`` for ``s3://bkt/...``: files under ``root``, recording each open and read (key, max_bytes)."""

    def __init__(self, root: Path) -> None:
        self.root, self.calls = root, []

    def open_store(self, url, s3=None):
        self.calls.append(("open", url, s3))
        assert str(url).startswith("s3://"), url
        base, calls = self.root / str(url).removeprefix("s3://"), self.calls

        class Store:
            def read(self, key, max_bytes=None):
                calls.append(("read", key, max_bytes))
                if not (base / key).is_file():
                    raise FileNotFoundError(f"{url}/{key}")
                data = (base / key).read_bytes()
                assert max_bytes is not None and len(data) <= max_bytes, (key, len(data), max_bytes)
                return data

        return Store()


@pytest.fixture
def bucket(tmp_path, monkeypatch) -> Recorder:
    import bincount.s3.store

    recorder = Recorder(tmp_path / "s3")
    monkeypatch.setattr(bincount.s3.store, "open_store", recorder.open_store)
    return recorder


S3 = {"endpoint": "http://127.0.0.1:9"}
META_CAP, S3_ARCHIVE_CAP = 1 << 20, WEIGHTS_CAP + (64 << 20)


def weights_cap_of(bundle: Path) -> int:
    state = load_model(bundle).module.state_dict()
    return 8 + 4096 + 512 * len(state) + 8 * sum(t.numel() for t in state.values())


@pytest.mark.parametrize("url", ["s3://bkt/runs/r1/model.tar.gz", "s3://bkt/runs/r1/model.tar.gz/"])
def test_an_s3_archive_is_read_whole_under_its_cap_and_extracted(constant, bucket, url):
    (bucket.root / "bkt/runs/r1").mkdir(parents=True)
    write_tar(bucket.root / "bkt/runs/r1/model.tar.gz", bundle_files(constant, "out/"))
    model = load_model(url, s3=S3)
    assert model.source == url and model.counts == [1, 2, 3, 4, 5]
    assert bucket.calls == [("open", "s3://bkt/runs/r1", S3), ("read", "model.tar.gz", S3_ARCHIVE_CAP)]


@pytest.mark.parametrize("folder", ["", "model/"])
def test_an_s3_bundle_or_run_prefix_reads_the_metadata_then_capped_weights(constant, bucket, folder):
    copy_bundle(constant, bucket.root / "bkt/run1" / folder)
    model = load_model("s3://bkt/run1/", s3=S3)
    assert model.counts == [1, 2, 3, 4, 5]
    misses = [("read", BUNDLE_FILE, META_CAP)] if folder else []
    assert bucket.calls == [("open", "s3://bkt/run1/", S3), *misses, ("read", folder + BUNDLE_FILE, META_CAP),
                            ("read", folder + WEIGHTS_FILE, weights_cap_of(constant))]


def test_a_bucket_named_like_an_archive_is_a_prefix(constant, bucket):
    copy_bundle(constant, bucket.root / "bundle.tar")
    assert load_model("s3://bundle.tar").counts == [1, 2, 3, 4, 5]
    assert bucket.calls[:2] == [("open", "s3://bundle.tar", None), ("read", BUNDLE_FILE, META_CAP)]


def test_an_s3_prefix_without_a_bundle_is_named(bucket):
    (bucket.root / "bkt/empty").mkdir(parents=True)
    with pytest.raises(BundleError) as info:
        load_model("s3://bkt/empty")
    assert str(info.value) == ("s3://bkt/empty holds no bincount-model.json (nor model/bincount-model.json) and is "
                               "not a .tar.gz/.tgz/.tar")


def test_s3_metadata_of_an_unknown_model_is_refused_naming_the_url(constant, bucket):
    copy_bundle(constant, bucket.root / "bkt/bad", lambda m: m["model"].update(backbone="no_such_net"))
    with pytest.raises(BundleError) as info:
        load_model("s3://bkt/bad")
    assert str(info.value).startswith("s3://bkt/bad: the 'model'/'classes' entries do not describe a model (")
    assert [c[1] for c in bucket.calls if c[0] == "read"] == [BUNDLE_FILE]  # the weights are never asked for


# -- preprocess.py --------------------------------------------------------------------------------

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def eval_steps(resize=(32, 32), crop=None, antialias=True, interpolation="bilinear"):
    import torch
    from torchvision.transforms import InterpolationMode, v2

    steps = [v2.Resize(list(resize), interpolation=InterpolationMode(interpolation), antialias=antialias)]
    if crop:
        steps.append(v2.CenterCrop(list(crop)))
    return steps + [v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)]


def described(**changes) -> dict:
    out = {"channels": "RGB", "input": "uint8 CHW, decoded by bincount.samples", "resize": [32, 32],
           "interpolation": "bilinear", "antialias": True, "crop": None, "scale": "1/255", "mean": list(MEAN),
           "std": list(STD), "max_pixels": 1000, "input_size": [3, 32, 32]}
    out.update(changes)
    return out


def test_the_training_eval_transform_is_described_exactly():
    from bincount.data.transforms import build_transform

    transform = build_transform(32, train=False, mean=MEAN, std=STD)
    assert describe_eval_transform(transform, 1000) == described()
    assert describe_eval_transform(build_transform(48, train=False, mean=MEAN, std=STD, interpolation="bicubic"),
                                   7) == described(resize=[48, 48], interpolation="bicubic", max_pixels=7,
                                                   input_size=[3, 48, 48])


def test_a_crop_decides_the_input_size_and_antialias_is_kept():
    from torchvision.transforms import v2

    transform = v2.Compose(eval_steps(resize=(40, 48), crop=(24, 32), antialias=False, interpolation="nearest"))
    assert describe_eval_transform(transform, 1000) == described(
        resize=[40, 48], crop=[24, 32], antialias=False, interpolation="nearest", input_size=[3, 24, 32])
    assert describe_eval_transform(v2.Compose(eval_steps(resize=(24, 40))), 1000)["input_size"] == [3, 24, 40]


def test_an_interpolation_given_by_name_is_described_by_name():
    from torchvision.transforms import v2

    steps = eval_steps()
    steps[0].interpolation = "bicubic"  # a Resize whose mode is a plain string, not an InterpolationMode
    assert describe_eval_transform(v2.Compose(steps), 1000)["interpolation"] == "bicubic"


@pytest.mark.parametrize("resize", [32, [32]])
def test_a_resize_of_the_shorter_side_is_refused(resize):
    from torchvision.transforms import v2

    steps = eval_steps()
    steps[0] = v2.Resize(resize)
    with pytest.raises(BundleError) as info:
        describe_eval_transform(v2.Compose(steps), 1000)
    assert str(info.value) == "eval Resize(size=[32], max_size=None) is not a fixed HxW resize"
    steps[0] = v2.Resize(resize, max_size=64)
    with pytest.raises(BundleError) as info:
        describe_eval_transform(v2.Compose(steps), 1000)
    assert str(info.value) == "eval Resize(size=[32], max_size=64) is not a fixed HxW resize"


KNOWN = "['Resize', 'CenterCrop', 'ToDtype(float32, scale=True)', 'Normalize']"


def test_an_unknown_step_is_refused_naming_the_known_ones():
    import torch
    from torchvision.transforms import v2

    for step in (v2.RandomHorizontalFlip(), v2.ToDtype(torch.float16, scale=True), v2.ToDtype(torch.float32)):
        with pytest.raises(BundleError) as info:
            describe_eval_transform(v2.Compose([*eval_steps(), step]), 1000)
        assert str(info.value) == f"eval transform step {step!r} has no bundle description; known steps: {KNOWN}"


@pytest.mark.parametrize("drop", [0, 1, 2])
def test_a_transform_lacking_a_needed_step_is_refused(drop):
    from torchvision.transforms import v2

    steps = eval_steps()
    del steps[drop]
    transform = v2.Compose(steps)
    with pytest.raises(BundleError) as info:
        describe_eval_transform(transform, 1000)
    assert str(info.value) == f"eval transform {transform!r} lacks a Resize, ToDtype(scale=True) or Normalize step"


def test_a_single_step_transform_is_described_as_itself():
    from torchvision.transforms import v2

    step = eval_steps()[0]
    with pytest.raises(BundleError) as info:
        describe_eval_transform(step, 1000)
    assert str(info.value) == f"eval transform {step!r} lacks a Resize, ToDtype(scale=True) or Normalize step"
    assert isinstance(step, v2.Resize)


def test_the_description_rebuilds_the_same_transform():
    import torch
    from torchvision.transforms import v2

    image = (torch.arange(3 * 50 * 70) % 253).to(torch.uint8).reshape(3, 50, 70)
    for steps in (eval_steps(), eval_steps(resize=(40, 48), crop=(24, 32), antialias=False, interpolation="bicubic")):
        original = v2.Compose(steps)
        rebuilt = transform_from(describe_eval_transform(original, 1000))
        out = rebuilt(image)
        assert out.dtype == torch.float32 and torch.equal(out, original(image))


@pytest.mark.parametrize("change,reason", [
    ({"interpolation": "fancy"}, "'fancy' is not a valid InterpolationMode"),
    ({"scale": "1/256"}, "scale '1/256' (valid: '1/255')"),
    ({"scale": None}, "scale None (valid: '1/255')"),
    ({"mean": None}, "'NoneType' object is not iterable"),
])
def test_an_unusable_description_is_refused_naming_the_valid_modes(change, reason):
    entry = {**described(), **change}
    with pytest.raises(BundleError) as info:
        transform_from(entry)
    assert str(info.value) == (f"the bundle's preprocess entry {entry!r} is not usable ({reason}); interpolation is "
                               "one of ['nearest', 'nearest-exact', 'bilinear', 'bicubic', 'box', 'hamming', "
                               "'lanczos']")


def test_a_description_without_a_key_is_refused_naming_it():
    entry = described()
    del entry["resize"]
    with pytest.raises(BundleError, match=r"is not usable \('resize'\); interpolation is one of \["):
        transform_from(entry)


# -- provenance.py ----------------------------------------------------------------------------------

def test_trained_on_is_the_record_with_ints():
    assert trained_on("abid", 0.0, 5, 64.0, (500, 400.0)) == {"data": "abid", "counts": [0, 5], "input_size": 64,
                                                             "image_size": [500, 400]}
    assert trained_on("synthetic", 1, 5, 32, None) == {"data": "synthetic", "counts": [1, 5], "input_size": 32,
                                                       "image_size": None}
    assert trained_on("synthetic", 1, 5, 32, [])["image_size"] is None


def strict(cfg: dict, key: str, default):
    """``setting(cfg, key, default)`` as the signature says: the default is always passed."""
    node = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return default if node is None else node


def test_from_config_defaults():
    assert from_config({}, strict) == {"data": "abid", "counts": [0, 0], "input_size": 128, "image_size": None}
    assert from_config({"data": {"classes": {"min_count": 2}}}, strict)["counts"] == [2, 2]
    cfg = {"data": {"synthetic": {"num_images": 10}, "img_size": 48, "classes": {"min_count": 1, "max_count": 6}}}
    assert from_config(cfg, strict) == {"data": "synthetic", "counts": [1, 6], "input_size": 48, "image_size": None}
    cfg["data"]["synthetic"]["size"] = 96
    assert from_config(cfg, strict)["image_size"] == [96, 96]


def write_images(root: Path, sizes: list[tuple[int, int]]) -> list[SimpleNamespace]:
    (root / "bin-images").mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(exist_ok=True)
    rows = []
    for i, size in enumerate(sizes):
        Image.new("RGB", size).save(root / "bin-images" / f"{i:05d}.png")
        rows.append(SimpleNamespace(image=f"bin-images/{i:05d}.png"))
    return rows


def manifest(rows):
    return SimpleNamespace(split=lambda name: {"train": rows, "val": [], "test": []}[name])


def test_image_size_is_the_median_of_the_images_it_can_read(tmp_path):
    rows = write_images(tmp_path, [(100, 50), (300, 70), (200, 60)])
    (tmp_path / "text.png").write_text("not an image")
    paths = [tmp_path / "missing.png", tmp_path / "text.png", *(tmp_path / r.image for r in rows)]
    assert _image_size(paths) == [200, 60]
    assert _image_size(paths[:2]) is None
    assert _image_size(tmp_path / r.image for r in rows[:2]) == [200, 60]


@pytest.fixture
def render(tmp_path) -> tuple[Path, list]:
    """A local root that the renderer wrote (its marker), holding 500x400 images."""
    rows = write_images(tmp_path / "render", [(500, 400)] * 3)
    (tmp_path / "render" / ".complete.json").write_text("{}")
    return tmp_path / "render", rows


def test_a_datamodule_reading_from_s3_or_shards_does_not_look_at_its_root(render):
    root, rows = render
    common = dict(synthetic=None, root=root, class_range=ClassRange(0, 5), img_size=64, manifest=manifest(rows))
    expected = {"data": "abid", "counts": [0, 5], "input_size": 64, "image_size": None}
    assert from_datamodule(SimpleNamespace(**common, store=object(), shards=None)) == expected
    assert from_datamodule(SimpleNamespace(**common, store=None, shards=object())) == expected
    local = from_datamodule(SimpleNamespace(**common, store=None, shards=None))
    assert local == {"data": "synthetic", "counts": [0, 5], "input_size": 64, "image_size": [500, 400]}


def test_a_datamodule_without_the_optional_attributes_is_local(render, tmp_path):
    root, rows = render
    dm = SimpleNamespace(root=root, class_range=ClassRange(1, 4), img_size=32, manifest=manifest(rows))
    assert from_datamodule(dm) == {"data": "synthetic", "counts": [1, 4], "input_size": 32, "image_size": [500, 400]}
    bare = SimpleNamespace(root=tmp_path / "plain", class_range=ClassRange(1, 4), img_size=32)
    assert from_datamodule(bare) == {"data": "abid", "counts": [1, 4], "input_size": 32, "image_size": None}


def test_a_rendered_size_wins_over_the_images(render):
    root, rows = render
    dm = SimpleNamespace(synthetic={"size": 64}, store=None, shards=None, root=root, class_range=ClassRange(1, 5),
                         img_size=32, manifest=manifest(rows))
    assert from_datamodule(dm)["image_size"] == [64, 64]


def test_only_the_first_five_training_images_are_read(tmp_path):
    rows = write_images(tmp_path / "abid", [(100, 80)] * 5 + [(300, 200)] * 6)
    dm = SimpleNamespace(synthetic=None, store=None, shards=None, root=tmp_path / "abid",
                         class_range=ClassRange(0, 9), img_size=64, manifest=manifest(rows))
    assert from_datamodule(dm) == {"data": "abid", "counts": [0, 9], "input_size": 64, "image_size": [100, 80]}


def test_root_kind(tmp_path, monkeypatch):
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / ".partial.json").write_text("{}")
    assert root_kind(tmp_path / "partial") == "synthetic"
    (tmp_path / "images_only" / "bin-images").mkdir(parents=True)
    assert root_kind(tmp_path / "images_only") is None
    (tmp_path / "meta_only" / "metadata").mkdir(parents=True)
    assert root_kind(str(tmp_path / "meta_only")) is None
    (tmp_path / "meta_only" / "bin-images").mkdir()
    assert root_kind(tmp_path / "meta_only") == "abid"
    assert root_kind(tmp_path / "missing") is None


def test_an_s3_prefix_is_never_looked_up_on_the_local_disk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s3:" / "bkt").mkdir(parents=True)
    (tmp_path / "s3:" / "bkt" / ".complete.json").write_text("{}")
    assert root_kind("s3:/bkt") == "synthetic"  # the folder that Path("s3://bkt") would name
    assert root_kind("s3://bkt") is None


def test_record_keeps_counts_and_sizes_up_to_a_million():
    rec = record({"trained_on": {"data": "other", "counts": [0, 1_000_000], "image_size": [1_000_000, 1]}})
    assert rec == {"data": "other", "counts": [0, 1_000_000], "image_size": [1_000_000, 1]}
    rec = record({"trained_on": {"data": "abid", "counts": [0, 1_000_001], "image_size": [-1, 5]}})
    assert rec == {"data": "abid", "counts": None, "image_size": None}
    assert record({"trained_on": {"data": "abid", "counts": [1, 2, 3], "image_size": [5]}})["counts"] is None
    assert record([1]) is None


def test_describe_names_what_it_knows():
    assert describe({"data": "other", "counts": None, "image_size": None}) == "other images"
    assert describe({"data": "abid", "counts": [0, 5], "image_size": [500, 400]}) == \
        "ABID photos, counts 0-5, 500x400 px images"
    assert describe({"data": "synthetic", "image_size": [64, 64]}) == "synthetic bins, 64x64 px images"


def test_input_mismatch_joins_its_reasons(tmp_path):
    (tmp_path / "abid" / "bin-images").mkdir(parents=True)
    (tmp_path / "abid" / "metadata").mkdir()
    meta = {"trained_on": trained_on("synthetic", 1, 5, 32, [64, 48])}
    assert input_mismatch(meta, [str(tmp_path / "abid"), str(tmp_path / "elsewhere")], [12, None, 3]) == (
        f"this model was trained on synthetic bins, counts 1-5, 64x48 px images, but {tmp_path / 'abid'} holds ABID "
        "photos; 1 of 2 true counts are outside 1-5 (12): its counts for these images may mean little")
    assert input_mismatch({}, [str(tmp_path / "abid")], [12]) is None


SYNTH = {"data": "synthetic", "counts": [1, 5], "image_size": [64, 48]}
SAID = ("an image of {w}x{h} px, while this model was trained on {what}: its counts for such images may mean little "
        "(said once)")


def watched(rec, caplog, *shapes):
    import torch

    watch = SizeWatch(lambda image: ("done", tuple(image.shape)), rec, logging.getLogger(LOG))
    with caplog.at_level(logging.INFO, logger="bincount"):
        outs = [watch(torch.zeros(shape, dtype=torch.uint8)) for shape in shapes]
    assert outs == [("done", shape) for shape in shapes]
    return watch, [r.getMessage() for r in caplog.records if r.name == LOG and r.levelno == logging.WARNING]


@pytest.mark.parametrize("side,warns", [(256, True), (255, False), (17, False), (16, True), (24, False), (1000, True)])
def test_an_image_four_times_larger_or_smaller_is_said_once(caplog, side, warns):
    watch, said = watched(SYNTH, caplog, (3, side, side), (3, side, side))
    assert said == ([SAID.format(w=side, h=side, what="synthetic bins, counts 1-5, 64x48 px images")] if warns else [])
    assert watch.warned is warns


def test_the_warning_names_width_then_height(caplog):
    _, said = watched(SYNTH, caplog, (3, 400, 500), (3, 400, 500), (3, 4000, 5000))
    assert said == [SAID.format(w=500, h=400, what="synthetic bins, counts 1-5, 64x48 px images")]


def test_a_one_pixel_training_size_still_compares(caplog):
    _, said = watched({"data": "other", "counts": None, "image_size": [1, 1]}, caplog, (3, 4, 4))
    assert said == [SAID.format(w=4, h=4, what="other images, 1x1 px images")]


def test_a_zero_training_size_or_none_says_nothing(caplog):
    watch, said = watched({"data": "abid", "counts": [0, 5], "image_size": [0, 0]}, caplog, (3, 5, 5))
    assert said == [] and watch.rec is not None
    watch, said = watched({"data": "abid", "counts": [0, 5], "image_size": None}, caplog, (3, 5000, 5000))
    assert said == [] and watch.rec is None
    watch, said = watched(SYNTH, caplog, (5000, 5000))  # not an image tensor: not measured
    assert said == [] and not watch.warned


def test_watch_model_logs_the_record_and_wraps_the_transform(caplog):
    def transform(image):
        return "t"

    with caplog.at_level(logging.INFO, logger="bincount"):
        model = SimpleNamespace(metadata={"trained_on": {**SYNTH, "input_size": 32}}, transform=transform)
        watch_model(model, logging.getLogger(LOG))
        old = SimpleNamespace(metadata={}, transform=transform)
        watch_model(old, logging.getLogger(LOG))
    assert [r.getMessage() for r in caplog.records if r.name == LOG] == [
        "model trained on synthetic bins, counts 1-5, 64x48 px images",
        "model trained on data its bundle does not record (an older bundle)"]
    assert isinstance(model.transform, SizeWatch) and model.transform.transform is transform
    assert model.transform.rec == SYNTH and old.transform.rec is None


def test_the_loaded_module_is_the_one_the_bundle_describes(tmp_path):
    """drop_rate and channels_last come back from the bundle (an older bundle without them: 0.0 and False),
    and the rebuilt module never asks for pretrained weights."""
    import torch

    from bincount.bundle import load_model, write_bundle
    from bincount.models.module import BinCounter

    module = BinCounter(backbone="test_resnet", num_classes=3, min_count=0, pretrained=False,
                        head={"name": "mlp", "hidden": 8}, drop_rate=0.25, channels_last=True)
    out = write_bundle(tmp_path / "b", module, img_size=32, mean=(0.5,) * 3, std=(0.5,) * 3, overflow="clip",
                       max_pixels=10_000)
    hp = load_model(out).module.hparams
    assert (hp.drop_rate, hp.channels_last, hp.pretrained, hp.weights_file, hp.head) == (
        0.25, True, False, None, {"name": "mlp", "hidden": 8})
    assert (hp.backbone, hp.num_classes, hp.min_count) == ("test_resnet", 3, 0)
    assert load_model(out).module.training is False

    def older(meta):
        del meta["model"]["drop_rate"], meta["model"]["channels_last"]
    old = load_model(copy_bundle(out, tmp_path / "old", older)).module
    assert (old.hparams.drop_rate, old.hparams.channels_last) == (0.0, False)
    for a, b in zip(old.state_dict().values(), module.state_dict().values()):
        assert torch.equal(a, b)


def test_a_length_field_with_its_top_bit_set_is_read_unsigned(tmp_path):
    path = tmp_path / "w"
    path.write_bytes(b"\xff" * 8 + b"{}" + bytes(40))
    assert layout_refusal(path) == (f"{path}: header length 18,446,744,073,709,551,615 is outside 2 to 42; not a "
                                    "safetensors file for this model")


def test_a_model_needing_exactly_the_weights_limit_is_built_and_one_byte_more_is_not(constant, monkeypatch):
    from bincount.bundle import load as load_mod

    meta = meta_of(constant)
    need = sum(t.numel() * t.element_size() for t in load_model(constant).module.state_dict().values())
    monkeypatch.setattr(load_mod, "MAX_WEIGHTS_BYTES", need)
    assert len(load_mod.expected_layout(meta, "b.json")) == len(load_model(constant).module.state_dict())
    monkeypatch.setattr(load_mod, "MAX_WEIGHTS_BYTES", need - 1)
    with pytest.raises(BundleError) as e:
        load_mod.expected_layout(meta, "b.json")
    assert str(e.value) == (f"b.json: the model it describes needs {need:,} bytes of weights, above the limit of "
                            f"{need - 1:,}; refused before building it")
