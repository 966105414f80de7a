"""Deadlines past admission and memory after a burst (issue 28's benchmark findings, pinned).

- An image whose deadline would pass before its batch is done is dropped when the batcher reaches it, and
  its request hears 503 then, not at its deadline; the model never computes it.
- A request is admitted only when the queue's estimated wait fits in ``ADMIT_SHARE`` of its time left
  (the rest is for decoding and the way back).
- Once the server is idle after a burst, freed memory is handed back to the system once, not on every
  idle second.
- Objects alive at start-up are frozen out of the collector's full passes (they were /ping's worst pauses).
"""

from __future__ import annotations

import time

import pytest
from conftest import write_tiny_bundle
from helpers.overload import in_thread, jpeg, post, serving, wait_until

import bincount.serve.batcher
from bincount.serve.admission import ADMIT_SHARE, DEADLINE_HEADER
from bincount.serve.memory import release_free_memory


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return write_tiny_bundle(tmp_path_factory.mktemp("deadlines") / "model")


def test_an_image_that_cannot_finish_before_its_deadline_is_dropped_when_reached(bundle):
    with serving(bundle, delay=2.0) as (url, app, model):  # no batch has run: the second request is admitted
        busy, out = in_thread(post, url, jpeg(0))
        wait_until(lambda: app.state.bincount.admission.busy)
        start = time.monotonic()
        r = post(url, jpeg(1), **{DEADLINE_HEADER: "3000"})
        elapsed = time.monotonic() - start
        busy.join(10)
    # the first batch took 2 s, so when the batcher reached this image (~2 s) it could not be done by 3 s
    assert r.status_code == 503 and r.json()["error"] == "overloaded", r.text
    assert "would have, before its batch was done" in r.json()["message"] and int(r.headers["retry-after"]) >= 1
    assert elapsed < 2.8, f"answered after {elapsed:.2f} s: at its deadline, not when it was dropped"
    assert out[0].status_code == 200 and model.computed == 1
    assert app.state.bincount.batcher.dropped == 1


def test_admission_leaves_a_share_of_the_deadline_for_decoding_and_the_answer(bundle):
    with serving(bundle, delay=1.0) as (url, app, model):
        assert post(url, jpeg(0)).status_code == 200  # one batch of ~1 s: the estimate
        admission = app.state.bincount.admission
        busy, out = in_thread(post, url, jpeg(1))
        wait_until(lambda: admission.busy)
        wait = admission.estimate_s(1)  # the batch running + this one's
        left_ms = int(wait / ADMIT_SHARE * 1000 * 0.97)  # more than the wait, less than the wait / the share
        assert wait * 1000 < left_ms
        r = post(url, jpeg(2), **{DEADLINE_HEADER: str(left_ms)})
        busy.join(10)
    assert r.status_code == 503 and "does not fit in 80% of this request's deadline" in r.json()["message"], r.text
    assert out[0].status_code == 200 and model.computed == 2


def test_freed_memory_goes_back_once_per_burst_when_idle(bundle, monkeypatch):
    assert release_free_memory() is (__import__("platform").libc_ver()[0] == "glibc")
    calls = []
    monkeypatch.setattr(bincount.serve.batcher, "IDLE_S", 0.3)
    monkeypatch.setattr(bincount.serve.batcher, "release_free_memory", lambda: calls.append(time.monotonic()))
    with serving(bundle) as (url, app, model):
        time.sleep(1.0)
        assert calls == [], "nothing has been served: nothing to give back"
        for i in range(3):
            assert post(url, jpeg(i)).status_code == 200
        done = time.monotonic()
        wait_until(lambda: calls, 5)
        time.sleep(1.0)  # idle on: no second call
        assert len(calls) == 1 and calls[0] - done >= 0.1  # after an idle wait, not as the burst ended
        assert post(url, jpeg(4)).status_code == 200
        wait_until(lambda: len(calls) == 2, 5)


def test_start_up_objects_are_frozen_out_of_full_collections(bundle):
    import gc

    gc.unfreeze()
    try:
        with serving(bundle) as (url, app, model):
            frozen = gc.get_freeze_count()
            start = time.perf_counter()
            gc.collect()
            pause = time.perf_counter() - start
            assert post(url, jpeg()).status_code == 200
        # torch, the model and the rest of this process: a full pass over them took hundreds of ms
        assert frozen > 100_000, frozen
        assert pause < 0.05, f"a full collection took {pause * 1000:.0f} ms"
    finally:
        gc.unfreeze()
