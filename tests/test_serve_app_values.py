"""``POST /invocations`` past admission, and the app's routes and error handlers, each on an app of its own.

Why an app per test: mutmut maps a function to the first test that calls it, so a ``create_app`` run once
inside a module-scoped server fixture is checked only by that first test (docs/testing.md, "the module-fixture
trap"). Here each test builds its own app or state and checks exact values: the JSON error bodies, the
abandoned-image counts of a client that left while its images decoded, the ``Server-Timing`` durations under
a scripted clock, and the batcher's count of announced images once they are queued.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import threading
import time
import types

import pytest
import torch
from PIL import Image
from helpers.bundles import write_constant_bundle
from s3_server import s3_client, s3_endpoint  # noqa: F401 - a fixture
from starlette.testclient import TestClient

import bincount.serve.invocations as invocations_module
from bincount.serve.admission import Admission, Budgets
from bincount.bundle.format import BUNDLE_FILE
from bincount.serve.app import Settings, State, create_app
from bincount.serve.batcher import Batcher
from bincount.serve.inputs import Limits
from bincount.serve.invocations import ClientGone, _decoded_and_answered
from bincount.serve.metrics import Metrics


def jpeg(value: int, size=(8, 6)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (value, value, value)).save(buf, "JPEG", quality=100)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------------
# the app: routes and exception handlers
# ------------------------------------------------------------------------------------------------------
@pytest.fixture
def client():
    """An app whose model never loads (its lifespan is not entered), and a client that reads 500s as answers."""
    app = create_app(Settings(model="never-loaded"))
    return app, TestClient(app, raise_server_exceptions=False)


def test_an_unknown_route_is_a_404_json_error_listing_the_routes(client):
    _, c = client
    r = c.get("/predict")
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    assert r.json() == {"error": "not_found",
                        "message": "no route /predict; routes: GET /ping, POST /invocations, GET /metrics"}


@pytest.mark.parametrize("method, path", [("POST", "/ping"), ("GET", "/invocations"), ("DELETE", "/metrics")])
def test_a_wrong_method_is_a_405_json_error_naming_it(client, method, path):
    _, c = client
    r = c.request(method, path)
    assert r.status_code == 405
    assert r.json() == {"error": "method_not_allowed", "message": f"{method} is not allowed on {path}"}


def test_a_serve_error_raised_in_a_route_is_its_status_and_json_body(client):
    app, c = client
    app.state.bincount.ready.set()
    app.state.bincount.model = types.SimpleNamespace(max_pixels=10**6)
    r = c.post("/invocations", content=b"{}", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type"
    assert r.json()["message"].startswith("Content-Type 'text/plain' is not accepted")


def test_an_unexpected_exception_is_a_500_json_error_naming_its_type_without_a_traceback(client, caplog):
    app, c = client
    app.state.bincount.ready.set()
    app.state.bincount.model = types.SimpleNamespace()  # no max_pixels: an AttributeError inside the route
    app.state.bincount.identity = {"backbone": "b"}
    r = c.post("/invocations", content=jpeg(10), headers={"content-type": "image/jpeg"})
    assert r.status_code == 500
    assert r.json() == {"error": "internal_error",
                        "message": "AttributeError while serving the request (logged by the server)"}
    assert "Traceback" not in r.text
    # the server goes on: the next request is answered
    assert c.get("/ping").json() == {"status": "ok", "model": {"backbone": "b"}}


def test_ping_while_loading_and_after_a_failed_load_is_a_503_saying_which(client):
    app, c = client
    r = c.get("/ping")
    assert (r.status_code, r.json()) == (503, {"error": "loading", "message": "the model is still loading"})
    app.state.bincount.error = FileNotFoundError("no bundle at never-loaded")
    r = c.get("/ping")
    assert (r.status_code, r.json()) == (503, {"error": "model_failed", "message": "the model could not be loaded: "
                                                                                   "no bundle at never-loaded"})


# ------------------------------------------------------------------------------------------------------
# _decoded_and_answered: decoding, submitting, waiting
# ------------------------------------------------------------------------------------------------------
class FirstPixelModel:
    """A model whose count for an image is its first pixel's value (the tensor reaches it as decoded)."""

    counts = list(range(256))

    def predict(self, batch: torch.Tensor) -> dict:
        values = batch.reshape(len(batch), -1)[:, 0].long()
        n = len(batch)
        return {"pred_count": values, "expected_count": values.float(), "confidence": torch.ones(n),
                "probs": torch.nn.functional.one_hot(values, 256).float()}


class ArrivingAfterEachSubmit(Batcher):
    """The real batcher, recording how many images it still counts as arriving right after each submit."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.arriving_after: list[int] = []

    def submit(self, *args, **kwargs):
        future = super().submit(*args, **kwargs)
        self.arriving_after.append(self._arriving)
        return future


@pytest.fixture
def state():
    metrics = Metrics()
    admission = Admission(Budgets(), 4, metrics)
    batcher = ArrivingAfterEachSubmit(FirstPixelModel(), 4, 1.0, hooks=admission, metrics=metrics)
    s = types.SimpleNamespace(admission=admission, batcher=batcher, metrics=metrics,
                              settings=Settings(model="m"), model=types.SimpleNamespace(max_pixels=10**6),
                              identity={"backbone": "b", "run": None, "sha256": "s"})
    yield s
    batcher.close()


def call(state, datas, gone_first: bool, start: float, deadline_s: float = 30.0):
    async def go():
        gone = asyncio.get_running_loop().create_future()
        if gone_first:
            gone.set_result(None)
        deadline = invocations_module.time.monotonic() + deadline_s
        return await _decoded_and_answered(state, datas, [f"image {i}" for i in range(len(datas))], len(datas) > 1,
                                           deadline, gone, start)

    return asyncio.run(go())


def test_a_client_gone_while_its_images_decoded_is_counted_as_disconnects_and_nothing_is_queued(state):
    state.admission.admit(3, 0, 30.0)
    with pytest.raises(ClientGone):
        call(state, [jpeg(1), jpeg(2), jpeg(3)], gone_first=True, start=0.0)
    value = state.metrics.registry.get_sample_value
    assert value("bincount_abandoned_images_total", {"reason": "disconnect"}) == 3
    assert value("bincount_abandoned_images_total", {"reason": "deadline"}) == 0
    assert state.batcher._queue.qsize() == 0 and state.batcher.arriving_after == []
    assert state.admission.queued == 0 and state.batcher._arriving == 0  # it left the queue; nothing announced


def test_each_queued_image_stops_counting_as_arriving_when_it_is_submitted(state):
    state.admission.admit(3, 0, 30.0)
    out = call(state, [jpeg(10), jpeg(20), jpeg(30)], gone_first=False, start=0.0)
    assert state.batcher.arriving_after == [2, 1, 0]
    assert [round(p["count"] / 10) for p in json.loads(out.body)["predictions"]] == [1, 2, 3]


def test_server_timing_reads_the_read_and_decode_milliseconds_from_the_clock(state, monkeypatch):
    """``start`` is when the request arrived; the route reads the clock when the body is read and when the
    images are decoded: 10.25 s and 10.375 s after a start of 10.0 are 250 ms and 125 ms."""
    clock = iter([10.25, 10.375])
    monkeypatch.setattr(invocations_module, "time",
                        types.SimpleNamespace(perf_counter=lambda: next(clock),
                                              monotonic=invocations_module.time.monotonic))
    state.admission.admit(1, 0, 30.0)
    out = call(state, [jpeg(7)], gone_first=False, start=10.0)
    header = out.headers["server-timing"]
    assert header.startswith("read;dur=250.00, decode;dur=125.00, queue;dur="), header
    assert header.endswith(';desc="batch of 1"'), header


# ------------------------------------------------------------------------------------------------------
# State.load: where the model comes from, the device it goes to, what /ping says it is
# ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def constant_bundle(tmp_path_factory):
    return write_constant_bundle(tmp_path_factory.mktemp("serve_app") / "bundle")


def loaded(settings: Settings) -> State:
    """``State.load`` as the app's lifespan runs it (here on this thread), then ready or failed."""
    state = State(settings)
    state.load()
    if state.error is None:
        assert state.ready.wait(30), "the batcher never started"
    return state


def test_a_loaded_model_says_its_backbone_run_and_weights_digest(constant_bundle, tmp_path):
    meta = json.loads((constant_bundle / BUNDLE_FILE).read_text())
    state = loaded(Settings(model=str(constant_bundle), device="cpu"))
    try:
        assert state.error is None and state.model.device.type == "cpu"
        assert state.identity == {"backbone": "test_resnet", "run": None, "sha256": meta["weights"]["sha256"][:16]}
    finally:
        state.batcher.close()
    # a bundle written before the metadata had a "run" entry
    older = tmp_path / "older"
    shutil.copytree(constant_bundle, older)
    del meta["run"]
    (older / BUNDLE_FILE).write_text(json.dumps(meta))
    state = loaded(Settings(model=str(older)))
    try:
        assert state.error is None and state.identity["run"] is None
    finally:
        state.batcher.close()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_device_cuda_without_cuda_fails_the_load_and_tells_the_cli(constant_bundle):
    """``--device cuda`` is what the user asked for: on a machine without CUDA the load fails (and the CLI
    exits naming it) rather than quietly serving on the CPU."""
    told: list[BaseException] = []
    state = loaded(Settings(model=str(constant_bundle), device="cuda", on_fail=told.append))
    assert isinstance(state.error, (RuntimeError, AssertionError)) and told == [state.error]  # torch's words vary
    assert not state.ready.is_set() and state.model is None and state.batcher is None


def test_a_model_in_s3_is_read_with_the_servers_s3_settings(constant_bundle, s3_endpoint):  # noqa: F811
    s3_client(s3_endpoint).create_bucket(Bucket="serve-app-model")
    for f in constant_bundle.iterdir():
        s3_client(s3_endpoint).put_object(Bucket="serve-app-model", Key=f"run1/{f.name}", Body=f.read_bytes())
    limits = Limits(s3={"endpoint_url": s3_endpoint, "max_attempts": 1, "connect_timeout": 1.0})
    state = loaded(Settings(model="s3://serve-app-model/run1/", limits=limits))
    try:
        assert state.error is None, state.error
        assert state.model.source == "s3://serve-app-model/run1/" and state.model.counts == [1, 2, 3, 4, 5]
    finally:
        state.batcher.close()


def test_close_gives_up_after_its_timeout_when_a_batch_is_stuck():
    """A model call that never returns must not hang the server's shutdown past ``close``'s timeout."""
    release = threading.Event()

    class Stuck(FirstPixelModel):
        def predict(self, batch):
            release.wait(60)
            return super().predict(batch)

    b = Batcher(Stuck(), 4, 1.0)
    loop = asyncio.new_event_loop()

    async def go():
        return b.submit(torch.zeros(3, 2, 2, dtype=torch.uint8))

    future = loop.run_until_complete(go())
    started = time.monotonic()
    b.close(timeout=0.3)
    took = time.monotonic() - started
    release.set()
    assert 0.25 <= took < 10, took
    b._thread.join(30)
    assert loop.run_until_complete(asyncio.wait_for(future, 30))["count"] == 0  # answered once released
    loop.close()
