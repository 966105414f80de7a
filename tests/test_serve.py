"""``bincount serve`` over real HTTP on loopback: answers, batching, every refusal, S3, the container, SIGTERM.

One tiny bundle for the whole file, written straight from a ``BinCounter`` with random weights (what
is tested is that serving gives ``predict``'s numbers to the right request, not accuracy); the head's
weights are scaled so that different images get clearly different probabilities. The in-process
server runs uvicorn in a thread; the container entry and SIGTERM run a real subprocess.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import os
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import threading
import time
import zlib
from pathlib import Path

import httpx
import pytest
import torch
from PIL import Image
from conftest import write_tiny_bundle
from helpers.serve import answers_ping, running
from helpers.train import read_csv
from s3_server import free_port, s3_client, s3_endpoint, stop_process, wait_http  # noqa: F401

from bincount import cli
from bincount.bundle import BUNDLE_FILE, WEIGHTS_FILE, load_model
from bincount.serve.app import Settings, create_app
from bincount.answers import answer_rows
from bincount.serve.inputs import DEFAULT_MAX_BODY_BYTES, Limits

N_IMAGES = 64
BODY_LIMIT = 1 << 20  # the in-process server's --max-body-bytes (the default is SageMaker's 6,291,456)
MAX_INSTANCES = 8


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("serve") / "model")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """64 different small JPEGs (noise over a colour ramp)."""
    folder = tmp_path_factory.mktemp("serve_images")
    gen = torch.Generator().manual_seed(1)
    out = []
    for i in range(N_IMAGES):
        base = torch.linspace(0, 255, 48).view(1, 1, 48) * (i + 1) / N_IMAGES
        pixels = (base + torch.rand(3, 36, 48, generator=gen) * 120).clamp(0, 255).to(torch.uint8)
        path = folder / f"img{i:02d}.jpg"
        Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(path, quality=90)
        out.append(path)
    return out


@pytest.fixture(scope="module")
def expected(bundle, images) -> list[dict]:
    """Each image's answer, computed one image at a time through ``load_model``."""
    model = load_model(bundle)
    return [answer_rows(model.predict([p.read_bytes()]), model.counts)[0] for p in images]


@pytest.fixture(scope="module")
def server(bundle):
    limits = Limits(max_body_bytes=BODY_LIMIT, max_instances=MAX_INSTANCES)
    with running(Settings(model=str(bundle), limits=limits, max_batch_size=16, max_wait_ms=20)) as (url, app):
        yield url, app


def post_image(url: str, path: Path, kind: str = "image/jpeg") -> httpx.Response:
    return httpx.post(url + "/invocations", content=path.read_bytes(), headers={"content-type": kind}, timeout=30)


def same(got: dict, want: dict) -> None:
    assert got["count"] == want["count"]
    assert got["probabilities"].keys() == want["probabilities"].keys()
    for k, p in want["probabilities"].items():
        assert got["probabilities"][k] == pytest.approx(p, abs=2e-6), k
    assert got["expected_count"] == pytest.approx(want["expected_count"], abs=1e-5)
    assert got["confidence"] == pytest.approx(want["confidence"], abs=2e-6)


# -- answers ----------------------------------------------------------------------------------------------
def test_ping_and_one_image_answer(server, images, expected, bundle):
    url, _ = server
    assert httpx.get(url + "/ping").status_code == 200
    for kind in ("image/jpeg", "application/x-image", "image/jpeg; charset=binary"):
        r = post_image(url, images[0], kind)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"count", "expected_count", "confidence", "probabilities", "model"}
        same(body, expected[0])
        assert body["model"]["backbone"] == "test_resnet"
    png = io.BytesIO()
    Image.open(images[3]).save(png, format="PNG")
    r = httpx.post(url + "/invocations", content=png.getvalue(), headers={"content-type": "image/png"})
    assert r.status_code == 200 and r.json()["probabilities"].keys() == expected[3]["probabilities"].keys()


def test_server_timing_says_where_a_requests_time_went(server, images):
    url, _ = server
    for body, kind, most in [(images[0].read_bytes(), "image/jpeg", 1),
                             (json.dumps({"instances": [{"b64": base64.b64encode(p.read_bytes()).decode()}
                                                        for p in images[:4]]}).encode(), "application/json", 4)]:
        start = time.perf_counter()
        r = httpx.post(url + "/invocations", content=body, headers={"content-type": kind}, timeout=30)
        elapsed_ms = (time.perf_counter() - start) * 1000
        assert r.status_code == 200, r.text
        metrics = [m.strip() for m in r.headers["server-timing"].split(",")]
        assert [m.split(";")[0] for m in metrics] == ["read", "decode", "queue", "preprocess", "model"]
        durations = {m.split(";")[0]: float(m.split("dur=")[1].split(";")[0]) for m in metrics}
        assert durations["model"] > 0 and durations["preprocess"] > 0 and all(d >= 0 for d in durations.values())
        assert sum(durations.values()) <= elapsed_ms  # the server's parts fit inside what the client waited
        batch = int(re.search(r'desc="batch of (\d+)"', metrics[-1]).group(1))
        assert 1 <= batch <= most


def test_served_answers_equal_predicts(server, images, bundle, tmp_path, capsys):
    url, _ = server
    out = tmp_path / "p.csv"
    assert cli.main(["predict", str(bundle), str(images[0].parent), "-o", str(out), "--num-workers", "0",
                     "--no-progress"]) == 0, capsys.readouterr().err
    by_path = {r["path"]: r for r in read_csv(out)}
    instances = [{"b64": base64.b64encode(p.read_bytes()).decode()} for p in images[:MAX_INSTANCES]]
    r = httpx.post(url + "/invocations", json={"instances": instances}, timeout=30)
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    assert len(predictions) == MAX_INSTANCES
    for path, got in zip(images, predictions):
        row = by_path[str(path)]
        want = {"count": int(row["pred_count"]), "expected_count": float(row["expected_count"]),
                "confidence": float(row["confidence"]),
                "probabilities": {k[5:]: float(v) for k, v in row.items() if k.startswith("prob_")}}
        same(got, want)


def test_64_concurrent_clients_each_get_their_own_answer(server, images, expected):
    url, app = server
    distinct = {tuple(e["probabilities"].values()) for e in expected}
    assert len(distinct) == N_IMAGES  # a mixed-up answer would show
    batches_before = app.state.bincount.batcher.batches

    async def one(client: httpx.AsyncClient, i: int) -> tuple[int, dict]:
        r = await client.post(url + "/invocations", content=images[i].read_bytes(), headers={"content-type": "image/jpeg"})
        assert r.status_code == 200, r.text
        return i, r.json()

    async def all_at_once() -> list[tuple[int, dict]]:
        limits = httpx.Limits(max_connections=N_IMAGES)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            return await asyncio.gather(*(one(client, i) for i in range(N_IMAGES)))

    for i, got in asyncio.run(all_at_once()):
        same(got, expected[i])
    batches = app.state.bincount.batcher.batches - batches_before
    assert batches < N_IMAGES, "no two requests shared a batch"


# -- refusals ---------------------------------------------------------------------------------------------
def _bomb_png() -> bytes:
    """A 1x1 PNG whose header declares 30000x30000 pixels (CRC fixed, so only the size is wrong)."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 8  # signature, then length + "IHDR"
    data[ihdr:ihdr + 8] = struct.pack(">II", 30000, 30000)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])))
    return bytes(data)


def _jpeg(images) -> bytes:
    return images[5].read_bytes()


BAD = [  # (case, method, path, content-type, body or a function of the images, status, code, text in message)
    ("no-content-type", "POST", "/invocations", None, _jpeg, 415, "unsupported_media_type", "none"),
    ("text-plain", "POST", "/invocations", "text/plain", b"hello", 415, "unsupported_media_type", "text/plain"),
    ("empty-body", "POST", "/invocations", "image/jpeg", b"", 400, "empty_body", "empty"),
    ("malformed-json", "POST", "/invocations", "application/json", b'{"instances": [', 400, "malformed_json", "not valid JSON"),
    ("json-list", "POST", "/invocations", "application/json", b"[1, 2]", 400, "bad_shape", "'instances'"),
    ("json-empty-instances", "POST", "/invocations", "application/json", b'{"instances": []}', 400, "bad_shape", "empty"),
    ("json-wrong-key", "POST", "/invocations", "application/json", b'{"instances": [{"url": "x"}]}', 400, "bad_shape",
     "instances[0]"),
    ("bad-base64", "POST", "/invocations", "application/json", b'{"instances": [{"b64": "@@@"}]}', 400, "bad_base64",
     "instances[0]"),
    ("too-many-instances", "POST", "/invocations", "application/json",
     lambda im: ('{"instances": [%s]}' % ",".join(['{"b64": "AA=="}'] * (MAX_INSTANCES + 1))).encode(), 413,
     "too_many_instances", f"above the limit of {MAX_INSTANCES}"),
    ("not-an-image", "POST", "/invocations", "image/jpeg", b"GIF89a this is not really anything", 400, "bad_image",
     "cannot decode"),
    ("truncated-jpeg", "POST", "/invocations", "image/jpeg", lambda im: _jpeg(im)[: len(_jpeg(im)) // 2], 400,
     "bad_image", "truncated JPEG"),
    ("header-only-jpeg", "POST", "/invocations", "image/jpeg", lambda im: _jpeg(im)[:200], 400, "bad_image",
     "the image"),
    ("bomb-png", "POST", "/invocations", "image/png", lambda im: _bomb_png(), 413, "image_too_large", "900000000 pixels"),
    ("bomb-in-json", "POST", "/invocations", "application/json",
     lambda im: b'{"instances": [{"b64": "%s"}]}' % base64.b64encode(_bomb_png()), 413, "image_too_large",
     "instances[0]"),
    ("s3-without-allow", "POST", "/invocations", "application/json", b'{"instances": [{"s3": "s3://b/k.jpg"}]}', 403,
     "s3_not_allowed", "--allow-s3"),
    ("too-large-declared", "POST", "/invocations", "image/jpeg", lambda im: b"\xff" * (BODY_LIMIT + 1), 413,
     "payload_too_large", "declares"),
    ("unknown-path", "GET", "/predict", None, b"", 404, "not_found", "/predict"),
    ("wrong-method", "GET", "/invocations", None, b"", 405, "method_not_allowed", "GET"),
]


@pytest.mark.parametrize("case,method,path,kind,body,status,code,needle", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_json_4xx_and_the_server_goes_on(server, images, expected, case, method, path, kind, body,
                                                        status, code, needle):
    url, _ = server
    data = body(images) if callable(body) else body
    headers = {"content-type": kind} if kind else {}
    r = httpx.request(method, url + path, content=data if method == "POST" else None, headers=headers, timeout=30)
    assert r.status_code == status, r.text
    assert r.json()["error"] == code and needle in r.json()["message"], r.json()
    assert set(r.json()) == {"error", "message"} and "Traceback" not in r.text
    ok = post_image(url, images[1])
    assert ok.status_code == 200 and ok.json()["count"] == expected[1]["count"]
    assert httpx.get(url + "/ping").status_code == 200


def _raw_exchange(url: str, head: bytes, chunks) -> tuple[bytes, int]:
    """Send ``head`` then ``chunks`` on a raw socket until refused; returns (response start, bytes sent)."""
    host, port = url.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(head)
        try:
            for chunk in chunks:
                s.sendall(chunk)
                sent += len(chunk)
        except OSError:  # the server answered and closed while we were still sending
            pass
        reply = b""
        try:
            while b"\r\n\r\n" not in reply:
                part = s.recv(65536)
                if not part:
                    break
                reply += part
        except ConnectionResetError:
            pass
    return reply, sent


def test_oversized_bodies_are_refused_while_reading(server, images, expected):
    url, _ = server
    # A declared length above the limit: refused from the headers, with no body sent at all.
    head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % (10 * BODY_LIMIT)
    reply, _ = _raw_exchange(url, head, [])
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    # A chunked body (no length): counted while it streams, refused once past the limit.
    head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n"
    piece = b"\xff" * 65536
    chunks = (b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(BODY_LIMIT // len(piece) + 2))
    reply, _ = _raw_exchange(url, head, chunks)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert post_image(url, images[2]).json()["count"] == expected[2]["count"]
    assert httpx.get(url + "/ping").status_code == 200


def test_the_cli_default_body_limit_is_sagemakers():
    assert DEFAULT_MAX_BODY_BYTES == 6_291_456 == Limits().max_body_bytes


def test_ping_answers_503_until_loaded_and_fast_while_a_batch_runs(bundle, images, monkeypatch):
    import bincount.serve.app as app_module

    gate = threading.Event()
    real = app_module.State.load

    def slow_load(self):
        gate.wait(30)
        real(self)

    monkeypatch.setattr(app_module.State, "load", slow_load)
    settings = Settings(model=str(bundle), max_batch_size=64, max_wait_ms=400)
    import uvicorn

    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while not answers_ping(url):
            assert time.time() < deadline
            time.sleep(0.05)
        r = httpx.get(url + "/ping")
        assert r.status_code == 503 and r.json()["error"] == "loading"
        gate.set()
        while httpx.get(url + "/ping").status_code != 200:
            assert time.time() < deadline
            time.sleep(0.05)
        with httpx.Client(timeout=30) as client:  # a request waiting in the batcher; /ping still answers at once
            t = threading.Thread(target=lambda: post_image(url, images[0]))
            t.start()
            time.sleep(0.1)
            start = time.monotonic()
            assert client.get(url + "/ping").status_code == 200
            assert time.monotonic() - start < 2
            t.join(30)
    finally:
        server.should_exit = True
        thread.join(30)


# -- S3 -----------------------------------------------------------------------------------------------------
def test_s3_instances_only_under_allowed_prefixes(bundle, images, expected, s3_endpoint):  # noqa: F811
    client = s3_client(s3_endpoint)
    client.create_bucket(Bucket="serve-bins")
    for i in (0, 1):
        client.put_object(Bucket="serve-bins", Key=f"allowed/img{i}.jpg", Body=images[i].read_bytes())
    client.put_object(Bucket="serve-bins", Key="private/img2.jpg", Body=images[2].read_bytes())
    client.put_object(Bucket="serve-bins", Key="allowed/big.jpg", Body=b"\xff\xd8\xff" + b"\0" * 5000)
    limits = Limits(allow_s3=("s3://serve-bins/allowed",), s3={"endpoint_url": s3_endpoint}, max_s3_bytes=4096)
    with running(Settings(model=str(bundle), limits=limits)) as (url, _):
        def ask(*uris: str) -> httpx.Response:
            return httpx.post(url + "/invocations", json={"instances": [{"s3": u} for u in uris]}, timeout=30)

        r = ask("s3://serve-bins/allowed/img0.jpg", "s3://serve-bins/allowed/img1.jpg")
        assert r.status_code == 200, r.text
        for got, want in zip(r.json()["predictions"], expected[:2]):
            same(got, want)
        for uri, status, code in [("s3://serve-bins/private/img2.jpg", 403, "s3_not_allowed"),
                                  ("s3://serve-bins/allowed-not/img0.jpg", 403, "s3_not_allowed"),
                                  ("s3://serve-bins/allowed/../private/img2.jpg", 400, "bad_s3_uri"),
                                  ("s3://serve-bins/allowed/missing.jpg", 404, "s3_not_found"),
                                  ("s3://serve-bins/allowed/big.jpg", 413, "s3_object_too_large")]:
            r = ask(uri)
            assert (r.status_code, r.json()["error"]) == (status, code), (uri, r.text)
            assert ask("s3://serve-bins/allowed/img1.jpg").status_code == 200
            assert httpx.get(url + "/ping").status_code == 200


# -- the container entry and SIGTERM (a real process) --------------------------------------------------------
def _server_read_everything(port: int) -> bool:
    """True once every established connection to ``port`` has had its bytes read by the server (Linux's
    /proc/net/tcp: the server side's receive queue is empty), so the server has parsed each request's
    headers and holds it in flight; a connection still in the accept backlog has its bytes queued."""
    sides = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    server_side = [s for s in sides if int(s[1].split(":")[1], 16) == port and s[3] == "01"]  # 01: ESTABLISHED
    return all(int(s[4].split(":")[1], 16) == 0 for s in server_side)


def _refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return False
    except ConnectionRefusedError:
        return True


@pytest.mark.slow
def test_container_entry_over_opt_ml_and_sigterm_drains(bundle, images, expected, tmp_path):
    """SIGTERM with 16 requests in flight: the server stops accepting, answers all 16, and exits 0.

    Deterministic by waiting on what the server does rather than on the clock: every client has sent its
    headers and the first 100 bytes of its body, the server has read them all (the requests are in flight),
    then SIGTERM; once the server refuses new connections (it is draining) the bodies are finished.
    """
    if not Path("/proc/net/tcp").is_file():
        pytest.skip("reads the server's socket queues from Linux's /proc/net/tcp")
    model_dir = tmp_path / "opt" / "ml" / "model"
    model_dir.mkdir(parents=True)
    with tarfile.open(model_dir / "model.tar.gz", "w:gz") as tar:  # what SageMaker leaves there
        for name in (BUNDLE_FILE, WEIGHTS_FILE):
            tar.add(bundle / name, arcname=name)
    port = free_port()
    cmd = [sys.executable, "-m", "bincount.serve.container", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--max-batch-size", "64"]
    proc = subprocess.Popen(cmd, env={**os.environ, "SM_MODEL_DIR": str(model_dir)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    clients = 16
    started = [threading.Event() for _ in range(clients)]  # headers and the body's first 100 bytes sent
    release = threading.Event()  # the rest of every body may go
    try:
        wait_http(url + "/ping", timeout=90, proc=proc)
        deadline = time.time() + 90
        while httpx.get(url + "/ping").status_code != 200:
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.1)
        same(post_image(url, images[4]).json(), expected[4])
        results: dict[int, object] = {}
        answered: dict[int, float] = {}

        def slow_body(i: int):
            data = images[i].read_bytes()
            yield data[:100]
            started[i].set()  # httpx asks for the next chunk only after sending the headers and this one
            assert release.wait(60)
            yield data[100:]

        def client(i: int) -> None:
            try:
                results[i] = httpx.post(url + "/invocations", content=slow_body(i),
                                        headers={"content-type": "image/jpeg"}, timeout=30)
                answered[i] = time.monotonic()
            except httpx.HTTPError as e:
                results[i] = e

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        deadline = time.time() + 60
        while not (all(e.is_set() for e in started) and _server_read_everything(port)):
            assert time.time() < deadline, ([e.is_set() for e in started], results)
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        while not _refuses_connections(port):  # uvicorn closes its socket, then keeps each request in flight
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.02)
        release.set()
        for t in threads:
            t.join(60)
        log = proc.communicate(timeout=60)[0]
        assert proc.returncode == 0, log[-3000:]
        assert sorted(results) == list(range(clients))  # none lost
        for i in range(clients):  # every request in flight at the signal was accepted and answered
            r = results[i]
            assert isinstance(r, httpx.Response) and r.status_code == 200, (i, r, log[-2000:])
            same(r.json(), expected[i])
        assert min(answered.values()) > signalled  # in flight at the signal, answered while draining
        assert "Traceback" not in log
    finally:
        release.set()
        stop_process(proc)


# -- the batcher's wait ----------------------------------------------------------------------------------------
def test_a_lone_image_does_not_wait_but_an_announced_one_is_waited_for(bundle, images):
    from bincount.serve.batcher import Batcher

    model = load_model(bundle)
    tensors = [model.preprocess(p.read_bytes()) for p in images[:2]]
    batcher = Batcher(model, max_batch_size=8, max_wait_ms=3000)

    async def lone() -> float:
        start = time.monotonic()
        await batcher.predict(tensors[0])
        return time.monotonic() - start

    async def announced() -> None:
        with batcher.arriving(1) as ticket:  # a second request is still decoding when the first is queued
            first = batcher.submit(tensors[0])
            await asyncio.sleep(0.3)
            second = batcher.submit(tensors[1], ticket)
        await asyncio.gather(first, second)

    try:
        assert asyncio.run(lone()) < 1.0  # not the 3 s window: nothing else was coming
        assert (batcher.batches, batcher.images) == (1, 1)
        asyncio.run(announced())
        assert (batcher.batches, batcher.images) == (2, 3)  # the two went through the model together
        assert asyncio.run(lone()) < 1.0  # and nothing is left announced: a lone image still goes at once
    finally:
        batcher.close()
