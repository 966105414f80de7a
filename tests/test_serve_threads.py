"""Where the server's torch work runs: the bundle's transform and the forward on the batcher's thread only.

Why it matters (measured in issue 28): when the decoding threads also ran torch ops, each got its own
OpenMP team, libgomp saw more threads than cores and stopped spinning, and the forward took twice as long
as in a plain process. These tests pin the arrangement that avoids it, and what it brings with it: a
transform error is the one image's 400, and the decoded-bytes reservation lasts until the answer.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import httpx
import pytest
from conftest import write_tiny_bundle
from helpers.serve import running
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from bincount.serve.app import Settings


def jpeg(size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (30, 90, 200)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return write_tiny_bundle(tmp_path_factory.mktemp("threads") / "model")


class RecordingTransform:
    """The bundle's transform, recording the thread it ran on; refuses images ``refuse_width`` wide."""

    def __init__(self, transform, refuse_width: int | None = None, hold: threading.Event | None = None) -> None:
        self.transform, self.refuse_width, self.hold, self.threads = transform, refuse_width, hold, []

    def __call__(self, image):
        self.threads.append(threading.current_thread().name)
        if self.hold is not None:
            self.hold.wait(10)
        if image.shape[-1] == self.refuse_width:
            raise RuntimeError(f"cannot resize a {image.shape[-1]}-pixel-wide image")
        return self.transform(image)


def post(url: str, body: bytes, kind: str = "image/jpeg") -> httpx.Response:
    return httpx.post(url + "/invocations", content=body, headers={"content-type": kind}, timeout=30)


def reserved_bytes(url: str) -> float:
    families = text_string_to_metric_families(httpx.get(url + "/metrics").text)
    return next(f.samples[0].value for f in families if f.name == "bincount_decoded_bytes_reserved")


def test_the_transform_runs_on_the_batchers_thread_and_answers_match_in_process(bundle):
    from bincount.bundle import load_model

    with running(Settings(model=str(bundle), max_batch_size=4, max_wait_ms=0)) as (url, app):
        batcher = app.state.bincount.batcher
        batcher.transform = recording = RecordingTransform(batcher.transform)
        body = jpeg()
        r = post(url, body)
        several = post(url, json.dumps({"instances": [{"b64": base64.b64encode(body).decode()}] * 3}).encode(),
                       "application/json")
    assert r.status_code == 200 and several.status_code == 200, (r.text, several.text)
    assert recording.threads == ["bincount-batcher"] * 4, recording.threads
    expected = load_model(bundle).predict([body])
    assert r.json()["count"] == int(expected["pred_count"][0])
    assert r.json()["expected_count"] == pytest.approx(float(expected["expected_count"][0]), abs=1e-4)
    assert [p["count"] for p in several.json()["predictions"]] == [r.json()["count"]] * 3


def test_an_image_the_transform_refuses_is_its_own_400_naming_it_and_the_server_goes_on(bundle, caplog):
    with running(Settings(model=str(bundle), max_batch_size=4, max_wait_ms=0)) as (url, app):
        batcher = app.state.bincount.batcher
        batcher.transform = RecordingTransform(batcher.transform, refuse_width=41)
        instances = [{"b64": base64.b64encode(jpeg(size)).decode()} for size in [(40, 30), (41, 30)]]
        r = post(url, json.dumps({"instances": instances}).encode(), "application/json")
        assert r.status_code == 400 and r.json()["error"] == "bad_image", r.text
        assert r.json()["message"].startswith("instances[1]: the bundle's transform failed: RuntimeError: cannot "
                                              "resize a 41-pixel-wide image")
        assert "Traceback" not in r.text
        assert post(url, jpeg()).status_code == 200
        assert reserved_bytes(url) == 0
    assert not [rec for rec in caplog.records if rec.exc_info], "no traceback logged"


def test_the_decoded_bytes_stay_reserved_until_the_answer(bundle):
    hold = threading.Event()
    with running(Settings(model=str(bundle), max_batch_size=1, max_wait_ms=0)) as (url, app):
        batcher = app.state.bincount.batcher
        batcher.transform = RecordingTransform(batcher.transform, hold=hold)
        out: list = []
        t = threading.Thread(target=lambda: out.append(post(url, jpeg((40, 30)))))
        t.start()
        deadline = time.monotonic() + 10
        while not batcher.transform.threads:  # decoded, queued, taken: the transform holds it
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert reserved_bytes(url) == 40 * 30 * 3
        hold.set()
        t.join(10)
        assert out[0].status_code == 200
        assert reserved_bytes(url) == 0


def test_ready_is_said_only_once_requests_can_reach_the_batcher(bundle, monkeypatch):
    """The batcher's thread says ready (``on_started``); it must not run before the app holds the batcher,
    or /ping says ready while /invocations finds none (a CI run hit it). A slow constructor widens the gap."""
    import bincount.serve.app
    import bincount.serve.batcher

    seen = []
    original_init, original_ready = bincount.serve.batcher.Batcher.__init__, bincount.serve.app.State._ready

    def slow_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        time.sleep(0.3)

    def recording_ready(self, device):
        seen.append(self.batcher is not None)
        original_ready(self, device)

    monkeypatch.setattr(bincount.serve.batcher.Batcher, "__init__", slow_init)
    monkeypatch.setattr(bincount.serve.app.State, "_ready", recording_ready)
    with running(Settings(model=str(bundle), max_batch_size=2, max_wait_ms=0)) as (url, app):
        assert post(url, jpeg()).status_code == 200
    assert seen == [True]
