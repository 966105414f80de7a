"""The overload benchmark's client (benchmarks/_overload.py) honours Retry-After within its deadline and counts
a request as good only when answered 200 in time: docs/serving.md's goodput figures rest on it."""

from __future__ import annotations

import asyncio
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _overload import Counts, _one_request  # noqa: E402


class Refusing(BaseHTTPRequestHandler):
    """Answers 503 with ``Retry-After: 1`` to the first ``refusals`` POSTs, then 200."""

    refusals = 1
    seen: list[float] = []

    def do_POST(self):  # noqa: N802 - the standard library's name
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append(time.monotonic())
        refuse = len(type(self).seen) <= type(self).refusals
        self.send_response(503 if refuse else 200)
        if refuse:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Refusing.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def run(url: str, deadline_s: float) -> tuple[Counts, float]:
    import httpx

    async def go():
        counts = Counts()
        async with httpx.AsyncClient() as http:
            start = time.perf_counter()
            await _one_request(http, url, b"jpeg", deadline_s, counts, random.Random(0))
            return counts, time.perf_counter() - start

    return asyncio.run(go())


def test_a_503_is_retried_after_retry_after_with_jitter_and_then_counted_good(server):
    counts, elapsed = run(server, deadline_s=3.0)
    assert counts.refused == 1 and counts.responses == 2 and len(counts.good) == 1
    gap = Refusing.seen[1] - Refusing.seen[0]
    assert 0.5 <= gap < 1.6, f"retried after {gap:.2f} s: Retry-After 1 s x a jitter in [0.5, 1.5)"
    assert counts.good[0] == pytest.approx(elapsed, abs=0.05)


def test_a_retry_that_would_pass_the_deadline_is_given_up_at_the_deadline(server):
    Refusing.refusals = 10
    try:
        counts, elapsed = run(server, deadline_s=0.4)
    finally:
        Refusing.refusals = 1
    assert counts.good == [] and counts.gave_up == 1 and len(Refusing.seen) == 1
    assert elapsed < 0.6, f"waited {elapsed:.2f} s past a 0.4 s deadline"
