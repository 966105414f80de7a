"""Overload rows for ``benchmarks/serve.py``: the peak, then 4x and 16x its clients, and the hostile cases.

Each client is a closed loop with a per-request deadline (3 s by default) that it sends as
``X-Bincount-Deadline-Ms`` and enforces as its own timeout. On 503 it honours ``Retry-After`` as AWS SDK
clients back off: it waits that long times a jitter in [0.5, 1.5), never past its deadline, then retries
the same request; a request still unanswered at its deadline is given up. A request is good only when it
is answered 200 within its deadline; goodput is good requests per second.

Beside the clients, a probe in its own process sends ``GET /ping`` every 50 ms (the worst time is the row's
``/ping worst``).
After each level the clients leave at once (their requests in flight abandoned, their connections closed);
the server's CPU is read over the next second and its resident memory 5 s later, against before the level.

The hostile phase repeats the issue's cases against the same server: a request of eight 6324x6324 PNGs
(4.9 KB each, 120 MB decoded each), JSON nested 100,000 deep and a 5,000-digit number, and 300
connections that stall mid-header and mid-body while ``/ping`` is timed. Then the server's log is searched
for tracebacks; there should be none.

Why by hand: no load tool we could depend on (locust, k6, wrk) has Retry-After-honouring clients with a
deadline per request and a goodput count; this module does just that on httpx and asyncio.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEADLINE_HEADER = "X-Bincount-Deadline-Ms"


class Counts:
    def __init__(self) -> None:
        self.good: list[float] = []  # latencies (s) of requests answered 200 within their deadline
        self.late = self.refused = self.failed = self.gave_up = self.responses = 0


async def _one_request(http, url: str, body: bytes, deadline_s: float, counts: Counts, rng: random.Random) -> None:
    import httpx

    start = time.perf_counter()
    give_up = start + deadline_s
    while True:
        left = give_up - time.perf_counter()
        if left <= 0.001:
            counts.gave_up += 1
            return
        try:
            r = await http.post(url + "/invocations", content=body, timeout=left,
                                headers={"Content-Type": "image/jpeg", DEADLINE_HEADER: str(int(left * 1000))})
        except httpx.TimeoutException:
            counts.late += 1
            return
        except httpx.TransportError:
            counts.failed += 1
            return
        counts.responses += 1
        if r.status_code == 200:
            elapsed = time.perf_counter() - start
            if elapsed <= deadline_s:
                counts.good.append(elapsed)
            else:
                counts.late += 1
            return
        if r.status_code != 503:
            counts.failed += 1
            return
        counts.refused += 1
        wait = float(r.headers.get("retry-after", "1")) * rng.uniform(0.5, 1.5)
        await asyncio.sleep(max(0.0, min(wait, give_up - time.perf_counter())))


PROBE = """
import http.client, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
conn, worst, end = http.client.HTTPConnection(host, port, timeout=10), 0.0, time.perf_counter() + seconds
while time.perf_counter() < end:
    t = time.perf_counter()
    try:
        conn.request("GET", "/ping")
        response = conn.getresponse()
        response.read()
        ms = (time.perf_counter() - t) * 1000 if response.status == 200 else float("inf")
    except (OSError, http.client.HTTPException):
        ms = float("inf")
        conn.close()
    worst = max(worst, ms)
    time.sleep(0.05)
print(worst)
"""


def _ping_probe(url: str, seconds: float) -> subprocess.Popen:
    """``GET /ping`` every 50 ms for ``seconds`` from its own process; it prints the worst time (ms).

    Not from this process: here it waited behind 128 clients' callbacks and the GIL, and the figure was
    the benchmark's, not the server's."""
    host, port = url.split("//", 1)[1].split(":")
    return subprocess.Popen([sys.executable, "-c", PROBE, host, port, str(seconds)], stdout=subprocess.PIPE, text=True)


async def _level(url: str, blobs: list[bytes], clients: int, seconds: float, deadline_s: float) -> tuple[Counts, float,
                                                                                                           float]:
    """(counts, measured seconds, /ping worst ms) for ``clients`` closed-loop clients; they leave abruptly."""
    import httpx

    counts = Counts()
    rng = random.Random(clients)

    async def client(i: int, http) -> None:
        k = i
        while True:
            await _one_request(http, url, blobs[k % len(blobs)], deadline_s, counts, rng)
            k += clients

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    probe = _ping_probe(url, seconds)
    async with httpx.AsyncClient(limits=limits) as http:
        tasks = [asyncio.ensure_future(client(i, http)) for i in range(clients)]
        start = time.perf_counter()
        await asyncio.sleep(seconds)
        for t in tasks:  # the clients leave: requests in flight are abandoned, connections closed
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        elapsed = time.perf_counter() - start
    worst = float(probe.communicate(timeout=30)[0].strip() or "inf")
    return counts, elapsed, worst


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MB, from /proc (Linux); NaN elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return float("nan")


def cpu_over(pid: int, seconds: float = 1.0) -> float:
    """The process's CPU use (100% = one core) over the next ``seconds``."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds * 100


def overload_rows(url: str, pid: int, blobs: list[bytes], levels: list[int], seconds: float,
                  deadline_s: float = 3.0, settle_s: float = 5.0) -> tuple[list[list], dict[int, dict]]:
    """A row for each number of clients in ``levels``, in turn, and each level's figures by client count."""
    rows, figures = [], {}
    asyncio.run(_level(url, blobs, levels[0], min(2.0, seconds), deadline_s))  # warm-up: connections, first batches
    time.sleep(settle_s)
    for clients in levels:
        before = rss_mb(pid)
        counts, elapsed, ping_worst = asyncio.run(_level(url, blobs, clients, seconds, deadline_s))
        cpu_after = cpu_over(pid, 1.0)
        time.sleep(max(0.0, settle_s - 1.0))
        after = rss_mb(pid)
        good = len(counts.good)
        p99 = statistics.quantiles(counts.good, n=100)[98] * 1000 if good > 1 else float("nan")
        share_503 = counts.refused / counts.responses if counts.responses else 0.0
        figures[clients] = dict(goodput=good / elapsed, share_503=share_503, p99=p99, ping_worst=ping_worst,
                                rss_before=before, rss_after=after, cpu_after=cpu_after, late=counts.late,
                                failed=counts.failed, gave_up=counts.gave_up)
        rows.append([f"{clients} clients, {deadline_s:.0f} s deadline", good / elapsed, f"{share_503:.0%}", p99,
                     ping_worst, counts.late + counts.gave_up, counts.failed, f"{before:.0f} -> {after:.0f}",
                     cpu_after])
    return rows, figures


def png_bomb(side: int = 6324) -> bytes:
    """A PNG of ``side`` x ``side`` black pixels: a few KB that decode to side*side*3 bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (side, side)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _stall(port: int, n: int) -> list[socket.socket]:
    out = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if i % 2:
            s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-")
        else:
            s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 5000\r\n\r\n"
                      + b"\xff" * 100)
        out.append(s)
    return out


def hostile_rows(url: str, pid: int, stalled: int = 300, settle_s: float = 5.0) -> tuple[list[list], dict[str, dict]]:
    """The issue's hostile cases in turn: (case, statuses seen, /ping worst ms, RSS before -> 5 s after)."""
    import base64
    import json

    import httpx

    bomb = base64.b64encode(png_bomb()).decode()
    cases = {
        "8 PNG bombs (6324x6324) in one request": (json.dumps({"instances": [{"b64": bomb}] * 8}).encode(),
                                                    "application/json"),
        "JSON nested 100,000 deep": (b"[" * 100_000 + b"]" * 100_000, "application/json"),
        "a 5,000-digit integer": (b'{"instances": [' + b"9" * 5000 + b"]}", "application/json"),
    }
    rows, figures = [], {}
    for case, (body, kind) in cases.items():
        before = rss_mb(pid)
        statuses = [httpx.post(url + "/invocations", content=body, headers={"Content-Type": kind}, timeout=60).status_code
                    for _ in range(4)]
        time.sleep(settle_s)
        figures[case] = dict(statuses=statuses, rss_before=before, rss_after=rss_mb(pid))
        rows.append([case, " ".join(map(str, sorted(set(statuses)))), "-", f"{before:.0f} -> {rss_mb(pid):.0f}"])
    port = int(url.rsplit(":", 1)[1])
    before = rss_mb(pid)
    socks = _stall(port, stalled)
    worst = 0.0
    with httpx.Client(timeout=10) as http:
        for _ in range(20):
            t = time.perf_counter()
            ok = http.get(url + "/ping").status_code == 200
            worst = max(worst, (time.perf_counter() - t) * 1000 if ok else float("inf"))
            time.sleep(0.1)
    for s in socks:
        s.close()
    time.sleep(settle_s)
    figures["stalled"] = dict(ping_worst=worst, rss_before=before, rss_after=rss_mb(pid))
    rows.append([f"{stalled} connections stalled mid-header/body", "-", worst, f"{before:.0f} -> {rss_mb(pid):.0f}"])
    return rows, figures


def tracebacks(log: Path) -> int:
    return log.read_text(errors="replace").count("Traceback (most recent call last)")
