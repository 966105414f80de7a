"""Admission, the batcher and the connection guards of ``bincount serve``, checked by value and in process.

What is pinned, each by exact numbers and messages rather than "it ran": the 503 ``overloaded`` refusals
(which limit, the ``Retry-After`` seconds, the budgets at their edges: N allowed, N+1 refused), the deadline
header's parsing, the decoded-bytes arithmetic from image headers; the batches the real batcher forms (the
bound, the lone image that does not wait, the announced one that is waited for, images of abandoned requests
dropped and counted), what each answer and ``Server-Timing`` entry carries (a scripted clock makes every
duration exact); and the uvicorn side: the Config ``bincount serve`` builds, the guarded protocol's header
timer, header cap and connection eviction, driven with a recording transport and loop instead of sockets.

No server is started except one in-process Starlette TestClient request; no test sleeps to wait for
something an event can say.
"""

from __future__ import annotations

import asyncio
import io
import logging
import queue
import resource
import threading
import time
import types

import pytest
import torch
from PIL import Image

import bincount.serve.batcher as batcher_module
import bincount.serve.calibrate
import bincount.serve.connections as connections_module
from bincount.serve.admission import (
    DEADLINE_HEADER,
    Admission,
    Budgets,
    Overloaded,
    deadline_seconds,
    decoded_bytes,
)
from bincount.serve.batcher import _STOP, Abandon, Batcher, PreprocessError, TooLate, _resolve
from bincount.serve.connections import (
    MAX_HEADER_BYTES,
    ConnectionLimits,
    default_max_connections,
    protocol_class,
    read_within,
    uvicorn_config,
)
from bincount.serve.inputs import ServeError
from bincount.serve.metrics import Metrics


# ======================================================================================================
# admission.py
# ======================================================================================================
def test_overloaded_is_a_503_named_overloaded_with_whole_retry_seconds_of_at_least_one():
    e = Overloaded("full", 5)
    assert (e.status, e.code, e.message, e.retry_after, str(e)) == (503, "overloaded", "full", 5, "full")
    assert Overloaded("m", 1).retry_after == 1
    assert Overloaded("m", 0).retry_after == 1
    assert Overloaded("m", -3).retry_after == 1
    assert Overloaded("m", 2.9).retry_after == 2  # int(), not rounded
    loading = Overloaded("still loading", 1, code="loading")
    assert (loading.status, loading.code, loading.retry_after) == (503, "loading", 1)


def test_budgets_defaults_and_their_edges():
    b = Budgets()
    assert (b.timeout_s, b.max_queue_images, b.max_request_decoded_bytes, b.max_decoded_bytes) == (
        55.0, 256, 64 << 20, 256 << 20)
    edge = Budgets(timeout_s=0.5, max_queue_images=1, max_request_decoded_bytes=1, max_decoded_bytes=1)
    assert (edge.timeout_s, edge.max_queue_images, edge.max_request_decoded_bytes) == (0.5, 1, 1)
    Budgets(max_request_decoded_bytes=1000, max_decoded_bytes=1000)  # equal: allowed


@pytest.mark.parametrize("kwargs, message", [
    (dict(timeout_s=0), "timeout_s=0 must be positive seconds"),
    (dict(timeout_s=-1.5), "timeout_s=-1.5 must be positive seconds"),
    (dict(max_queue_images=0), "max_queue_images=0 must be at least 1"),
    (dict(max_request_decoded_bytes=0), "max_request_decoded_bytes=0 must be positive and at most "
     "max_decoded_bytes=268,435,456 (the server-wide budget), or no request that large could ever be served"),
    (dict(max_request_decoded_bytes=2001, max_decoded_bytes=2000), "max_request_decoded_bytes=2,001 must be "
     "positive and at most max_decoded_bytes=2,000 (the server-wide budget), or no request that large could "
     "ever be served"),
])
def test_budgets_refuse_impossible_values_naming_them(kwargs, message):
    with pytest.raises(ValueError) as e:
        Budgets(**kwargs)
    assert str(e.value) == message


@pytest.mark.parametrize("header, expected", [
    (None, 55.0), ("2000", 2.0), (" 250 ", 0.25), ("1", 0.001), ("55000", 55.0), ("99999999", 55.0),
])
def test_the_deadline_is_the_timeout_or_the_clients_shorter_milliseconds(header, expected):
    assert deadline_seconds(header, 55.0) == expected


@pytest.mark.parametrize("header", ["0", "soon", "-5", "1.5", ""])
def test_a_bad_deadline_header_is_a_400_naming_it(header):
    with pytest.raises(ServeError) as e:
        deadline_seconds(header, 3.0)
    assert (e.value.status, e.value.code) == (400, "bad_deadline")
    assert e.value.message == (f"{DEADLINE_HEADER}: {header!r} is not a positive whole number of milliseconds; "
                               f"send e.g. {DEADLINE_HEADER}: 2000 (at most --timeout, 3 s)")


def encoded(mode: str, size: tuple[int, int], fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("mode, size, fmt, expected", [
    ("RGB", (40, 30), "JPEG", 40 * 30 * 3),
    ("L", (10, 7), "PNG", 10 * 7 * 3),  # one band decodes to RGB: three
    ("LA", (5, 4), "PNG", 5 * 4 * 3),
    ("RGBA", (5, 4), "PNG", 5 * 4 * 4),
])
def test_decoded_bytes_are_width_x_height_x_at_least_three_channels(mode, size, fmt, expected):
    got = decoded_bytes(encoded(mode, size, fmt), 10**6, "the image")
    assert got == expected and isinstance(got, int)


def test_an_image_above_max_pixels_is_a_413_from_its_header_at_the_edge():
    data = encoded("RGB", (40, 30), "PNG")
    assert decoded_bytes(data, 1200, "x") == 3600  # exactly at the limit
    with pytest.raises(ServeError) as e:
        decoded_bytes(data, 1199, "instances[2]")
    assert (e.value.status, e.value.code) == (413, "image_too_large")
    assert e.value.message == ("instances[2]: image too large: 40x30 = 1,200 pixels declared, above the limit of "
                               "1,199 (data.max_pixels); refused from the header")


def test_bytes_that_are_no_image_are_a_400_in_the_words_a_decode_uses():
    with pytest.raises(ServeError) as e:
        decoded_bytes(b"hello", 10**6, "instances[1]")
    assert (e.value.status, e.value.code) == (400, "bad_image")
    assert e.value.message == ("instances[1]: cannot decode (UnidentifiedImageError: cannot identify image file "
                               "the image bytes)")
    with pytest.raises(ServeError) as e:
        decoded_bytes(b"", 10**6, "the image")
    assert (e.value.status, e.value.code, e.value.message) == (400, "bad_image", "the image: empty file")


def test_a_jpeg_whose_header_passes_but_pil_cannot_open_is_a_400_naming_the_error_type():
    sos = b"\xff\xda" + (12).to_bytes(2, "big") + b"\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00"
    data = b"\xff\xd8\xff\xc0" + (11).to_bytes(2, "big") + b"\x08\x00\x1e\x00\x28\x09\x01\x11\x00" + sos + b"\xff\xd9"
    with pytest.raises(ServeError) as e:
        decoded_bytes(data, 10**6, "y")
    assert (e.value.status, e.value.code) == (400, "bad_image")
    assert e.value.message.startswith("y: cannot decode (UnidentifiedImageError: cannot identify image file "), \
        e.value.message


def test_a_fresh_admission_holds_nothing_and_batches_of_at_least_one():
    a = Admission(Budgets(), 4)
    assert (a.max_batch_size, a.queued, a.reserved, a.batch_s, a.busy) == (4, 0, 0, None, False)
    assert a.busy is False and a.batch_s is None
    assert Admission(Budgets(), 0).max_batch_size == 1
    assert Admission(Budgets(), 1).max_batch_size == 1
    assert Admission(Budgets(), "3").max_batch_size == 3


def test_the_per_request_budget_allows_its_limit_and_refuses_one_byte_more():
    a = Admission(Budgets(max_request_decoded_bytes=3000, max_decoded_bytes=10_000), 1)
    a.check_request([1000, 2000])  # exactly the limit
    with pytest.raises(ServeError) as e:
        a.check_request([1000, 2001])
    assert (e.value.status, e.value.code) == (413, "decoded_too_large")
    assert e.value.message == ("the request's 2 image(s) decode to 3,001 bytes (1,000, 2,001; width x height x "
                               "channels from the headers), above the per-request budget of 3,000 "
                               "(--max-request-decoded-bytes); nothing was decoded")


def test_a_refused_request_lists_at_most_eight_sizes():
    a = Admission(Budgets(max_request_decoded_bytes=10, max_decoded_bytes=10), 1)
    with pytest.raises(ServeError) as eight:
        a.check_request([2] * 8)
    assert eight.value.message == ("the request's 8 image(s) decode to 16 bytes (2, 2, 2, 2, 2, 2, 2, 2; width x "
                                   "height x channels from the headers), above the per-request budget of 10 "
                                   "(--max-request-decoded-bytes); nothing was decoded")
    with pytest.raises(ServeError) as nine:
        a.check_request([1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert nine.value.message.startswith("the request's 9 image(s) decode to 45 bytes (1, 2, 3, 4, 5, 6, 7, 8, ...; "
                                         "width x height")


def test_the_wait_estimate_is_batches_ahead_times_the_recent_batch_time():
    a = Admission(Budgets(), 4)
    assert a.estimate_s(3) is None and a.retry_after() == 1  # no batch has run: no estimate
    a.admit(5, 0, 100.0)
    a.batch_done(2.0)
    assert a.estimate_s(0) == 4.0  # ceil(5 / 4) = 2 batches of 2 s
    assert a.estimate_s(3) == 4.0  # ceil(8 / 4) = 2
    assert a.estimate_s(4) == 6.0  # ceil(9 / 4) = 3
    a.batch_started()
    assert a.busy is True
    assert a.estimate_s(3) == 6.0  # the batch in the model counts as one more
    a.batch_done(2.0)
    assert a.busy is False and a.estimate_s(3) == 4.0


@pytest.mark.parametrize("queued, batch_s, busy, expected", [
    (0, 0.25, False, 1),  # nothing queued: at least 1 s
    (4, 1.5, False, 2),  # ceil(4 / 4) x 1.5 = 1.5 -> 2
    (8, 1.5, False, 3),  # 2 x 1.5 = 3.0 -> 3
    (3, 1.25, True, 3),  # (1 + 1) x 1.25 = 2.5 -> 3
])
def test_retry_after_is_the_whole_seconds_until_the_queue_has_drained(queued, batch_s, busy, expected):
    a = Admission(Budgets(), 4)
    a.admit(queued, 0, 100.0)
    a.batch_done(batch_s)
    if busy:
        a.batch_started()
    assert a.retry_after() == expected


def test_the_batch_time_is_the_first_batch_then_a_moving_average():
    a = Admission(Budgets(), 1)
    a.batch_done(2.0)
    assert a.batch_s == 2.0
    a.batch_done(4.0)
    assert a.batch_s == pytest.approx(0.7 * 2.0 + 0.3 * 4.0)  # EWMA 0.3 on the latest
    a.batch_done(4.0)
    assert a.batch_s == pytest.approx(0.7 * 2.6 + 0.3 * 4.0)


def test_the_queue_takes_its_limit_and_refuses_one_more_with_the_drain_time():
    a = Admission(Budgets(max_queue_images=3), 2)
    a.admit(3, 0, 100.0)  # exactly the limit (no batch yet: no estimate)
    a.batch_done(1.25)
    assert a.queued == 3
    with pytest.raises(Overloaded) as e:
        a.admit(1, 0, 100.0)
    assert (e.value.status, e.value.code) == (503, "overloaded")
    assert e.value.message == "the queue holds 3 image(s); 1 more would pass its limit of 3 (--max-queue); retry later"
    assert e.value.retry_after == 3  # ceil(3 / 2) x 1.25 = 2.5 -> 3
    assert (a.queued, a.reserved) == (3, 0)  # a refusal takes nothing
    b = Admission(Budgets(max_queue_images=3), 1)
    with pytest.raises(Overloaded):
        b.admit(4, 0, 100.0)
    assert b.queued == 0


def test_a_wait_that_fits_exactly_in_the_share_is_admitted_and_a_longer_one_refused():
    a = Admission(Budgets(), 2)
    a.admit(3, 0, 100.0)
    a.batch_done(1.25)
    a.batch_started()  # wait for one more: (ceil(4 / 2) + 1) x 1.25 = 3.75 s
    with pytest.raises(Overloaded) as e:
        a.admit(1, 0, 4.6)  # 80% of 4.6 = 3.68 < 3.75
    assert e.value.message == ("the queue's estimated wait, 3.75 s, does not fit in 80% of this request's deadline, "
                               "4.60 s left (--timeout, or X-Bincount-Deadline-Ms); retry later")
    assert (e.value.code, e.value.retry_after) == ("overloaded", 4)  # (ceil(3 / 2) + 1) x 1.25 = 3.75 -> 4
    assert a.queued == 3
    a.admit(1, 0, 4.6875)  # 80% of 4.6875 = 3.75: fits
    assert a.queued == 4


def test_the_server_wide_bytes_budget_takes_its_limit_and_refuses_one_byte_more():
    a = Admission(Budgets(max_request_decoded_bytes=1_000_000, max_decoded_bytes=2_000_000), 1)
    a.admit(1, 1_500_000, 100.0)
    a.admit(1, 500_000, 100.0)  # exactly the budget
    assert (a.queued, a.reserved) == (2, 2_000_000)
    with pytest.raises(Overloaded) as e:
        a.admit(0, 1, 100.0)
    assert e.value.message == ("decoding holds 2,000,000 bytes; 1 more would pass the server's budget of 2,000,000 "
                               "(--max-decoded-bytes); retry later")
    assert (e.value.code, e.value.retry_after) == ("overloaded", 1)
    assert (a.queued, a.reserved) == (2, 2_000_000)
    a.release_bytes(500_000)
    assert a.reserved == 1_500_000
    a.release_bytes(1_000_000)
    assert a.reserved == 500_000
    a.leave_queue(0)
    assert a.queued == 2
    a.leave_queue(2)
    a.admit(3, 0, 100.0)
    a.leave_queue(1)
    assert a.queued == 2


def test_admission_publishes_the_queue_and_the_reserved_bytes():
    metrics = Metrics()
    a = Admission(Budgets(), 1, metrics)

    def gauges():
        r = metrics.registry
        return r.get_sample_value("bincount_queue_images"), r.get_sample_value("bincount_decoded_bytes_reserved")

    a.admit(3, 3600, 100.0)
    assert gauges() == (3, 3600)
    a.leave_queue(2)
    assert gauges() == (1, 3600)
    a.release_bytes(1000)
    assert gauges() == (1, 2600)


def test_a_full_queue_over_http_is_a_503_json_body_with_the_retry_after_header():
    """The route's answer for an admission refusal: the app in process, the model never loaded."""
    from starlette.testclient import TestClient

    from bincount.serve.app import Settings, create_app

    app = create_app(Settings(model="never-loaded", max_batch_size=1, budgets=Budgets(max_queue_images=2)))
    state = app.state.bincount
    state.model = types.SimpleNamespace(max_pixels=10**6)
    state.ready.set()
    state.admission.admit(2, 0, 100.0)
    state.admission.batch_done(1.5)  # 2 batches of 1.5 s ahead
    r = TestClient(app).post("/invocations", content=encoded("RGB", (40, 30), "JPEG"),
                             headers={"content-type": "image/jpeg"})
    assert r.status_code == 503 and r.headers["retry-after"] == "3"
    assert r.json() == {"error": "overloaded", "message": "the queue holds 2 image(s); 1 more would pass its "
                        "limit of 2 (--max-queue); retry later"}


# ======================================================================================================
# batcher.py
# ======================================================================================================
class ValueModel:
    """A model whose answer for an image is the value it holds: count = the tensor's first element.
    Records each batch it runs (the values) and, when given an Admission, whether it was busy then."""

    counts = [0, 1, 2]

    def __init__(self, admission: Admission | None = None, fail: Exception | None = None) -> None:
        self.batches: list[list[int]] = []
        self.busy: list[bool] = []
        self.admission, self.fail = admission, fail

    def predict(self, batch: torch.Tensor) -> dict:
        values = batch.reshape(len(batch), -1)[:, 0]
        self.batches.append([int(v) for v in values.tolist()])
        if self.admission is not None:
            self.busy.append(self.admission.busy)
        if self.fail is not None:
            raise self.fail
        n = len(batch)
        return {"pred_count": values.long(), "expected_count": values.float() / 2, "confidence": torch.full((n,), 0.5),
                "probs": torch.nn.functional.one_hot(values.long() % 3, 3).float()}


def image(v: int) -> torch.Tensor:
    return torch.full((2,), float(v))


def row(v: int) -> dict:
    return {"count": v, "expected_count": v / 2, "confidence": 0.5,
            "probabilities": {str(c): float(c == v % 3) for c in (0, 1, 2)}}


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def submit(loop, b: Batcher, values, **kwargs) -> list[asyncio.Future]:
    async def go():
        return [b.submit(image(v), **kwargs) for v in values]

    return loop.run_until_complete(go())


def take(b: Batcher, seconds: float = 5.0) -> tuple[list, bool, float]:
    """``b._take()`` on another thread, bounded: (the values taken, stop, seconds it took)."""
    out: list = []

    def run():
        start = time.monotonic()
        batch, stop = b._take()
        out.append(([int(item[0][0]) for item in batch], stop, time.monotonic() - start))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        b._queue.put(_STOP)  # let it end
        raise AssertionError("the batcher did not form a batch in time")
    assert out, "_take raised"
    return out[0]


def answers(loop, futures, seconds: float = 5.0) -> list:
    async def go():
        return await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), seconds)

    return loop.run_until_complete(go())


def test_a_new_batcher_defaults_and_starts_nothing_it_was_not_asked_to():
    b = Batcher(ValueModel(), start=False, transform=lambda t: t)
    assert (b.max_batch_size, b.max_wait, b.dropped, b.batches, b.images) == (16, 0.005, 0, 0, 0)
    assert (b._arriving, b._since_trim, b.counts, b._after, b._on_started) == (0, 0, [0, 1, 2], None, None)
    assert b.calibrate is False and not b._thread.is_alive()
    assert b._thread.name == "bincount-batcher" and b._thread.daemon is True
    assert Batcher(ValueModel(), max_batch_size="3", max_wait_ms=50, start=False).max_wait == 0.05
    assert Batcher(ValueModel(), calibrate=True, start=False).calibrate is False  # nothing to time without a transform
    assert Batcher(ValueModel(), calibrate=True, transform=lambda t: t, start=False).calibrate is True
    assert Batcher(ValueModel(), after=threading.main_thread(), start=False)._after is None
    other = threading.Thread(target=lambda: None)
    assert Batcher(ValueModel(), after=other, start=False)._after is other
    assert Abandon().reason is None


def test_a_batcher_starts_its_thread_by_default_and_close_ends_it_after_the_queue(loop, monkeypatch):
    crashed: list = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashed.append(args.exc_type))
    b = Batcher(ValueModel(), max_batch_size=2, max_wait_ms=0, start=False)
    futures = submit(loop, b, [4, 5, 7])
    b.start()
    b.close(5)
    assert not b._thread.is_alive() and crashed == []
    assert answers(loop, futures) == [row(4), row(5), row(7)]
    started = Batcher(ValueModel())
    assert started._thread.is_alive()
    started.close(5)
    assert not started._thread.is_alive() and crashed == []


def test_batches_fill_to_max_batch_size_and_not_one_past(loop):
    b = Batcher(ValueModel(), max_batch_size=2, max_wait_ms=0, start=False)
    submit(loop, b, [1, 2, 3, 4, 5])
    assert take(b)[:2] == ([1, 2], False)
    assert take(b)[:2] == ([3, 4], False)
    assert take(b)[:2] == ([5], False)
    b._queue.put(_STOP)
    assert take(b)[:2] == ([], True)


def test_stop_inside_a_batch_ends_it_with_what_was_taken(loop):
    b = Batcher(ValueModel(), max_batch_size=4, max_wait_ms=0, start=False)
    submit(loop, b, [1])
    b._queue.put(_STOP)
    assert take(b)[:2] == ([1], True)


def test_a_lone_image_goes_at_once_whatever_the_maximum_wait(loop):
    b = Batcher(ValueModel(), max_batch_size=8, max_wait_ms=2000, start=False)
    submit(loop, b, [3])
    values, stop, seconds = take(b)
    assert (values, stop) == ([3], False) and seconds < 1.0


def test_an_announced_image_that_never_comes_is_waited_for_the_maximum_wait_only(loop):
    b = Batcher(ValueModel(), max_batch_size=8, max_wait_ms=150, start=False)
    with b.arriving(2) as ticket:
        submit(loop, b, [3], ticket=ticket)
        assert (ticket, b._arriving) == ([1], 1)
        values, stop, seconds = take(b)
    assert (ticket, b._arriving) == ([0], 0)  # withdrawn on exit
    assert (values, stop) == ([3], False)
    assert 0.14 <= seconds < 2.0, seconds


class LateQueue(queue.Queue):
    """A queue that runs ``on_wait`` once, when the batcher first waits on it for an announced image: the
    image arrives while the batch waits, without a race."""

    on_wait = None

    def get(self, block=True, timeout=None):
        if timeout is not None and self.on_wait is not None:
            action, self.on_wait = self.on_wait, None
            action()
        return super().get(block, timeout)


@pytest.mark.parametrize("max_wait_ms", [900, 5000])  # 900: under a second, more than a stall
def test_an_image_announced_as_decoding_is_waited_for_and_joins_the_batch(loop, max_wait_ms):
    b = Batcher(ValueModel(), max_batch_size=8, max_wait_ms=max_wait_ms, start=False)
    b._queue = LateQueue()
    with b.arriving(1) as ticket:
        submit(loop, b, [3])
        b._queue.on_wait = lambda: submit(loop, b, [4], ticket=ticket)
        values, stop, seconds = take(b)
    assert (values, stop) == ([3, 4], False) and seconds < 1.0
    assert (ticket, b._arriving) == ([0], 0)


class RacingQueue(queue.Queue):
    """A queue on which an announced image is submitted (queued, then counted down) just after the batcher's
    look finds it empty: the interleaving of two threads, made deterministic."""

    on_empty = None

    def get_nowait(self):
        try:
            return super().get_nowait()
        except queue.Empty:
            if self.on_empty is not None:
                action, self.on_empty = self.on_empty, None
                action()
            raise


def test_an_image_submitted_between_the_look_and_the_count_joins_the_batch(loop):
    """It was left to the next batch (one more forward pass): the count was read after the look."""
    b = Batcher(ValueModel(), max_batch_size=8, max_wait_ms=5000, start=False)
    b._queue = RacingQueue()
    with b.arriving(1) as ticket:
        submit(loop, b, [3])
        b._queue.on_empty = lambda: submit(loop, b, [4], ticket=ticket)
        values, stop, seconds = take(b)
    assert (values, stop) == ([3, 4], False) and seconds < 1.0


def test_submitting_counts_the_ticket_and_the_announced_images_down(loop):
    b = Batcher(ValueModel(), start=False)
    with b.arriving(3) as ticket:
        assert b._arriving == 3
        submit(loop, b, [1], ticket=ticket)
        assert (ticket, b._arriving) == ([2], 2)
        submit(loop, b, [2, 3], ticket=ticket)
        assert (ticket, b._arriving) == ([0], 0)
    assert b._arriving == 0
    submit(loop, b, [4])  # no ticket: nothing counted
    assert b._arriving == 0
    assert b._queue.qsize() == 4


def hooks_with(queued: int, batch_s: float | None = None) -> Admission:
    a = Admission(Budgets(), 8)
    a.admit(queued, 0, 1000.0)
    if batch_s is not None:
        a.batch_done(batch_s)
    return a


def abandoned(metrics: Metrics, reason: str) -> float:
    return metrics.registry.get_sample_value("bincount_abandoned_images_total", {"reason": reason})


def test_images_of_a_client_that_went_away_are_dropped_and_counted_not_answered(loop):
    hooks, metrics = hooks_with(4), Metrics()
    b = Batcher(ValueModel(), max_batch_size=8, max_wait_ms=0, hooks=hooks, metrics=metrics, start=False)
    gone, waiting = Abandon(), Abandon()
    gone.reason = "disconnect"
    futures = [*submit(loop, b, [1], abandon=gone), *submit(loop, b, [2], abandon=waiting),
               *submit(loop, b, [3], abandon=gone), *submit(loop, b, [4])]
    assert take(b)[:2] == ([2, 4], False)
    loop.run_until_complete(asyncio.sleep(0))
    assert b.dropped == 2 and hooks.queued == 0  # all four left the queue
    assert (abandoned(metrics, "disconnect"), abandoned(metrics, "deadline")) == (2, 0)
    assert not futures[0].done() and not futures[2].done()  # its request already answered itself
    assert gone.reason == "disconnect" and waiting.reason is None


def test_an_image_past_its_deadline_is_dropped_and_its_request_told_at_once(loop):
    hooks, metrics = hooks_with(3), Metrics()
    b = Batcher(ValueModel(), max_batch_size=8, max_wait_ms=0, hooks=hooks, metrics=metrics, start=False)
    late = Abandon()
    now = time.monotonic()
    futures = [*submit(loop, b, [1], deadline=now - 1.0, abandon=late), *submit(loop, b, [2], deadline=now + 60),
               *submit(loop, b, [3], deadline=now - 1.0)]
    assert take(b)[:2] == ([2], False)
    loop.run_until_complete(asyncio.sleep(0))
    assert late.reason == "deadline"
    assert isinstance(futures[0].exception(), TooLate) and isinstance(futures[2].exception(), TooLate)
    assert not futures[1].done()
    assert b.dropped == 2 and hooks.queued == 0
    assert (abandoned(metrics, "deadline"), abandoned(metrics, "disconnect")) == (2, 0)


def test_an_image_whose_deadline_falls_within_the_next_batch_is_dropped(loop):
    b = Batcher(ValueModel(), max_batch_size=8, max_wait_ms=0, hooks=hooks_with(2, batch_s=10.0), start=False)
    now = time.monotonic()
    futures = submit(loop, b, [1], deadline=now + 5.0) + submit(loop, b, [2], deadline=now + 30.0)
    assert take(b)[:2] == ([2], False)  # 5 s left, a batch takes 10: no one would get the answer
    loop.run_until_complete(asyncio.sleep(0))
    assert isinstance(futures[0].exception(), TooLate) and b.dropped == 1


def test_before_any_batch_has_run_only_a_passed_deadline_drops(loop):
    b = Batcher(ValueModel(), max_batch_size=8, max_wait_ms=0, hooks=hooks_with(1), start=False)
    submit(loop, b, [1], deadline=time.monotonic() + 0.9)  # no batch time yet: counted as 0, not 1 s
    assert take(b)[:2] == ([1], False) and b.dropped == 0
    no_hooks = Batcher(ValueModel(), max_batch_size=8, max_wait_ms=0, start=False)
    submit(loop, no_hooks, [2], deadline=time.monotonic() + 0.9)
    assert take(no_hooks)[:2] == ([2], False) and no_hooks.dropped == 0
    assert no_hooks._batch_s() == 0.0
    assert Batcher(ValueModel(), hooks=hooks_with(0, batch_s=0.25), start=False)._batch_s() == 0.25


def test_a_disconnect_is_counted_as_such_even_when_its_deadline_has_passed_too(loop):
    metrics = Metrics()
    b = Batcher(ValueModel(), max_batch_size=8, max_wait_ms=0, metrics=metrics, start=False)
    gone = Abandon()
    gone.reason = "disconnect"
    futures = submit(loop, b, [1], deadline=time.monotonic() - 1.0, abandon=gone) + submit(loop, b, [2])
    assert take(b)[:2] == ([2], False)
    loop.run_until_complete(asyncio.sleep(0))
    assert not futures[0].done() and gone.reason == "disconnect"
    assert (abandoned(metrics, "disconnect"), abandoned(metrics, "deadline")) == (1, 0)


class Clock:
    """``time.perf_counter`` for the batcher: 0, 1, 2, ... seconds, one step per call."""

    def __init__(self) -> None:
        self.now, self.lock = -1.0, threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            self.now += 1.0
            return self.now


def test_each_answer_reaches_its_own_request_with_exact_timings_and_metrics(loop, monkeypatch):
    """Three images, batches of two, a scripted clock: submits at 0, 1, 2; batch one starts at 3, its
    forward at 4, done at 5; batch two 6, 7, 8. So every queue, preprocess and model time is known."""
    monkeypatch.setattr(batcher_module, "time", types.SimpleNamespace(perf_counter=Clock(), monotonic=time.monotonic))
    monkeypatch.setattr(batcher_module, "IDLE_S", 60.0)
    hooks, metrics = hooks_with(3), Metrics()
    model = ValueModel(admission=hooks)
    started: list[int] = []
    b = Batcher(model, max_batch_size=2, max_wait_ms=0, hooks=hooks, metrics=metrics, start=False,
                on_started=lambda: started.append(len(model.batches)))
    timings = [{}, {}, {}]
    futures = []
    for v, timing in zip([4, 5, 7], timings):
        futures += submit(loop, b, [v], timing=timing)
    b.start()
    assert answers(loop, futures) == [row(4), row(5), row(7)]
    b.close()
    assert started == [0] and model.batches == [[4, 5], [7]] and model.busy == [True, True]
    assert (b.batches, b.images, b._since_trim) == (2, 3, 2)
    assert timings == [{"queue_ms": 3000.0, "preprocess_ms": 1000.0, "model_ms": 1000.0, "batch": 2},
                       {"queue_ms": 2000.0, "preprocess_ms": 1000.0, "model_ms": 1000.0, "batch": 2},
                       {"queue_ms": 4000.0, "preprocess_ms": 1000.0, "model_ms": 1000.0, "batch": 1}]
    assert hooks.busy is False and hooks.batch_s == pytest.approx(2.0) and hooks.queued == 0
    value = metrics.registry.get_sample_value
    assert (value("bincount_batch_size_sum"), value("bincount_batch_size_count")) == (3, 2)
    assert value("bincount_images_total") == 3
    for stage, total, count in [("preprocess", 2.0, 2), ("model", 2.0, 2), ("queue", 9.0, 3)]:
        assert value("bincount_latency_seconds_sum", {"stage": stage}) == pytest.approx(total), stage
        assert value("bincount_latency_seconds_count", {"stage": stage}) == count, stage


def test_the_transform_runs_on_each_image_and_a_refused_one_fails_alone(loop):
    def transform(t):
        if int(t[0]) == 7:
            raise RuntimeError("cannot resize 7")
        return t + 10

    model = ValueModel()
    b = Batcher(model, max_batch_size=4, max_wait_ms=0, transform=transform, start=False)
    futures = submit(loop, b, [1, 7, 2])
    b.start()
    got = answers(loop, futures)
    b.close()
    assert model.batches == [[11, 12]]
    assert got[0] == row(11) and got[2] == row(12)
    assert isinstance(got[1], PreprocessError)
    assert str(got[1]) == "the bundle's transform failed: RuntimeError: cannot resize 7"


def test_a_failing_forward_fails_its_batch_only_and_is_logged_once(loop, caplog):
    boom = RuntimeError("out of memory")
    model = ValueModel(fail=boom)
    b = Batcher(model, max_batch_size=2, max_wait_ms=0, start=False)
    futures = submit(loop, b, [1, 2])
    with caplog.at_level(logging.INFO, logger="bincount.serve"):
        b.start()
        got = answers(loop, futures)
        model.fail = None
        after = answers(loop, submit(loop, b, [5]))
        b.close()
    assert got[0] is boom and got[1] is boom
    assert after == [row(5)]
    errors = [(r.levelno, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == [(logging.ERROR, "a batch of 2 failed: RuntimeError: out of memory")]


def test_predict_answers_one_image(loop):
    b = Batcher(ValueModel(), max_wait_ms=0)
    try:
        assert loop.run_until_complete(asyncio.wait_for(b.predict(image(8)), 5)) == row(8)
    finally:
        b.close()


def test_resolve_sets_a_result_or_an_exception_and_leaves_a_cancelled_future(loop):
    ok, bad, cancelled = loop.create_future(), loop.create_future(), loop.create_future()
    error = TooLate()
    cancelled.cancel()
    _resolve(ok, {"count": 2})
    _resolve(bad, error)
    _resolve(cancelled, {"count": 3})
    assert ok.result() == {"count": 2} and bad.exception() is error and cancelled.cancelled()


def run_bounded(fn, seconds: float, unblock) -> list:
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        unblock()
        t.join(5)
    return out


def test_after_a_burst_an_idle_wait_gives_freed_memory_back_once(monkeypatch):
    b = Batcher(ValueModel(), start=False)
    calls: list[int] = []

    def release():
        calls.append(b._since_trim)
        b._queue.put("next")

    monkeypatch.setattr(batcher_module, "IDLE_S", 0.01)
    monkeypatch.setattr(batcher_module, "release_free_memory", release)
    b._since_trim = 3
    assert run_bounded(b._next, 5, lambda: b._queue.put("stuck")) == ["next"]
    assert calls == [3] and b._since_trim == 0


def test_with_no_batch_since_the_last_release_the_wait_is_plain(monkeypatch):
    b = Batcher(ValueModel(), start=False)
    calls: list[int] = []
    monkeypatch.setattr(batcher_module, "IDLE_S", 0.01)
    monkeypatch.setattr(batcher_module, "release_free_memory", lambda: calls.append(1) or b._queue.put("released"))
    timer = threading.Timer(0.3, b._queue.put, ("queued",))
    timer.start()
    try:
        assert run_bounded(b._next, 5, lambda: None) == ["queued"]
    finally:
        timer.cancel()
    assert calls == []


class RecordingTransform:
    def __init__(self, fail: Exception | None = None) -> None:
        self.seen, self.fail, self.after_alive = [], fail, []

    def __call__(self, t):
        self.seen.append((tuple(t.shape), t.dtype))
        if self.fail is not None:
            raise self.fail
        return t.float()


def test_calibration_times_an_abid_sized_image_and_caps_batches_and_admission(monkeypatch):
    calls = []

    def best(model, example, largest):
        calls.append((model, example, largest))
        return 2, {1: 10.0, 2: 30.0}

    monkeypatch.setattr(bincount.serve.calibrate, "best_batch_size", best)
    monkeypatch.setattr(batcher_module, "release_free_memory", lambda: None)
    hooks, model, transform, ready = Admission(Budgets(), 8), ValueModel(), RecordingTransform(), threading.Event()
    b = Batcher(model, max_batch_size=8, transform=transform, calibrate=True, hooks=hooks, on_started=ready.set)
    try:
        assert ready.wait(5)
    finally:
        b.close()
    assert transform.seen == [((3, 400, 500), torch.uint8)]
    assert len(calls) == 1 and calls[0][0] is model and calls[0][2] == 8
    assert tuple(calls[0][1].shape) == (3, 400, 500) and calls[0][1].dtype == torch.float32
    assert b.max_batch_size == 2 and hooks.max_batch_size == 2


def test_a_failed_calibration_keeps_the_largest_and_says_why(monkeypatch, caplog):
    monkeypatch.setattr(batcher_module, "release_free_memory", lambda: None)
    hooks, ready = Admission(Budgets(), 3), threading.Event()
    with caplog.at_level(logging.INFO, logger="bincount.serve"):
        b = Batcher(ValueModel(), max_batch_size=8, transform=RecordingTransform(RuntimeError("boom")),
                    calibrate=True, hooks=hooks, on_started=ready.set)
        try:
            assert ready.wait(5)
        finally:
            b.close()
    warnings = [(r.levelno, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [(logging.WARNING, "timing batch sizes failed (RuntimeError: boom); batches stay capped at 8")]
    assert b.max_batch_size == 8 and hooks.max_batch_size == 8


def test_calibration_waits_for_the_thread_that_loaded_the_model(monkeypatch):
    monkeypatch.setattr(bincount.serve.calibrate, "best_batch_size", lambda m, e, n: (n, {}))
    monkeypatch.setattr(batcher_module, "release_free_memory", lambda: None)
    release, ready = threading.Event(), threading.Event()
    loader = threading.Thread(target=release.wait, args=(10,), daemon=True)
    loader.start()
    alive: list[bool] = []

    def transform(t):
        alive.append(loader.is_alive())
        return t.float()

    b = Batcher(ValueModel(), transform=transform, calibrate=True, after=loader, on_started=ready.set)
    try:
        deadline = time.monotonic() + 0.3  # give a batcher that did not wait time to show it
        while not alive and time.monotonic() < deadline:
            time.sleep(0.01)
        release.set()
        assert ready.wait(5)
    finally:
        b.close()
    assert alive == [False]


# ======================================================================================================
# connections.py
# ======================================================================================================
def fake_limits(soft: int):
    def getrlimit(which):
        return {resource.RLIMIT_NOFILE: (soft, resource.RLIM_INFINITY)}[which]

    return getrlimit


@pytest.mark.parametrize("soft, expected", [
    (1024, 896), (145, 17), (144, 16), (100, 16), (resource.RLIM_INFINITY, 65536 - 128),
])
def test_default_max_connections_is_the_file_limit_less_128_at_least_16(monkeypatch, soft, expected):
    monkeypatch.setattr(connections_module.resource, "getrlimit", fake_limits(soft))
    assert default_max_connections() == expected


def test_connection_limits_defaults_and_edges():
    limits = ConnectionLimits()
    assert (limits.header_timeout_s, limits.body_timeout_s, limits.keep_alive_s) == (10.0, 30.0, 5.0)
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert limits.max_connections == (65536 - 128 if soft == resource.RLIM_INFINITY else max(16, soft - 128))
    edge = ConnectionLimits(header_timeout_s=0.5, body_timeout_s=0.5, keep_alive_s=0.5, max_connections=2)
    assert (edge.header_timeout_s, edge.body_timeout_s, edge.keep_alive_s, edge.max_connections) == (0.5, 0.5, 0.5, 2)


@pytest.mark.parametrize("kwargs, message", [
    (dict(header_timeout_s=0), "header_timeout_s=0 must be positive seconds"),
    (dict(body_timeout_s=0.0), "body_timeout_s=0.0 must be positive seconds"),
    (dict(keep_alive_s=-1), "keep_alive_s=-1 must be positive seconds"),
    (dict(max_connections=1), "max_connections=1 must be at least 2 (one for /ping)"),
])
def test_connection_limits_refuse_impossible_values_naming_them(kwargs, message):
    with pytest.raises(ValueError) as e:
        ConnectionLimits(**{"max_connections": 100, **kwargs})
    assert str(e.value) == message


async def chunks_then_stall(parts: list[bytes], stall: asyncio.Event | None = None):
    for part in parts:
        await asyncio.sleep(0)  # each chunk arrives on a later turn of the loop, as from a socket
        yield part
    if stall is not None:
        await stall.wait()


def test_read_within_passes_every_chunk_that_arrives_in_time(loop):
    async def go():
        return [c async for c in read_within(chunks_then_stall([b"ab", b"", b"cd"]), 5.0)]

    assert loop.run_until_complete(asyncio.wait_for(go(), 5)) == [b"ab", b"", b"cd"]


def test_a_body_that_stops_arriving_is_a_408_at_its_deadline(loop):
    got: list[bytes] = []

    async def go():
        async for c in read_within(chunks_then_stall([b"ab"], asyncio.Event()), 0.1):
            got.append(c)

    start = time.monotonic()
    with pytest.raises(ServeError) as e:
        loop.run_until_complete(asyncio.wait_for(go(), 3))
    seconds = time.monotonic() - start
    assert got == [b"ab"]
    assert (e.value.status, e.value.code) == (408, "body_timeout")
    assert e.value.message == "the body did not arrive within 0.1 s (--body-timeout); the connection is closed"
    assert 0.09 <= seconds < 0.95, seconds


class Transport:
    """What the protocol writes and whether it closed, for a client at 127.0.0.1:8001."""

    def __init__(self, peer=("127.0.0.1", 8001)) -> None:
        self.peer, self.written, self.closed = peer, b"", False

    def get_extra_info(self, key, default=None):
        return {"sockname": ("127.0.0.1", 8000), "peername": self.peer}.get(key, default)

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def set_protocol(self, protocol) -> None: ...


class Timer:
    def __init__(self, delay, callback, args) -> None:
        self.delay, self.callback, self.args, self.cancelled = delay, callback, args, False

    def cancel(self) -> None:
        self.cancelled = True


class Task:
    def add_done_callback(self, callback) -> None: ...


class Loop:
    """The protocol's loop: timers recorded (fired by the test), tasks not run."""

    def __init__(self) -> None:
        self.timers: list[Timer] = []

    def call_later(self, delay, callback, *args) -> Timer:
        self.timers.append(Timer(delay, callback, args))
        return self.timers[-1]

    def create_task(self, coro) -> Task:
        coro.close()
        return Task()


async def no_app(scope, receive, send):  # never run: the tests stop at the header
    raise AssertionError("the app is not reached in these tests")


class Harness:
    """Connections of one uvicorn server (shared state) using ``protocol_class(limits)``."""

    def __init__(self, limits: ConnectionLimits) -> None:
        import uvicorn
        from uvicorn.server import ServerState

        self.config = uvicorn.Config(no_app, log_config=None, lifespan="off",
                                     http=protocol_class(limits), timeout_keep_alive=limits.keep_alive_s)
        self.config.load()
        self.state, self.loop = ServerState(), Loop()

    def connect(self, peer=("127.0.0.1", 8001)):
        p = self.config.http_protocol_class(config=self.config, server_state=self.state, app_state={},
                                            _loop=self.loop)
        p.connection_made(Transport(peer))
        return p


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    c = FakeClock()
    monkeypatch.setattr(connections_module, "time", types.SimpleNamespace(monotonic=c))
    return c


def test_a_new_connection_arms_the_header_timer_at_the_header_timeout(clock):
    h = Harness(ConnectionLimits(header_timeout_s=7.5, max_connections=10))
    p = h.connect()
    assert [(t.delay, t.callback, t.cancelled) for t in h.loop.timers] == [(7.5, p._header_late, False)]
    assert p.header_timer is h.loop.timers[0] and p.header_bytes == 0 and p.opened == 1000.0
    assert p.idle() is True
    p.connection_lost(ConnectionResetError())
    assert h.loop.timers[0].cancelled and p.header_timer is None
    assert p.transport.closed is False  # a reset connection is not closed again by uvicorn


def test_a_header_not_complete_in_time_gets_408_and_is_closed(clock, caplog):
    h = Harness(ConnectionLimits(header_timeout_s=2.5, max_connections=10))
    p = h.connect()
    p.data_received(b"GET /ping HTTP/1.1\r\nHo")
    assert p.header_bytes == 22 and len(h.loop.timers) == 1  # still the first timer
    with caplog.at_level(logging.INFO, logger="bincount.serve"):
        h.loop.timers[0].callback()
    assert p.transport.written == b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    assert p.transport.closed and p.header_timer is None
    assert [r.getMessage() for r in caplog.records] == [
        "closed a connection from 127.0.0.1:8001: no complete request header within 2.5 s (--header-timeout)"]


def test_a_connection_that_never_sent_a_byte_is_closed_silently_at_the_header_deadline(clock, caplog):
    h = Harness(ConnectionLimits(max_connections=10))
    p = h.connect()
    with caplog.at_level(logging.INFO, logger="bincount.serve"):
        h.loop.timers[0].callback()
    assert p.transport.closed and p.transport.written == b"" and caplog.records == []


def test_the_header_deadline_spares_a_request_in_progress_and_a_closing_connection(clock):
    h = Harness(ConnectionLimits(max_connections=10))
    busy, closing = h.connect(), h.connect()
    busy.data_received(b"GET / HTTP/1.1\r\n")
    busy.cycle = types.SimpleNamespace(response_complete=False)
    assert busy.idle() is False
    busy.header_timer.callback()
    assert not busy.transport.closed and busy.transport.written == b""
    closing.data_received(b"GET / HTTP/1.1\r\n")
    closing.transport.closed = True
    closing.header_timer.callback()
    assert closing.transport.written == b""
    done = h.connect()
    done.cycle = types.SimpleNamespace(response_complete=True)
    assert done.idle() is True


def test_a_complete_header_disarms_the_timer_and_the_next_request_rearms_it_counting_afresh(clock):
    h = Harness(ConnectionLimits(header_timeout_s=4.0, max_connections=10))
    p = h.connect()
    p.data_received(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
    first = h.loop.timers[0]
    assert first.cancelled and p.header_timer is None and p.idle() is False
    p.cycle = types.SimpleNamespace(response_complete=True)  # answered: idle between requests
    p.header_bytes = 500
    p.data_received(b"GET /a HTTP/1.1\r\n")
    assert len(h.loop.timers) == 2 and h.loop.timers[1].delay == 4.0 and not h.loop.timers[1].cancelled
    assert p.header_timer is h.loop.timers[1] and p.header_bytes == 17


def test_a_header_of_exactly_the_cap_is_kept_and_one_byte_more_gets_408(clock, caplog):
    h = Harness(ConnectionLimits(max_connections=10))
    start = b"GET / HTTP/1.1\r\nX-Big: "
    at_cap = h.connect()
    at_cap.data_received(start)
    at_cap.data_received(b"a" * (MAX_HEADER_BYTES - len(start)))
    assert at_cap.header_bytes == MAX_HEADER_BYTES and not at_cap.transport.closed
    over = h.connect(peer=("10.0.0.7", 4242))
    over.data_received(start)
    with caplog.at_level(logging.INFO, logger="bincount.serve"):
        over.data_received(b"a" * (MAX_HEADER_BYTES - len(start) + 1))  # in two parts, over the cap in all
    assert over.transport.closed and over.transport.written.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert over.header_timer is None
    assert [r.getMessage() for r in caplog.records] == [
        "closed a connection from 10.0.0.7:4242: its request header passed 65536 bytes"]


def test_the_log_names_a_client_without_an_address_as_a_client(clock, caplog):
    h = Harness(ConnectionLimits(max_connections=10))
    p = h.connect()
    p.data_received(b"GET")
    p.client = None
    with caplog.at_level(logging.INFO, logger="bincount.serve"):
        p.header_timer.callback()
    assert [r.getMessage() for r in caplog.records] == [
        "closed a connection from a client: no complete request header within 10 s (--header-timeout)"]


def test_at_the_limit_nothing_is_closed_past_it_the_oldest_idle_one_is(clock, caplog):
    h = Harness(ConnectionLimits(max_connections=3))
    conns = []
    for opened in (1000.0, 1001.0, 1002.0):
        clock.now = opened
        conns.append(h.connect())
    assert [c.transport.closed for c in conns] == [False, False, False]  # exactly the limit
    conns[0].cycle = types.SimpleNamespace(response_complete=False)  # the oldest is serving a request
    # which of the idle two is older is set against the set's own order, so a min() without its key shows
    order = [c for c in h.state.connections if c is not conns[0]]
    order[0].opened, order[1].opened = 1001.5, 1001.0
    clock.now = 1010.0
    with caplog.at_level(logging.INFO, logger="bincount.serve"):
        newest = h.connect()
    assert order[1].transport.closed and not order[0].transport.closed
    assert not conns[0].transport.closed and not newest.transport.closed
    assert [r.getMessage() for r in caplog.records] == [
        "at --max-connections 3: closed 1 connection(s) so far (oldest idle first)"]


def test_when_every_connection_serves_a_request_the_new_one_is_closed(clock):
    h = Harness(ConnectionLimits(max_connections=2))
    busy = [h.connect(), h.connect()]
    for c in busy:
        c.cycle = types.SimpleNamespace(response_complete=False)
    newest = h.connect()
    assert newest.transport.closed and not any(c.transport.closed for c in busy)


def test_evictions_are_logged_at_most_once_a_second_with_the_running_count(clock, caplog):
    h = Harness(ConnectionLimits(max_connections=2))
    h.connect(), h.connect()
    with caplog.at_level(logging.INFO, logger="bincount.serve"):
        for now in (1000.0, 1001.0, 1001.5, 1002.0, 1002.6):  # logged at 1000, 1001.5 (> 1 s), 1002.6
            clock.now = now
            h.connect()
    assert [r.getMessage() for r in caplog.records] == [
        "at --max-connections 2: closed 1 connection(s) so far (oldest idle first)",
        "at --max-connections 2: closed 3 connection(s) so far (oldest idle first)",
        "at --max-connections 2: closed 5 connection(s) so far (oldest idle first)"]


def test_uvicorn_config_uses_the_guarded_protocol_and_the_keep_alive(clock):
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    limits = ConnectionLimits(header_timeout_s=3.5, keep_alive_s=7.25, max_connections=50)
    config = uvicorn_config(no_app, "0.0.0.0", 8123, limits, log_config=None, timeout_graceful_shutdown=9,
                            lifespan="off")
    assert (config.app, config.host, config.port) == (no_app, "0.0.0.0", 8123)
    assert (config.timeout_keep_alive, config.timeout_graceful_shutdown, config.lifespan) == (7.25, 9, "off")
    assert isinstance(config.http, type) and issubclass(config.http, HttpToolsProtocol)
    config.load()
    loop = Loop()
    from uvicorn.server import ServerState

    p = config.http_protocol_class(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    p.connection_made(Transport())
    assert [t.delay for t in loop.timers] == [3.5]  # the limits given, not another's
    assert p.timeout_keep_alive == 7.25
