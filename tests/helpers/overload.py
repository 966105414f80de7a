"""A ``bincount serve`` app under test for overload: the model slowed and counting what it computes."""

from __future__ import annotations

import io
import logging
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
from PIL import Image
from s3_server import free_port

from bincount.serve.admission import Budgets
from bincount.serve.app import Settings, create_app
from bincount.serve.connections import ConnectionLimits, uvicorn_config


def jpeg(i: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (20 * i % 256, 90, 200)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class SlowCountingModel:
    """The loaded model, slow on purpose (``delay`` s a batch) and counting every image it computes."""

    def __init__(self, model, delay: float) -> None:
        self.model, self.counts, self.delay, self.computed = model, model.counts, delay, 0

    def predict(self, batch):
        self.computed += len(batch)
        time.sleep(self.delay)
        return self.model.predict(batch)


@contextmanager
def serving(bundle: Path, delay: float = 0.0, max_batch_size: int = 1, budgets: Budgets | None = None,
            connections: ConnectionLimits | None = None):
    """The server as ``bincount serve`` configures uvicorn, in a thread; yields (url, app, model counter)."""
    import uvicorn

    settings = Settings(model=str(bundle), max_batch_size=max_batch_size, max_wait_ms=0,
                        budgets=budgets or Budgets(), connections=connections or ConnectionLimits())
    app = create_app(settings)
    port = free_port()
    config = uvicorn_config(app, "127.0.0.1", port, settings.connections, log_level="info", log_config=None,
                            lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url, state = f"http://127.0.0.1:{port}", app.state.bincount
    try:
        deadline = time.monotonic() + 60
        while not state.ready.is_set():
            assert time.monotonic() < deadline and state.error is None, state.error
            time.sleep(0.05)
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        model = SlowCountingModel(state.batcher.model, delay)
        state.batcher.model = model
        yield url, app, model
    finally:
        server.should_exit = True
        thread.join(30)


def post(url: str, body: bytes, kind: str = "image/jpeg", timeout: float = 30, **headers) -> httpx.Response:
    return httpx.post(url + "/invocations", content=body, headers={"content-type": kind, **headers}, timeout=timeout)


def wait_until(check, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def in_thread(fn, *args, **kwargs) -> tuple[threading.Thread, list]:
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn(*args, **kwargs)), daemon=True)
    t.start()
    return t, out


def no_errors_logged(caplog) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]
    assert "Traceback" not in caplog.text
