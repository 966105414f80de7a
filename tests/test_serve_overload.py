"""``bincount serve`` under overload and abuse (issue 28), each against a real server on 127.0.0.1.

What is pinned: malformed JSON is a 400 naming the problem with nothing logged as an error; a full queue,
and a deadline that cannot be met, are a 503 ``overloaded`` with ``Retry-After`` at once; a request whose
client went away, or whose deadline passed while queued, never reaches the model (the model is wrapped to
count what it runs and to be slow on purpose); an image whose header declares more decoded bytes than the
budget is a 413 before any decode; stalled clients are closed after their deadline while ``/ping`` answers;
``/metrics`` parses and its counters match what was sent. Every load loop is bounded in count and time.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import time
from pathlib import Path

import httpx
import pytest
from conftest import write_tiny_bundle
from helpers.overload import in_thread, jpeg, no_errors_logged, post, serving, wait_until
from helpers.serve import read_until_closed
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

import bincount.serve.invocations
from bincount.serve.admission import DEADLINE_HEADER, Budgets
from bincount.serve.connections import ConnectionLimits


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("overload") / "model")


# -- 4. malformed JSON ------------------------------------------------------------------------------------
MALFORMED = [
    ("deep-nesting", b"[" * 100_000 + b"]" * 100_000, "100,000 levels deep"),
    ("deep-unclosed", b'{"instances": ' + b"[" * 50_000, "levels deep"),
    ("huge-integer", b'{"instances": [{"b64": "AA=="}], "n": ' + b"9" * 5000 + b"}", "5,000 digits"),
    ("not-utf8", b'{"instances": "\xff\xfe"}', "not valid JSON"),
    ("truncated", b'{"instances": [{"b64": "AA==', "not valid JSON"),
]


def test_malformed_json_is_a_400_naming_the_problem_without_a_traceback(bundle, caplog):
    caplog.set_level(logging.INFO)
    with serving(bundle) as (url, _, model):
        for case, body, needle in MALFORMED:
            r = post(url, body, "application/json")
            assert r.status_code == 400, (case, r.text)
            assert r.json()["error"] == "malformed_json" and needle in r.json()["message"], (case, r.json())
            assert "Traceback" not in r.text
        assert post(url, jpeg()).status_code == 200
        assert model.computed == 1
    no_errors_logged(caplog)


# -- 1. admission: a full queue, a deadline that cannot be met, abandoned requests --------------------------
def test_a_full_queue_answers_503_with_retry_after_at_once(bundle):
    with serving(bundle, delay=0.5, budgets=Budgets(max_queue_images=2)) as (url, app, model):
        admission = app.state.bincount.admission
        first, out_first = in_thread(post, url, jpeg(0))
        wait_until(lambda: admission.busy)  # the first image is in the model, the queue is empty
        queued = [in_thread(post, url, jpeg(i)) for i in (1, 2)]
        wait_until(lambda: admission.queued == 2)
        start = time.monotonic()
        r = post(url, jpeg(3))
        assert time.monotonic() - start < 1.0  # refused at once, not after waiting its turn (>= 1.5 s)
        assert r.status_code == 503 and r.json()["error"] == "overloaded", r.text
        assert "--max-queue" in r.json()["message"] and int(r.headers["retry-after"]) >= 1
        for t, out in [(first, out_first), *queued]:
            t.join(10)
            assert out and out[0].status_code == 200
        assert model.computed == 3


def test_a_deadline_the_queue_cannot_meet_is_refused_at_once(bundle):
    with serving(bundle, delay=0.6) as (url, app, model):
        assert post(url, jpeg(0)).status_code == 200  # the server now knows a batch takes ~0.6 s
        busy, out = in_thread(post, url, jpeg(1))
        wait_until(lambda: app.state.bincount.admission.busy)
        start = time.monotonic()
        r = post(url, jpeg(2), **{DEADLINE_HEADER: "200"})
        assert time.monotonic() - start < 0.5
        # refused on the estimate, not admitted and expired in the queue (that one says "deadline passed")
        assert r.status_code == 503 and r.json()["error"] == "overloaded" and "estimated wait" in r.json()["message"]
        assert int(r.headers["retry-after"]) >= 1
        bad = post(url, jpeg(2), **{DEADLINE_HEADER: "soon"})
        assert bad.status_code == 400 and bad.json()["error"] == "bad_deadline" and "'soon'" in bad.json()["message"]
        busy.join(10)
        assert out[0].status_code == 200 and model.computed == 2


def test_a_request_whose_deadline_passes_while_queued_is_never_computed(bundle, caplog):
    caplog.set_level(logging.INFO)
    with serving(bundle, delay=2.0) as (url, app, model):  # no batch has run: no estimate, so it is admitted
        busy, out = in_thread(post, url, jpeg(0))
        wait_until(lambda: app.state.bincount.admission.busy)
        start = time.monotonic()
        r = post(url, jpeg(1), **{DEADLINE_HEADER: "300"})
        assert 0.25 < time.monotonic() - start < 1.5  # at its deadline, not when the 2 s batch ends
        assert r.status_code == 503 and "deadline passed" in r.json()["message"] and r.headers["retry-after"]
        busy.join(10)
        assert out[0].status_code == 200
        wait_until(lambda: app.state.bincount.batcher.dropped == 1)
        assert model.computed == 1  # the expired image left the queue before the model
        assert app.state.bincount.admission.queued == 0
    no_errors_logged(caplog)


def test_an_abandoned_request_is_never_computed_and_logs_one_info_line(bundle, caplog):
    caplog.set_level(logging.INFO)
    with serving(bundle, delay=1.0) as (url, app, model):
        busy, out = in_thread(post, url, jpeg(0))
        wait_until(lambda: app.state.bincount.admission.busy)
        body = jpeg(1)
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:  # sends a whole request, then leaves
            s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                      % len(body) + body)
            wait_until(lambda: app.state.bincount.admission.queued == 1)
        busy.join(10)
        assert out[0].status_code == 200
        # dropped by the batcher when taken, or before it was queued if the client left while it decoded
        abandoned = ("bincount_abandoned_images_total", (("reason", "disconnect"),))
        wait_until(lambda: scrape(url)[abandoned] == 1)
        assert model.computed == 1  # only the image whose client waited
        metrics = scrape(url)
        assert metrics[("bincount_requests_total", (("status", "499"),))] == 1
    gone = [r for r in caplog.records if "went away" in r.getMessage()]
    assert len(gone) == 1 and gone[0].levelno == logging.INFO
    no_errors_logged(caplog)


# -- 2. memory budget ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_png() -> bytes:
    """6000x6000 RGB (108,000,000 bytes decoded) in a few KB of PNG."""
    buf = io.BytesIO()
    Image.new("RGB", (6000, 6000), (40, 120, 200)).save(buf, format="PNG")
    return buf.getvalue()


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_a_small_png_declaring_huge_pixels_is_refused_before_decoding(bundle, big_png, monkeypatch):
    assert len(big_png) < 500_000
    decodes: list[str] = []
    real = bincount.serve.invocations.decode
    monkeypatch.setattr(bincount.serve.invocations, "decode", lambda *a: decodes.append(a[-1]) or real(*a))
    with serving(bundle) as (url, _, model):
        before = rss_bytes()
        r = post(url, big_png, "image/png")
        assert r.status_code == 413 and r.json()["error"] == "decoded_too_large", r.text
        assert "108,000,000 bytes" in r.json()["message"] and "--max-request-decoded-bytes" in r.json()["message"]
        many = json.dumps({"instances": [{"b64": base64.b64encode(big_png).decode()}] * 8}).encode()
        r = post(url, many, "application/json")
        assert r.status_code == 413 and "864,000,000 bytes" in r.json()["message"], r.text
        assert rss_bytes() - before < 60 << 20  # a decode would add hundreds of MB
        assert decodes == [] and model.computed == 0
        assert post(url, jpeg()).status_code == 200 and decodes == ["the image"]


def test_a_full_server_wide_decode_budget_answers_503(bundle):
    budgets = Budgets(max_request_decoded_bytes=1 << 20, max_decoded_bytes=1 << 20)
    with serving(bundle, budgets=budgets) as (url, app, _):
        admission = app.state.bincount.admission
        admission.admit(0, (1 << 20) - 1000, 10)  # other requests decoding hold all but 1,000 bytes
        r = post(url, jpeg())  # 40x30x3 = 3,600 bytes
        assert r.status_code == 503 and r.json()["error"] == "overloaded" and "--max-decoded-bytes" in r.json()["message"]
        assert r.headers["retry-after"]
        admission.release_bytes((1 << 20) - 1000)
        assert post(url, jpeg()).status_code == 200


# -- 3. slow and idle clients ------------------------------------------------------------------------------


def test_stalled_clients_are_closed_after_their_deadlines_while_ping_answers(bundle, caplog):
    caplog.set_level(logging.INFO)
    limits = ConnectionLimits(header_timeout_s=1.0, body_timeout_s=1.0)
    with serving(bundle, connections=limits) as (url, _, model):
        port = int(url.rsplit(":", 1)[1])
        header_stalls, body_stalls = [], []
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-")
            header_stalls.append(s)
        for _ in range(10):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 5000\r\n\r\n"
                      + b"\xff" * 100)
            body_stalls.append(s)
        start = time.monotonic()
        with httpx.Client(timeout=2) as client:
            for _ in range(5):  # meanwhile /ping answers, fast
                t = time.monotonic()
                assert client.get(url + "/ping").status_code == 200 and time.monotonic() - t < 1.0
                time.sleep(0.1)
        for s in header_stalls:
            with s:
                assert read_until_closed(s).startswith(b"HTTP/1.1 408")
        for s in body_stalls:
            with s:
                reply = read_until_closed(s)
                assert reply.startswith(b"HTTP/1.1 408") and b"body_timeout" in reply, reply[:300]
        assert time.monotonic() - start < 4  # closed at their deadline, not held
        assert httpx.get(url + "/ping").status_code == 200 and post(url, jpeg()).status_code == 200
    no_errors_logged(caplog)


def test_at_the_connection_limit_the_oldest_stalled_connection_makes_room_for_ping(bundle):
    limits = ConnectionLimits(header_timeout_s=30.0, max_connections=10)
    with serving(bundle, connections=limits) as (url, _, _):
        port = int(url.rsplit(":", 1)[1])
        stalls = []
        try:
            for _ in range(30):  # three times the limit, each holding half a header
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(b"GET /ping HTTP/1.1\r\nHo")
                stalls.append(s)
            with httpx.Client(timeout=2) as client:
                for _ in range(3):
                    assert client.get(url + "/ping").status_code == 200
            closed = 0
            for s in stalls[:15]:  # the oldest were closed to make room
                s.settimeout(2)
                closed += read_until_closed(s) == b""
            assert closed >= 10
        finally:
            for s in stalls:
                s.close()


# -- 5. /metrics ----------------------------------------------------------------------------------------------
def scrape(url: str) -> dict:
    """``/metrics`` parsed: {(sample name, sorted labels): value}."""
    r = httpx.get(url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def test_metrics_parse_and_count_what_was_sent(bundle):
    with serving(bundle, max_batch_size=4) as (url, _, model):
        for i in range(3):
            assert post(url, jpeg(i)).status_code == 200
        assert post(url, json.dumps({"instances": [{"b64": base64.b64encode(jpeg(i)).decode()} for i in range(2)]}
                                    ).encode(), "application/json").status_code == 200
        for body in (b"{", b"[]"):
            assert post(url, body, "application/json").status_code == 400
        assert post(url, b"x", "text/plain").status_code == 415
        m = scrape(url)
        status = {labels[0][1]: v for (name, labels), v in m.items() if name == "bincount_requests_total"}
        assert status == {"200": 4, "400": 2, "415": 1}
        assert m[("bincount_images_total", ())] == 5 == model.computed
        assert m[("bincount_queue_images", ())] == 0
        assert m[("bincount_batch_size_sum", ())] == 5 and 2 <= m[("bincount_batch_size_count", ())] <= 5
        assert m[("bincount_latency_seconds_count", (("stage", "total"),))] == 7
        assert m[("bincount_latency_seconds_count", (("stage", "queue"),))] == 5
        assert m[("bincount_latency_seconds_count", (("stage", "decode"),))] == 4
        assert m[("bincount_latency_seconds_count", (("stage", "model"),))] == m[("bincount_batch_size_count", ())]
