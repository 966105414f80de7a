"""What ``bincount serve`` and its model archive promise, checked by value (issue 25).

Each test pins one promise a one-line change once broke without any test noticing: a batch never holds
more than ``--max-batch-size`` images (and does fill up to it), ``/invocations`` answers 503 ``loading``
until the model is loaded, and a ``model.tar.gz`` whose bundle files are above their caps is refused by
name with nothing extracted. Real components throughout: the tiny bundle, uvicorn on 127.0.0.1, real tar
files; the only stand-ins are a model load held back by an Event, and a cap lowered by configuration.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from PIL import Image
from conftest import write_tiny_bundle
from helpers.archives import write_tar
from helpers.serve import running
from s3_server import free_port

import bincount.bundle
import bincount.bundle.archive
from bincount.bundle import BUNDLE_FILE, WEIGHTS_FILE, BundleError, load_model
from bincount.bundle.archive import extract_bundle
from bincount.bundle.format import MAX_METADATA_BYTES
from bincount.serve.app import Settings, create_app
from bincount.serve.batcher import Batcher

MAX_BATCH = 4


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("guards") / "model")


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    """Nine small JPEGs of different colours: two full batches of ``MAX_BATCH`` and one left over."""
    out = []
    for i in range(2 * MAX_BATCH + 1):
        buf = io.BytesIO()
        Image.new("RGB", (40, 30), (28 * i, 255 - 28 * i, (90 * i) % 256)).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


@pytest.fixture(scope="module")
def counts(bundle, jpegs) -> list[int]:
    """Each image's predicted count, one image at a time through ``load_model``."""
    model = load_model(bundle)
    return [int(c) for c in model.predict(jpegs)["pred_count"].tolist()]


def batch_of(response: httpx.Response) -> int:
    """The batch size ``Server-Timing`` reports (the slowest image's batch for a several-image request)."""
    return int(re.search(r'desc="batch of (\d+)"', response.headers["server-timing"]).group(1))


# -- --max-batch-size --------------------------------------------------------------------------------------
class RecordingModel:
    """The real model, recording the size of every batch the batcher runs through it."""

    def __init__(self, model) -> None:
        self.model, self.counts, self.sizes = model, model.counts, []

    def predict(self, batch):
        self.sizes.append(len(batch))
        return self.model.predict(batch)


def test_the_batcher_fills_batches_up_to_max_batch_size_and_never_past_it(bundle, jpegs):
    """Nine images announced together (as one request's instances are) with a long wait: the batcher takes
    exactly MAX_BATCH, then MAX_BATCH, then the one left. Too small a batch and too large a batch both show."""
    model = RecordingModel(load_model(bundle))
    tensors = [model.model.preprocess(data) for data in jpegs]
    batcher = Batcher(model, max_batch_size=MAX_BATCH, max_wait_ms=5000)

    async def all_announced() -> list[dict]:
        with batcher.arriving(len(tensors)) as ticket:
            futures = [batcher.submit(t, ticket) for t in tensors]
        return await asyncio.gather(*futures)

    try:
        answers = asyncio.run(all_announced())
    finally:
        batcher.close()
    assert model.sizes == [MAX_BATCH, MAX_BATCH, 1]
    assert (batcher.batches, batcher.images) == (3, len(jpegs))
    assert len(answers) == len(jpegs)


@pytest.fixture(scope="module")
def batching_server(bundle):
    with running(Settings(model=str(bundle), max_batch_size=MAX_BATCH, max_wait_ms=5000)) as (url, app):
        yield url, app


def test_a_served_request_of_ten_images_runs_as_three_batches_of_at_most_four(batching_server, jpegs, counts):
    """Ten: batches of 4 + 4 + 2; five would make two batches, three would make four."""
    url, app = batching_server
    batcher = app.state.bincount.batcher
    before = (batcher.batches, batcher.images)
    ten = jpegs + jpegs[:1]
    instances = [{"b64": base64.b64encode(data).decode()} for data in ten]
    r = httpx.post(url + "/invocations", json={"instances": instances}, timeout=60)
    assert r.status_code == 200, r.text
    assert [p["count"] for p in r.json()["predictions"]] == counts + counts[:1]
    assert (batcher.batches - before[0], batcher.images - before[1]) == (3, len(ten))
    assert 1 <= batch_of(r) <= MAX_BATCH


def test_concurrent_requests_never_share_a_batch_larger_than_max_batch_size(batching_server, jpegs, counts):
    url, app = batching_server
    batcher = app.state.bincount.batcher
    before = (batcher.batches, batcher.images)
    clients = 4 * MAX_BATCH

    async def one(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.post(url + "/invocations", content=jpegs[i % len(jpegs)],
                                 headers={"content-type": "image/jpeg"})

    async def all_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=clients)) as client:
            return await asyncio.gather(*(one(client, i) for i in range(clients)))

    responses = asyncio.run(all_at_once())
    assert [r.status_code for r in responses] == [200] * clients
    assert [r.json()["count"] for r in responses] == [counts[i % len(jpegs)] for i in range(clients)]
    sizes = [batch_of(r) for r in responses]
    assert max(sizes) <= MAX_BATCH, sizes
    assert batcher.images - before[1] == clients
    assert batcher.batches - before[0] >= clients // MAX_BATCH


# -- /invocations before the model is loaded -------------------------------------------------------------------
@contextmanager
def serving_while_loading(settings: Settings, monkeypatch):
    """uvicorn on loopback whose model load waits for the yielded Event: ``load_model`` itself (what the app's
    load thread calls) is held back, so the app's own readiness logic runs unchanged. Yields (url, app, gate)."""
    import uvicorn

    gate = threading.Event()
    real = bincount.bundle.load_model

    def load_when_released(*args, **kwargs):
        assert gate.wait(60), "the test never released the load"
        return real(*args, **kwargs)

    monkeypatch.setattr(bincount.bundle, "load_model", load_when_released)
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                httpx.get(url + "/ping", timeout=5)
                break
            except httpx.TransportError:
                assert time.time() < deadline, "the server never answered /ping"
                time.sleep(0.05)
        yield url, app, gate
    finally:
        gate.set()
        server.should_exit = True
        thread.join(30)


LOADING_PING = {"error": "loading", "message": "the model is still loading"}
LOADING_INVOCATION = {"error": "loading", "message": "the model is still loading; retry when GET /ping answers 200"}


def test_invocations_before_the_model_is_loaded_answer_503_loading_then_the_count(bundle, jpegs, counts, monkeypatch):
    with serving_while_loading(Settings(model=str(bundle)), monkeypatch) as (url, app, gate):
        image = httpx.post(url + "/invocations", content=jpegs[0], headers={"content-type": "image/jpeg"}, timeout=30)
        assert (image.status_code, image.json()) == (503, LOADING_INVOCATION)
        instances = {"instances": [{"b64": base64.b64encode(jpegs[1]).decode()}]}
        several = httpx.post(url + "/invocations", json=instances, timeout=30)
        assert (several.status_code, several.json()) == (503, LOADING_INVOCATION)
        ping = httpx.get(url + "/ping", timeout=30)
        assert (ping.status_code, ping.json()) == (503, LOADING_PING)
        assert not app.state.bincount.ready.is_set()  # the answers above were all given while loading

        gate.set()
        deadline = time.time() + 60
        while httpx.get(url + "/ping", timeout=30).status_code != 200:
            assert time.time() < deadline and app.state.bincount.error is None, app.state.bincount.error
            time.sleep(0.05)
        image = httpx.post(url + "/invocations", content=jpegs[0], headers={"content-type": "image/jpeg"}, timeout=30)
        assert image.status_code == 200 and image.json()["count"] == counts[0], image.text
        several = httpx.post(url + "/invocations", json=instances, timeout=30)
        assert several.status_code == 200 and [p["count"] for p in several.json()["predictions"]] == [counts[1]]


# -- model.tar.gz: each bundle file under its own cap ----------------------------------------------------------


def metadata_of_size(bundle: Path, size: int) -> bytes:
    """The bundle's own (valid) metadata JSON, padded with trailing spaces to exactly ``size`` bytes."""
    meta = (bundle / BUNDLE_FILE).read_bytes().rstrip()
    assert len(meta) <= size
    return meta + b" " * (size - len(meta))


def test_a_metadata_member_above_its_cap_is_refused_by_name_and_nothing_is_extracted(bundle, tmp_path):
    weights = (bundle / WEIGHTS_FILE).read_bytes()
    archive = write_tar(tmp_path / "model.tar.gz",
                        {BUNDLE_FILE: metadata_of_size(bundle, MAX_METADATA_BYTES + 1), WEIGHTS_FILE: weights})
    dest = tmp_path / "extracted"
    with pytest.raises(BundleError) as refused:
        extract_bundle(archive, dest)
    assert str(refused.value) == (f"{archive}: 'bincount-model.json' is {MAX_METADATA_BYTES + 1:,} bytes, "
                                  f"above the limit of {MAX_METADATA_BYTES:,}")
    assert not dest.exists()
    with pytest.raises(BundleError) as loading:  # load_model, the server and predict refuse it the same way
        load_model(archive)
    assert str(loading.value) == str(refused.value)


def test_a_metadata_member_of_exactly_the_cap_is_extracted(bundle, tmp_path):
    weights = (bundle / WEIGHTS_FILE).read_bytes()
    archive = write_tar(tmp_path / "model.tar.gz",
                        {BUNDLE_FILE: metadata_of_size(bundle, MAX_METADATA_BYTES), WEIGHTS_FILE: weights})
    out = extract_bundle(archive, tmp_path / "extracted")
    assert (out / BUNDLE_FILE).stat().st_size == MAX_METADATA_BYTES
    assert (out / WEIGHTS_FILE).read_bytes() == weights


def test_a_weights_member_above_its_cap_is_refused_by_name_and_nothing_is_extracted(bundle, tmp_path, monkeypatch):
    """The real cap is 8 GiB; lowered to one byte under this bundle's weights file, which then must be refused."""
    weights = (bundle / WEIGHTS_FILE).read_bytes()
    archive = write_tar(tmp_path / "model.tar.gz", {BUNDLE_FILE: (bundle / BUNDLE_FILE).read_bytes(),
                                                    WEIGHTS_FILE: weights})
    monkeypatch.setattr(bincount.bundle.archive, "MAX_WEIGHTS_BYTES", len(weights) - 1)
    dest = tmp_path / "extracted"
    with pytest.raises(BundleError) as refused:
        extract_bundle(archive, dest)
    assert str(refused.value) == (f"{archive}: 'model.safetensors' is {len(weights):,} bytes, "
                                  f"above the limit of {len(weights) - 1:,}")
    assert not dest.exists()
    monkeypatch.setattr(bincount.bundle.archive, "MAX_WEIGHTS_BYTES", len(weights))  # at the cap: extracted
    assert (extract_bundle(archive, dest) / WEIGHTS_FILE).read_bytes() == weights
