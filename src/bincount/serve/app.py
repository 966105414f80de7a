"""The Starlette app: ``GET /ping``, ``POST /invocations``, and one JSON shape for every error.

Why the model loads in a thread after start-up: SageMaker wants connections accepted within 250 ms
and ``/ping`` answering (503 until ready) within 2 s, while importing torch and loading weights takes
seconds. ``/ping`` says 200 only once the model is loaded; a load that fails calls ``on_fail`` (the
CLI stops the server and exits 1 with the reason). Decoding runs in a thread pool, the model in the
batcher's thread: the event loop only routes. ``POST /invocations`` is :mod:`.invoke` (admission,
decoding, waiting); ``GET /metrics`` is :mod:`.metrics`. Errors are ``{"error": code, "message": why}``,
never a traceback; an unexpected exception is logged once with its traceback and answered 500 without it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bincount.serve.admission import Admission, Budgets
from bincount.serve.connections import ConnectionLimits
from bincount.serve.inputs import Limits, ServeError
from bincount.serve.invocations import error, invocations
from bincount.serve.memory import freeze_startup_objects
from bincount.serve.metrics import Metrics, metrics_route

log = logging.getLogger("bincount.serve")


@dataclass
class Settings:
    model: str  # what load_model reads: a bundle/run dir, a model.tar.gz, an s3:// URI
    limits: Limits = field(default_factory=Limits)
    max_batch_size: int = 16
    calibrate_batch_size: bool = False  # cap batches at the fastest size up to max_batch_size (`bincount serve`: on)
    max_wait_ms: float = 5.0
    device: str = "auto"  # auto: CUDA when there is one
    budgets: Budgets = field(default_factory=Budgets)  # queue, deadline, decoded bytes (admission)
    connections: ConnectionLimits = field(default_factory=ConnectionLimits)  # header/body deadlines, keep-alive
    on_fail: Callable[[BaseException], None] | None = None


class State:
    """What the routes read: the batcher once the model is loaded, or the load's error."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.admission = Admission(settings.budgets, settings.max_batch_size, self.metrics)
        self.model: Any = None
        self.batcher: Any = None
        self.error: BaseException | None = None
        self.ready = threading.Event()

    def load(self) -> None:
        try:
            import torch

            from bincount.bundle import load_model
            from bincount.bundle.provenance import watch_model
            from bincount.serve.batcher import Batcher

            s = self.settings
            model = load_model(s.model, s3=s.limits.s3 or None)
            device = s.device if s.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
            self.model = model.to(device)
            meta = model.metadata
            self.identity = {"backbone": meta["model"]["backbone"], "run": meta.get("run", {}).get("id"),
                             "sha256": meta["weights"]["sha256"][:16]}
            watch_model(model, log)  # what it was trained on; one warning for images of another size (issue 27)
            # the last step: the batcher's thread says ready once it takes batches (batch sizes timed, if asked)
            self.batcher = Batcher(self.model, s.max_batch_size, s.max_wait_ms, hooks=self.admission,
                                   metrics=self.metrics, transform=self.model.transform,
                                   calibrate=s.calibrate_batch_size, after=threading.current_thread(),
                                   on_started=lambda: self._ready(device), start=False)
            self.batcher.start()  # after the assignment: /ping says ready only once requests can reach it
        except BaseException as e:  # noqa: BLE001 - reported to the CLI, which exits 1 with the reason
            self.error = e
            log.error("model %s could not be loaded: %s: %s", self.settings.model, type(e).__name__, e)
            if self.settings.on_fail:
                self.settings.on_fail(e)

    def _ready(self, device: str) -> None:
        """The batcher is taking batches (its batch sizes timed, when asked): /ping says ready."""
        frozen = freeze_startup_objects()
        self.ready.set()
        log.debug("%d objects from start-up frozen out of the garbage collector's full passes", frozen)
        log.info("model %s loaded on %s (%s); ready", self.settings.model, device, self.identity["backbone"])


async def ping(request: Request) -> Response:
    state: State = request.app.state.bincount
    if state.ready.is_set():
        return JSONResponse({"status": "ok", "model": state.identity})
    if state.error is not None:
        return error(503, "model_failed", f"the model could not be loaded: {state.error}")
    return error(503, "loading", "the model is still loading")


async def _serve_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServeError)
    return error(exc.status, exc.code, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    message = {404: f"no route {request.url.path}; routes: GET /ping, POST /invocations, GET /metrics",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
    return error(exc.status_code, codes.get(exc.status_code, "http_error"), message)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error(500, "internal_error", f"{type(exc).__name__} while serving the request (logged by the server)")


def create_app(settings: Settings) -> Starlette:
    state = State(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        threading.Thread(target=state.load, name="bincount-load", daemon=True).start()
        yield
        if state.batcher is not None:  # uvicorn finished the requests in flight; their images are answered
            await run_in_threadpool(state.batcher.close)

    routes = [Route("/ping", ping, methods=["GET"]), Route("/invocations", invocations, methods=["POST"]),
              Route("/metrics", metrics_route, methods=["GET"])]
    app = Starlette(routes=routes,
                    exception_handlers={ServeError: _serve_error, HTTPException: _http_error, Exception: _unexpected},
                    lifespan=lifespan)
    app.state.bincount = state
    app.state.metrics = state.metrics
    return app
