"""``POST /invocations``: one request from its body to its answer, through admission, decoding and the batcher.

Why in this order: everything that can refuse a request without work does so first and at once (the
media type, the deadline header, the body within its size and time, the JSON, the images' headers against
the decoded-bytes budgets, the queue: :mod:`.admission`), so an overloaded server answers 503 in
milliseconds instead of queueing work it cannot finish. Once admitted, the images are decoded in threads
while the batcher knows they are coming, then queued; the request waits for its answers, its deadline,
or its client going away, whichever is first. When the wait ends without answers the request marks its
images abandoned and the batcher drops them before the model.

Every outcome is counted in ``bincount_requests_total`` by status; an unexpected exception is logged
once with its traceback and answered 500 without it; a client that left is one INFO line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from bincount.serve.admission import DEADLINE_HEADER, Overloaded, decoded_bytes, deadline_seconds
from bincount.serve.batcher import Abandon, PreprocessError, TooLate
from bincount.serve.connections import read_within
from bincount.serve.inputs import Instance, ServeError, decode, media_type, parse_instances, read_body, read_s3

log = logging.getLogger("bincount.serve")
CLIENT_GONE = 499  # no response reaches the client; the status its request is counted under (nginx's convention)


TOO_LATE = (f"the request's deadline passed (or would have, before its batch was done) while its images waited for "
            f"the model (--timeout, or {DEADLINE_HEADER}); they were dropped unanswered; retry later")


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


def server_timing(read_ms: float, decode_ms: float, timings: list[dict]) -> str:
    """The W3C ``Server-Timing`` header: where this request's time went on the server (the slowest image's
    queue and model time for several), so a client can tell server time from the network's."""
    worst = max(timings, key=lambda t: t.get("queue_ms", 0) + t.get("model_ms", 0))
    return (f"read;dur={read_ms:.2f}, decode;dur={decode_ms:.2f}, queue;dur={worst.get('queue_ms', 0):.2f}, "
            f"preprocess;dur={worst.get('preprocess_ms', 0):.2f}, "
            f'model;dur={worst.get("model_ms", 0):.2f};desc="batch of {worst.get("batch", 0)}"')


async def invocations(request: Request) -> Response:
    state = request.app.state.bincount
    metrics = request.app.state.metrics
    start = time.perf_counter()
    try:
        response = await _invoke(request, state, start)
    except Overloaded as e:
        response = error(e.status, e.code, e.message, {"Retry-After": str(e.retry_after)})
    except ServeError as e:
        # a body that stopped arriving: the rest of it would be read as the next request, so the connection ends
        response = error(e.status, e.code, e.message, {"Connection": "close"} if e.status == 408 else None)
    except (ClientGone, ClientDisconnect):
        log.info("client %s went away before its answer; its request was dropped", _who(request))
        response = Response(status_code=CLIENT_GONE)
    except Exception as e:  # noqa: BLE001 - logged once here, so Starlette's handler does not log it again
        log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=e)
        response = error(500, "internal_error", f"{type(e).__name__} while serving the request (logged by the server)")
    metrics.requests.labels(str(response.status_code)).inc()
    metrics.latency.labels("total").observe(time.perf_counter() - start)
    return response


def _who(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "?"


async def _image_bytes(state: Any, instance: Instance) -> bytes:
    if instance.s3 is not None:
        return await run_in_threadpool(read_s3, instance.s3, state.settings.limits)
    assert instance.data is not None
    return instance.data


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone (the ASGI receive channel says ``http.disconnect``)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _invoke(request: Request, state: Any, start: float) -> Response:
    settings = state.settings
    limits, budgets = settings.limits, settings.budgets
    kind = media_type(request.headers.get("content-type"))
    seconds = deadline_seconds(request.headers.get(DEADLINE_HEADER), budgets.timeout_s)
    deadline = time.monotonic() - (time.perf_counter() - start) + seconds
    chunks = read_within(request.stream(), settings.connections.body_timeout_s)
    body = await read_body(chunks, request.headers.get("content-length"), limits.max_body_bytes)
    instances, several = parse_instances(kind, body, limits.max_instances)
    if not state.ready.is_set():
        raise Overloaded("the model is still loading; retry when GET /ping answers 200", 1, code="loading")
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        return await _admitted(state, instances, several, deadline, gone, start)
    finally:
        gone.cancel()


async def _admitted(state: Any, instances: list[Instance], several: bool, deadline: float, gone: asyncio.Future,
                    start: float) -> Response:
    admission = state.admission
    names = [f"instances[{i}]" if several else "the image" for i in range(len(instances))]
    datas = await asyncio.gather(*(_image_bytes(state, inst) for inst in instances))
    names = [inst.s3 or name for inst, name in zip(instances, names)]
    max_pixels = state.settings.limits.pixels(state.model.max_pixels)
    sizes = [decoded_bytes(data, max_pixels, name) for data, name in zip(datas, names)]
    admission.check_request(sizes)
    nbytes = sum(sizes)
    admission.admit(len(datas), nbytes, deadline - time.monotonic())
    try:  # the decoded images live until the request ends (the batcher transforms them when it takes them)
        return await _decoded_and_answered(state, datas, names, several, deadline, gone, start)
    finally:
        admission.release_bytes(nbytes)


async def _decoded_and_answered(state: Any, datas: list[bytes], names: list[str], several: bool, deadline: float,
                                gone: asyncio.Future, start: float) -> Response:
    admission, batcher, metrics = state.admission, state.batcher, state.metrics
    n, max_pixels = len(datas), state.settings.limits.pixels(state.model.max_pixels)
    timings: list[dict] = [{} for _ in datas]
    abandon, submitted = Abandon(), 0
    read = time.perf_counter()
    try:
        with batcher.arriving(n) as ticket:  # a waiting batch waits for these while they decode
            tensors = await asyncio.gather(*(run_in_threadpool(decode, data, max_pixels, name)
                                             for data, name in zip(datas, names)))
            decoded = time.perf_counter()
            metrics.latency.labels("decode").observe(decoded - read)
            if gone.done():  # left while its images decoded: they never reach the queue
                metrics.abandoned.labels("disconnect").inc(n)
                raise ClientGone
            futures = [batcher.submit(t, ticket, timing, deadline, abandon) for t, timing in zip(tensors, timings)]
            submitted = n
    finally:
        admission.leave_queue(n - submitted)  # the batcher reports the submitted ones as it takes or drops them
    del tensors  # the queue holds them now; the batcher's transform lets each go
    try:
        answers = await _wait(futures, gone, deadline, abandon, admission)
    except PreprocessError as e:
        failed = next(i for i, f in enumerate(futures) if f.done() and not f.cancelled() and f.exception() is e)
        raise ServeError(400, "bad_image", f"{names[failed]}: {e}") from None
    answers = [{**a, "model": state.identity} for a in answers]
    header = server_timing((read - start) * 1000, (decoded - read) * 1000, timings)
    return JSONResponse({"predictions": answers} if several else answers[0], headers={"Server-Timing": header})


async def _wait(futures: list[asyncio.Future], gone: asyncio.Future, deadline: float, abandon: Abandon,
                admission: Any) -> list[dict]:
    """The answers; or, when the client leaves or the deadline passes first, the images abandoned and
    :class:`ClientGone` or 503 raised."""
    answers = asyncio.gather(*futures)
    done, _ = await asyncio.wait({answers, gone}, timeout=max(0.0, deadline - time.monotonic()),
                                 return_when=asyncio.FIRST_COMPLETED)
    if answers in done:
        try:
            return answers.result()
        except TooLate:
            raise Overloaded(TOO_LATE, admission.retry_after()) from None
    abandon.reason = "disconnect" if gone in done else "deadline"
    answers.cancel()  # the images' futures too; the gather's CancelledError is read, or asyncio logs it as an error
    answers.add_done_callback(lambda f: f.cancelled() or f.exception())
    if gone in done:
        raise ClientGone
    raise Overloaded(TOO_LATE, admission.retry_after())
