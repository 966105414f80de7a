"""A bundle does not set its own limits (issue 24, item 7): the loader's and the server's caps bound it.

Each test tampers with a real bundle (timm's tiny ``test_resnet``, written by ``write_bundle``) as
someone who can write the bucket would, editing both files and re-recording the weights' sha256 so
that the hash check does not stop it first, and asserts the exact refusal: the key, the value, the cap.
The 1 GiB weights file is sparse (no disk, no time to write), and its load runs in a subprocess whose
peak resident memory is measured, so a loader that reads it before refusing fails the test.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import write_tiny_bundle
from helpers.serve import running
from PIL import Image
from s3_server import free_port

from bincount import cli
from bincount.bundle import BUNDLE_FILE, WEIGHTS_FILE, BundleError, load_model
from bincount.samples import DEFAULT_MAX_PIXELS
from bincount.serve.app import Settings, State
from bincount.serve.inputs import DEFAULT_MAX_PIXELS as SERVE_MAX_PIXELS
from bincount.serve.inputs import Limits

ROOT = Path(__file__).resolve().parents[1]
GIB = 1 << 30


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("limits") / "model")


@pytest.fixture
def bundle(pristine, tmp_path) -> Path:
    """A fresh copy of the tiny bundle to tamper with."""
    out = tmp_path / "b"
    out.mkdir()
    for name in (BUNDLE_FILE, WEIGHTS_FILE):
        (out / name).write_bytes((pristine / name).read_bytes())
    return out


def meta_of(bundle: Path) -> dict:
    return json.loads((bundle / BUNDLE_FILE).read_text())


def edit_meta(bundle: Path, change) -> Path:
    """Apply ``change`` to the metadata and record the weights' current sha256, as an attacker would."""
    meta = meta_of(bundle)
    change(meta)
    with open(bundle / WEIGHTS_FILE, "rb") as f:
        meta["weights"]["sha256"] = hashlib.file_digest(f, "sha256").hexdigest()
    (bundle / BUNDLE_FILE).write_text(json.dumps(meta))
    return bundle / BUNDLE_FILE


def refusal(bundle: Path) -> str:
    with pytest.raises(BundleError) as info:
        load_model(bundle)
    return str(info.value)


def read_safetensors(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + length]), data[8 + length:]


def write_safetensors(path: Path, header: dict, body: bytes) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)


# -- what the metadata may ask -----------------------------------------------------------------------
def test_max_pixels_above_the_loaders_cap_is_refused_by_name(bundle):
    meta_path = edit_meta(bundle, lambda m: m["preprocess"].update(max_pixels=10**12))
    assert refusal(bundle) == (f"{meta_path}: preprocess.max_pixels=1,000,000,000,000 is outside 1 to 40,000,000, "
                               "the loader's cap; refused")


@pytest.mark.parametrize("key", ["resize", "crop"])
def test_an_input_size_above_the_cap_is_refused_by_name(bundle, key):
    meta_path = edit_meta(bundle, lambda m: m["preprocess"].update({key: [8000, 8000]}))
    assert refusal(bundle) == f"{meta_path}: preprocess.{key}=8,000 is outside 1 to 1,024, the loader's cap; refused"


def test_a_non_integer_size_is_refused_by_name(bundle):
    meta_path = edit_meta(bundle, lambda m: m["preprocess"].update(resize=[32.5, 32]))
    assert refusal(bundle) == f"{meta_path}: preprocess.resize=32.5 is not an integer (valid: 1 to 1,024)"


def test_num_classes_above_the_cap_is_refused_before_building_the_model(bundle):
    # today's main tried a 38 GB allocation here and failed with RuntimeError
    meta_path = edit_meta(bundle, lambda m: m["model"].update(num_classes=10**8))
    assert refusal(bundle) == (f"{meta_path}: model.num_classes=100,000,000 is outside 2 to 1,000, "
                               "the loader's cap; refused")


def test_class_counts_must_match_num_classes(bundle):
    meta_path = edit_meta(bundle, lambda m: m["classes"].update(counts=list(range(1000))))
    assert refusal(bundle) == f"{meta_path}: classes.counts has 1000 entries; model.num_classes=5 needs 5"


def test_a_head_too_large_for_any_weights_file_is_refused_before_it_is_allocated(bundle):
    # a 1 TB hidden layer: only the meta device ever holds it
    meta_path = edit_meta(bundle, lambda m: m["model"].update(head={"name": "mlp", "hidden": 10**9}))
    message = refusal(bundle)
    assert re.fullmatch(rf"{re.escape(str(meta_path))}: the model it describes needs [\d,]+ bytes of weights, above "
                        r"the limit of 8,589,934,592; refused before building it", message), message


def test_an_unknown_backbone_is_a_bundle_error(bundle):
    meta_path = edit_meta(bundle, lambda m: m["model"].update(backbone="no_such_net"))
    assert refusal(bundle).startswith(f"{meta_path}: the 'model'/'classes' entries do not describe a model (")


# -- the weights file against what the architecture needs --------------------------------------------
PEAK = """
import resource, sys
from bincount.bundle import BundleError, load_model
load_model(sys.argv[1])  # the pristine bundle: imports, timm, one model built (the baseline)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_model(sys.argv[2])
    print("LOADED")
except BundleError as e:
    print("REFUSED", e)
print("GROWTH_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


@pytest.mark.slow
def test_a_1_gib_weights_file_for_a_tiny_model_is_refused_unread(pristine, bundle):
    weights = bundle / WEIGHTS_FILE
    with open(weights, "wb") as f:
        f.truncate(GIB)  # a sparse 1 GiB of zeros, as the few-MB archive of the issue held
    edit_meta(bundle, lambda m: None)  # with its true sha256, so only the size can stop it
    out = subprocess.run([sys.executable, "-c", PEAK, str(pristine), str(bundle)], capture_output=True, text=True,
                         cwd=ROOT, timeout=300, check=True).stdout
    refused, growth = re.search(r"REFUSED (.*)\nGROWTH_KB (\d+)", out).groups()
    assert int(growth) < 64 << 10, f"peak memory grew by {int(growth) >> 10} MiB while refusing a 1 GiB file"
    assert re.fullmatch(rf"{re.escape(str(weights))} is 1,073,741,824 bytes; the model described by "
                        rf"{re.escape(str(bundle / BUNDLE_FILE))} has \d+ tensors and its weights file can be at "
                        r"most [\d,]+ bytes; refused unread", refused), refused


def test_a_tensor_of_the_wrong_shape_is_refused_from_the_header(bundle):
    header, body = read_safetensors(bundle / WEIGHTS_FILE)
    true_shape = header["head.net.1.weight"]["shape"]
    header["head.net.1.weight"]["shape"] = [5, 1_000_000]
    write_safetensors(bundle / WEIGHTS_FILE, header, body)
    edit_meta(bundle, lambda m: None)
    assert refusal(bundle) == (f"{bundle / WEIGHTS_FILE}: tensor 'head.net.1.weight' is F32 [5, 1000000]; the model "
                               f"described by {bundle / BUNDLE_FILE} needs shape {true_shape} in one of "
                               "['F64', 'F32', 'F16', 'BF16', 'I64', 'I32', 'I16', 'I8', 'U8', 'BOOL']")


def test_bytes_beyond_the_declared_tensors_are_refused(bundle):
    header, body = read_safetensors(bundle / WEIGHTS_FILE)
    write_safetensors(bundle / WEIGHTS_FILE, header, body + bytes(1 << 20))
    edit_meta(bundle, lambda m: None)
    size = (bundle / WEIGHTS_FILE).stat().st_size
    assert refusal(bundle) == (f"{bundle / WEIGHTS_FILE} is {size:,} bytes; its header and {len(body):,} bytes of "
                               f"tensors make {size - (1 << 20):,}; refused unread")


def test_weights_of_another_model_are_refused_by_tensor_name(bundle):
    header, body = read_safetensors(bundle / WEIGHTS_FILE)
    header["extra.weight"] = header.pop("head.net.1.weight")
    write_safetensors(bundle / WEIGHTS_FILE, header, body)
    edit_meta(bundle, lambda m: None)
    assert refusal(bundle) == (f"{bundle / WEIGHTS_FILE} does not fit the model described by {bundle / BUNDLE_FILE}: "
                               "missing ['head.net.1.weight'], unexpected ['extra.weight'] (1 and 1 in all)")


def test_the_untampered_bundle_still_loads(pristine):
    assert load_model(pristine).counts == [1, 2, 3, 4, 5]


# -- the server ---------------------------------------------------------------------------------------
def test_the_server_refuses_to_load_a_bundle_above_the_caps(bundle, capsys):
    meta_path = edit_meta(bundle, lambda m: m["preprocess"].update(max_pixels=10**12))
    state = State(Settings(model=str(bundle)))
    state.load()
    assert isinstance(state.error, BundleError) and not state.ready.is_set()
    assert "preprocess.max_pixels=1,000,000,000,000 is outside 1 to 40,000,000" in str(state.error)

    status = cli.main(["serve", str(bundle), "--port", str(free_port())])
    err = capsys.readouterr().err
    assert status == 1
    assert f"{meta_path}: preprocess.max_pixels=1,000,000,000,000 is outside 1 to 40,000,000" in err


def test_the_servers_own_pixel_cap_holds_whatever_the_bundle_allows(pristine, tmp_path):
    assert SERVE_MAX_PIXELS == DEFAULT_MAX_PIXELS == Limits().max_pixels
    assert meta_of(pristine)["preprocess"]["max_pixels"] == 40_000_000
    image = tmp_path / "img.png"
    Image.new("RGB", (48, 36), (200, 30, 30)).save(image)  # 1,728 pixels
    with running(Settings(model=str(pristine), limits=Limits(max_pixels=1000))) as (url, _):
        answer = httpx.post(url + "/invocations", content=image.read_bytes(), headers={"content-type": "image/png"},
                            timeout=30)
    assert answer.status_code == 413, answer.text
    assert answer.json()["error"] == "image_too_large" and "above the limit of 1,000" in answer.json()["message"]
