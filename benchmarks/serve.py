"""Serving throughput and latency: offline ``predict`` against its ceiling, and the servers on loopback.

    python benchmarks/serve.py                      # resnet18 at 224 px, random weights, 2 cores: ~4 min
    python benchmarks/serve.py --quick              # test_resnet at 32 px: the CI-sized smoke run
    python benchmarks/serve.py --model outputs/<run>/model --clients 1 8 32

Rows, all on one model and batch size in one run (these machines are noisy: compare ratios):
* the decode-and-forward ceiling (PIL decode, the bundle's transform, batched forward, no I/O layers),
  and the forward time of one preprocessed image (the floor of any single request's latency);
* ``bincount predict`` over a folder of the same images (Lightning, loader workers, CSV writer);
* each server at 1, 8 and 32 concurrent clients, single-image requests, with and without dynamic
  batching: bincount's Starlette/uvicorn server (raw ``image/jpeg`` bodies, SageMaker's contract) and
  LitServe when installed (JSON base64 bodies: see benchmarks/_litserve_app.py for why).
Servers run in their own process; the clients (httpx, asyncio) run in this one and share the CPU.
The goals checked at the end are issue 15's: batching at 32 clients >= 80% of offline predict
throughput; p50 at 1 client within 5 ms of the forward time (each request against its own forward, from
the server's ``Server-Timing`` header, and the p50 against the in-process forward).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.util
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import bin_jpegs, machine, print_table


def make_bundle(out: Path, backbone: str, img_size: int) -> Path:
    import torch

    from bincount.bundle import write_bundle
    from bincount.models.module import BinCounter

    torch.manual_seed(0)
    module = BinCounter(backbone=backbone, num_classes=6, min_count=0, pretrained=False, head={"name": "linear"})
    return write_bundle(out, module, img_size=img_size, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                        overflow="clip", max_pixels=40_000_000)


def make_images(folder: Path, n: int) -> list[Path]:
    """``n`` distinct files (predict and the servers see each once), copied from :func:`bin_jpegs`."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, source in enumerate(bin_jpegs(folder.parent / "sources", n)):
        out.append(folder / f"{i:05d}.jpg")
        out[-1].write_bytes(source.read_bytes())
    return out


def ceiling(model_path: Path, images: list[Path], batch_size: int) -> tuple[float, float, float]:
    """(decode+forward images/s at ``batch_size``, p50 forward ms of one preprocessed image, p50 decode ms)."""
    import torch

    from bincount.bundle import load_model

    model = load_model(model_path)
    blobs = [p.read_bytes() for p in images]
    model.predict([blobs[0]] * batch_size)  # warm-up
    start = time.perf_counter()
    for i in range(0, len(blobs), batch_size):
        model.predict(torch.stack([model.preprocess(b) for b in blobs[i:i + batch_size]]))
    rate = len(blobs) / (time.perf_counter() - start)
    one = model.preprocess(blobs[0]).unsqueeze(0)
    times = []
    for _ in range(30):
        t = time.perf_counter()
        model.predict(one)
        times.append((time.perf_counter() - t) * 1000)
    decode = []
    for b in blobs[:30]:
        t = time.perf_counter()
        model.preprocess(b)
        decode.append((time.perf_counter() - t) * 1000)
    return rate, statistics.median(times[5:]), statistics.median(decode)


def offline_predict(model_path: Path, folder: Path, n: int, batch_size: int, workers: int, tmp: Path) -> tuple[float, float]:
    """(steady images/s, fixed start-up s) of ``bincount predict``: timed over the folder once and twice.

    A run over the folder listed twice minus a run over it once cancels the process start, the imports,
    the model load and Lightning's set-up, which a CLI run pays once whatever its size.
    """
    def timed(inputs: list[str]) -> float:
        cmd = [sys.executable, "-m", "bincount.cli", "predict", str(model_path), *inputs, "-o", str(tmp / "p.csv"),
               "--batch-size", str(batch_size), "--num-workers", str(workers), "--no-progress"]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        return time.perf_counter() - start

    twin = tmp / "images-again"  # copies: predict counts a file reached twice once
    if not twin.exists():
        shutil.copytree(folder, twin)
    timed([str(folder)])  # imports warm in the page cache
    once, twice = timed([str(folder)]), timed([str(folder), str(twin)])
    if twice - once < 0.05 * once:
        print(f"warning: {n} images are too few to tell predict's rate from its start-up; use more --images")
    rate = n / max(twice - once, 1e-9)
    return rate, once - n / rate


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(kind: str, model_path: Path, batch: int, wait_ms: float,
                 log: Path | None = None) -> tuple[subprocess.Popen, str, str]:
    """The server in its own process, its log (stderr) in ``log``: a file, so a server that logs a lot never
    blocks on a full pipe."""
    port = free_port()
    log = log or Path(tempfile.mkstemp(prefix=f"bincount-bench-{kind}-", suffix=".log")[1])
    if kind == "bincount":
        cmd = [sys.executable, "-m", "bincount.cli", "serve", str(model_path), "--port", str(port),
               "--max-batch-size", str(batch), "--max-wait-ms", str(wait_ms)]
        health = "/ping"
    else:
        cmd = [sys.executable, str(Path(__file__).with_name("_litserve_app.py")), str(model_path), str(port), str(batch),
               str(wait_ms)]
        health = "/health"
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=tempfile.gettempdir(),
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(url + health, timeout=1).status_code == 200:
                return proc, url, kind
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{kind} server not healthy after 120 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def timing_parts(header: str | None) -> dict[str, float]:
    """``Server-Timing: decode;dur=2.1, model;dur=40.3;desc=...`` -> ``{"decode": 2.1, "model": 40.3}``."""
    parts = {}
    for metric in (header or "").split(","):
        name, _, rest = metric.strip().partition(";")
        if "dur=" in rest:
            parts[name] = float(rest.split("dur=", 1)[1].split(";", 1)[0])
    return parts


async def load(url: str, kind: str, blobs: list[bytes], clients: int,
               seconds: float) -> tuple[float, float, float, int, dict[str, float]]:
    """(requests/s, p50 ms, p99 ms, errors, median Server-Timing parts) for ``clients`` closed-loop clients.

    The parts (bincount's server only) add ``overhead``: each request's latency minus its own batch's
    model time, so goal 2 compares a request with the forward it actually got, on a machine whose
    speed varies from minute to minute.
    """
    import httpx

    if kind == "bincount":
        bodies = [(b, {"Content-Type": "image/jpeg"}) for b in blobs]
    else:
        bodies = [(f'{{"b64": "{base64.b64encode(b).decode()}"}}'.encode(), {"Content-Type": "application/json"})
                  for b in blobs]
    latencies: list[float] = []
    timings: list[dict[str, float]] = []
    errors = 0
    stop_at = 0.0

    async def client(i: int, http: httpx.AsyncClient) -> None:
        nonlocal errors
        k = i
        while time.perf_counter() < stop_at:
            body, headers = bodies[k % len(bodies)]
            k += clients
            t = time.perf_counter()
            r = await http.post(url + "/invocations", content=body, headers=headers)
            if r.status_code == 200 and "count" in r.json():
                latencies.append((time.perf_counter() - t) * 1000)
                parts = timing_parts(r.headers.get("server-timing"))
                if "model" in parts:
                    timings.append({**parts, "overhead": latencies[-1] - parts["model"]})
            else:
                errors += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        stop_at = time.perf_counter() + min(2.0, seconds / 4)  # warm-up: connections, first batches
        await asyncio.gather(*(client(i, http) for i in range(clients)))
        latencies.clear()
        timings.clear()
        start = time.perf_counter()
        stop_at = start + seconds
        await asyncio.gather(*(client(i, http) for i in range(clients)))
        elapsed = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    parts = {k: statistics.median(t[k] for t in timings) for k in timings[0]} if timings else {}
    return len(latencies) / elapsed, statistics.median(latencies) if latencies else float("nan"), q[98], errors, parts


def lean_client(url: str, blobs: list[bytes], n: int = 60) -> tuple[float, float]:
    """(p50 ms, median latency minus the request's own forward) with the standard library's http.client, one
    keep-alive connection: the server's share of a single request without an async client's own cost."""
    import http.client

    host, port = url.split("//", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    latencies, gaps = [], []
    for i in range(n + 5):
        start = time.perf_counter()
        conn.request("POST", "/invocations", body=blobs[i % len(blobs)], headers={"Content-Type": "image/jpeg"})
        response = response_of(conn)
        elapsed = (time.perf_counter() - start) * 1000
        if i >= 5:  # the first few warm the connection and the model
            latencies.append(elapsed)
            gaps.append(elapsed - timing_parts(response.getheader("server-timing"))["model"])
    conn.close()
    return statistics.median(latencies), statistics.median(gaps)


def response_of(conn):
    response = conn.getresponse()
    response.read()
    return response


async def ping_rtt(url: str, health: str, n: int = 50) -> float:
    """Median ms of an empty ``GET`` round trip: what the client, HTTP and the loop cost with no work."""
    import httpx

    async with httpx.AsyncClient(timeout=30) as http:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            await http.get(url + health)
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times[5:])


def overload(model_path: Path, blobs: list[bytes], args: argparse.Namespace, tmp: Path) -> None:
    """Issue 28's rows: one fresh bincount server (batching, default limits) through the peak, 4x and 16x
    its clients with a deadline each, then the hostile cases; the goals checked at the end."""
    from _overload import hostile_rows, overload_rows, tracebacks

    log = tmp / "overload-server.log"
    proc, url, _ = start_server("bincount", model_path, args.batch_size, args.max_wait_ms, log)
    try:
        levels = [args.peak_clients, 4 * args.peak_clients, 16 * args.peak_clients]
        rows, figures = overload_rows(url, proc.pid, blobs, levels, args.overload_seconds,
                                      args.deadline, args.settle)
        idle = figures[levels[0]]["rss_before"]  # served a warm-up burst, then idle for --settle seconds
        hostile, hostile_figures = hostile_rows(url, proc.pid, 20 if args.quick else 300, args.settle)
    finally:
        stop_server(proc)
    print_table(f"bincount serve past its capacity ({args.deadline:.0f} s client deadline, Retry-After honoured): "
                f"{machine()}", ["load", "goodput/s", "503 share", "p99 ms (good)", "/ping worst ms", "late or given up",
                                 "failed", "RSS MB before -> 5 s after", "CPU % 1 s after"], rows)
    print_table("Hostile requests to the same server", ["case", "statuses", "/ping worst ms",
                                                         "RSS MB before -> 5 s after"], hostile)
    peak = figures[args.peak_clients]["goodput"]
    for times, goal in ((4, 0.9), (16, 0.8)):
        share = figures[times * args.peak_clients]["goodput"] / peak if peak else float("nan")
        print(f"goal: goodput at {times}x the peak's clients = {share:.0%} of the peak's {peak:.1f}/s (goal >= {goal:.0%})")
    pings = [f["ping_worst"] for f in figures.values()] + [hostile_figures["stalled"]["ping_worst"]]
    print(f"goal: /ping worst case {max(pings):.0f} ms (goal < 200 ms)")
    print(f"goal: CPU in the second after the clients left, worst {max(f['cpu_after'] for f in figures.values()):.0f}% "
          "of a core (goal: idle)")
    after = [f["rss_after"] for f in (*figures.values(), *hostile_figures.values())]
    print(f"goal: resident memory 5 s after a burst at most {max(after) - idle:+.0f} MB from idle ({idle:.0f} MB after "
          "a warm-up burst; goal <= +100 MB)")
    print(f"goal: tracebacks in the server's log: {tracebacks(log)} (goal 0)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a bundle (default: a random-weight --backbone bundle)")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per server row")
    parser.add_argument("--workers", type=int, default=2, help="offline predict's loader workers")
    parser.add_argument("--servers", nargs="+", default=["bincount", "litserve"], choices=["bincount", "litserve"])
    parser.add_argument("--overload", action=argparse.BooleanOptionalAction, default=True,
                        help="the rows past capacity and the hostile cases (issue 28)")
    parser.add_argument("--peak-clients", type=int, default=8, help="the overload rows' peak; then 4x and 16x")
    parser.add_argument("--overload-seconds", type=float, default=10.0)
    parser.add_argument("--deadline", type=float, default=3.0, help="each overload client's deadline per request (s)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after a burst before memory is read")
    parser.add_argument("--quick", action="store_true", help="test_resnet at 32 px, 32 images, 1 s rows")
    args = parser.parse_args()
    if args.quick:
        args.backbone, args.img_size, args.images, args.seconds, args.clients = "test_resnet", 32, 32, 1.0, [1, 8]
        args.peak_clients, args.overload_seconds, args.settle = 2, 1.0, 1.0
    servers = [s for s in args.servers if s != "litserve" or importlib.util.find_spec("litserve")]
    if servers != args.servers:
        print('litserve is not installed (pip install litserve==0.2.19): its rows are left out')

    tmp = Path(tempfile.mkdtemp(prefix="bincount-bench-serve-"))
    try:
        return report(args, servers, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report(args: argparse.Namespace, servers: list[str], tmp: Path) -> int:
    model_path = args.model or make_bundle(tmp / "model", args.backbone, args.img_size)
    images = make_images(tmp / "images", args.images)
    blobs = [p.read_bytes() for p in images]
    rate, forward_ms, decode_ms = ceiling(model_path, images, args.batch_size)
    predict_rate, start_up = offline_predict(model_path, tmp / "images", len(images), args.batch_size, args.workers,
                                             tmp)
    rows = [["decode + forward ceiling", "-", f"batch {args.batch_size}", rate, "-", "-", "-"],
            ["forward of one image", "-", "batch 1", 1000 / forward_ms, forward_ms, "-", "-"],
            ["decode + preprocess of one", "-", "-", 1000 / decode_ms, decode_ms, "-", "-"],
            ["bincount predict (steady)", "-", f"batch {args.batch_size}", predict_rate, "-", "-", "-"]]
    measured: dict[tuple[str, str, int], tuple[float, float, float, int, dict[str, float]]] = {}
    for kind in servers:
        for mode, batch in (("batching", args.batch_size), ("no batching", 1)):
            proc, url, _ = start_server(kind, model_path, batch, args.max_wait_ms)
            try:
                if kind == "bincount" and mode == "batching":
                    rtt = asyncio.run(ping_rtt(url, "/ping"))
                    lean = lean_client(url, blobs, n=20 if args.quick else 60)
                for clients in args.clients:
                    result = asyncio.run(load(url, kind, blobs, clients, args.seconds))
                    measured[(kind, mode, clients)] = result
                    rows.append([f"{kind} serve ({mode})", clients, f"max {batch}", result[0], result[1],
                                 result[2], result[3]])
            finally:
                stop_server(proc)
    print_table(f"Serving {model_path if args.model else f'{args.backbone} (random weights)'} at "
                f"{args.img_size} px, {len(images)} images: {machine()}",
                ["path", "clients", "batch", "images/s", "p50 ms", "p99 ms", "errors"], rows)
    print(f"bincount predict start-up (process, imports, model, Lightning): {start_up:.1f} s per run")
    top = max(args.clients)
    if ("bincount", "batching", top) in measured:
        share = measured[("bincount", "batching", top)][0] / predict_rate
        print(f"goal 1: bincount batching at {top} clients = {share:.0%} of offline predict (goal >= 80%)")
    if ("bincount", "batching", 1) in measured:
        p50, parts = measured[("bincount", "batching", 1)][1], measured[("bincount", "batching", 1)][4]
        rest = parts["overhead"] - parts["decode"] - parts["read"] - parts["queue"] - parts.get("preprocess", 0)
        print(f"goal 2: bincount at 1 client, latency minus the request's own forward (Server-Timing model "
              f"{parts['model']:.1f} ms): median {parts['overhead']:.1f} ms (goal <= 5 ms) = read {parts['read']:.1f} + "
              f"decode {parts['decode']:.1f} + queue {parts['queue']:.1f} + preprocess {parts.get('preprocess', 0):.1f} "
              f"+ HTTP, JSON and the client {rest:.1f} "
              f"(an empty GET /ping round trip: {rtt:.1f}); "
              f"p50 {p50:.1f} ms against the in-process forward {forward_ms:.1f} ms (+{p50 - forward_ms:.1f}); "
              f"the server's model time / the in-process forward: {parts['model'] / forward_ms:.2f} (goal <= 1.10)")
        print(f"goal 2 with the standard library's http.client (no async client's own cost): latency minus the "
              f"request's own forward {lean[1]:.1f} ms (goal <= 5 ms), p50 {lean[0]:.1f} ms")
    for clients in args.clients:
        if ("litserve", "batching", clients) in measured and ("bincount", "batching", clients) in measured:
            ratio = measured[("bincount", "batching", clients)][0] / measured[("litserve", "batching", clients)][0]
            print(f"bincount / LitServe throughput at {clients} clients (batching): {ratio:.2f}x")
    if args.overload and "bincount" in servers:
        overload(model_path, blobs, args, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
