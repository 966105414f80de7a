"""The Starlette app: ``GET /ping``, ``POST /invocations``, and one JSON shape for every error.

Why the model loads in a thread after start-up: SageMaker wants connections accepted within 250 ms
and ``/ping`` answering (503 until ready) within 2 s, while importing torch and loading weights takes
seconds. ``/ping`` says 200 only once the model is loaded; a load that fails calls ``on_fail`` (the
CLI stops the server and exits 1 with the reason). Decoding runs in a thread pool, the model in the
batcher's thread: the event loop only routes. Errors are ``{"error": code, "message": why}``, never a
traceback; an unexpected exception is logged with its traceback and answered 500 without it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
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

from bincount.serve.inputs import Instance, Limits, ServeError, decode, media_type, parse_instances, read_body, read_s3

log = logging.getLogger("bincount.serve")


@dataclass
class Settings:
    model: str  # what load_model reads: a bundle/run dir, a model.tar.gz, an s3:// URI
    limits: Limits = field(default_factory=Limits)
    max_batch_size: int = 16
    max_wait_ms: float = 5.0
    device: str = "auto"  # auto: CUDA when there is one
    on_fail: Callable[[BaseException], None] | None = None


class State:
    """What the routes read: the batcher once the model is loaded, or the load's error."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model: Any = None
        self.batcher: Any = None
        self.error: BaseException | None = None
        self.ready = threading.Event()

    def load(self) -> None:
        try:
            import torch

            from bincount.bundle import load_model
            from bincount.serve.batcher import Batcher

            s = self.settings
            model = load_model(s.model, s3=s.limits.s3 or None)
            device = s.device if s.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
            self.model = model.to(device)
            meta = model.metadata
            self.identity = {"backbone": meta["model"]["backbone"], "run": meta.get("run", {}).get("id"),
                             "sha256": meta["weights"]["sha256"][:16]}
            self.batcher = Batcher(self.model, s.max_batch_size, s.max_wait_ms)
            self.ready.set()
            log.info("model %s loaded on %s (%s); ready", s.model, device, self.identity["backbone"])
        except BaseException as e:  # noqa: BLE001 - reported to the CLI, which exits 1 with the reason
            self.error = e
            log.error("model %s could not be loaded: %s: %s", self.settings.model, type(e).__name__, e)
            if self.settings.on_fail:
                self.settings.on_fail(e)


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


async def ping(request: Request) -> Response:
    state: State = request.app.state.bincount
    if state.ready.is_set():
        return JSONResponse({"status": "ok", "model": state.identity})
    if state.error is not None:
        return error(503, "model_failed", f"the model could not be loaded: {state.error}")
    return error(503, "loading", "the model is still loading")


async def _tensor(state: State, instance: Instance, where: str) -> Any:
    data = instance.data
    if instance.s3 is not None:
        data = await run_in_threadpool(read_s3, instance.s3, state.settings.limits)
        where = instance.s3
    max_pixels = state.settings.limits.pixels(state.model.max_pixels)
    return await run_in_threadpool(decode, data, state.model.transform, max_pixels, where)


def server_timing(read_ms: float, decode_ms: float, timings: list[dict]) -> str:
    """The W3C ``Server-Timing`` header: where this request's time went on the server (the slowest image's
    queue and model time for several), so a client can tell server time from the network's."""
    worst = max(timings, key=lambda t: t.get("queue_ms", 0) + t.get("model_ms", 0))
    return (f"read;dur={read_ms:.2f}, decode;dur={decode_ms:.2f}, queue;dur={worst.get('queue_ms', 0):.2f}, "
            f'model;dur={worst.get("model_ms", 0):.2f};desc="batch of {worst.get("batch", 0)}"')


async def invocations(request: Request) -> Response:
    state: State = request.app.state.bincount
    limits = state.settings.limits
    start = time.perf_counter()
    kind = media_type(request.headers.get("content-type"))
    body = await read_body(request.stream(), request.headers.get("content-length"), limits.max_body_bytes)
    instances, several = parse_instances(kind, body, limits.max_instances)
    if not state.ready.is_set():
        raise ServeError(503, "loading", "the model is still loading; retry when GET /ping answers 200")
    names = [f"instances[{i}]" if several else "the image" for i in range(len(instances))]
    batcher = state.batcher
    timings: list[dict] = [{} for _ in instances]
    read = time.perf_counter()
    with batcher.arriving(len(instances)) as ticket:  # a waiting batch waits for these while they decode
        tensors = await asyncio.gather(*(_tensor(state, inst, name) for inst, name in zip(instances, names)))
        decoded = time.perf_counter()
        futures = [batcher.submit(t, ticket, timing) for t, timing in zip(tensors, timings)]
    answers = await asyncio.gather(*futures)
    answers = [{**a, "model": state.identity} for a in answers]
    header = server_timing((read - start) * 1000, (decoded - read) * 1000, timings)
    return JSONResponse({"predictions": answers} if several else answers[0], headers={"Server-Timing": header})


async def _serve_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServeError)
    return error(exc.status, exc.code, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    message = {404: f"no route {request.url.path}; routes: GET /ping, POST /invocations",
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

    app = Starlette(routes=[Route("/ping", ping, methods=["GET"]), Route("/invocations", invocations, methods=["POST"])],
                    exception_handlers={ServeError: _serve_error, HTTPException: _http_error, Exception: _unexpected},
                    lifespan=lifespan)
    app.state.bincount = state
    return app
