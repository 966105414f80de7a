"""``bincount serve MODEL [--host 127.0.0.1] [--port 8080]``: the model on SageMaker's inference contract.

Why it binds to 127.0.0.1 unless told otherwise: a model server on every interface is a decision,
not a default (the container entry, :mod:`.container`, makes it: SageMaker needs 0.0.0.0:8080).

Shutdown: on SIGTERM (what SageMaker sends, 30 s before SIGKILL) uvicorn stops accepting, finishes
the requests in flight (within ``--graceful-timeout``), and the app's lifespan drains the batcher;
then the process exits 0. uvicorn re-raises the signal it caught once it is done, so a SIGTERM
handler of ours is in place meanwhile, and that re-raise ends the process normally instead of killing it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from bincount.bundle import BundleError
from bincount.cli_values import bounded, port, positive
from bincount.s3.endpoint import S3Error
from bincount.s3.store import S3ReadError
from bincount.serve.admission import (DEADLINE_HEADER, DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_QUEUE_IMAGES,
                                      DEFAULT_MAX_REQUEST_DECODED_BYTES, DEFAULT_TIMEOUT_S, Budgets)
from bincount.serve.connections import ConnectionLimits, default_max_connections
from bincount.serve.inputs import (DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_INSTANCES, DEFAULT_MAX_PIXELS, DEFAULT_MAX_S3_BYTES,
                                   Limits)


class OptionError(ValueError):
    """Options that are each valid but cannot go together."""


ERRORS = (BundleError, S3Error, S3ReadError, OptionError)
DEVICES = ("auto", "cpu", "cuda", "mps")


_wait_ms = bounded(0, 10_000, "milliseconds")
_seconds = bounded(0, 3600, "seconds", low_open=True)


def _s3_prefix(value: str) -> str:
    from bincount.s3.endpoint import parse_s3_url

    try:
        bucket, prefix = parse_s3_url(value)
    except S3Error as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return f"s3://{bucket}/{prefix}".rstrip("/")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a bundle dir, a run dir, a model.tar.gz, or an s3:// URI of one")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s; 0.0.0.0 for all)")
    parser.add_argument("--port", type=port, default=8080, help="port (default: %(default)s)")
    parser.add_argument("--max-batch-size", type=positive, default=16, metavar="N",
                        help="images per model call, across requests (default: %(default)s; 1 turns batching off); "
                             "at start the forward is timed at 1, 2, 4, ... N and batches are capped at the fastest")
    parser.add_argument("--calibrate", action=argparse.BooleanOptionalAction, default=True,
                        help="time the batch sizes at start (a few seconds) and cap batches at the fastest "
                             "(default: on; --no-calibrate caps them at --max-batch-size)")
    parser.add_argument("--max-wait-ms", type=_wait_ms, default=5.0, metavar="MS",
                        help="how long the first image of a batch waits for more, only while other requests "
                             "are still decoding (default: %(default)s)")
    parser.add_argument("--max-body-bytes", type=positive, default=DEFAULT_MAX_BODY_BYTES, metavar="N",
                        help="largest request body (default: %(default)s, SageMaker's real-time limit)")
    parser.add_argument("--max-instances", type=positive, default=DEFAULT_MAX_INSTANCES, metavar="N",
                        help="most images in one JSON request (default: %(default)s)")
    parser.add_argument("--allow-s3", action="append", type=_s3_prefix, default=[], metavar="PREFIX",
                        help="s3://bucket/prefix whose objects {\"s3\": ...} instances may name (repeatable; default: none)")
    parser.add_argument("--max-s3-bytes", type=positive, default=DEFAULT_MAX_S3_BYTES, metavar="N",
                        help="largest S3 object read for an instance (default: %(default)s)")
    parser.add_argument("--max-pixels", type=positive, default=DEFAULT_MAX_PIXELS, metavar="N",
                        help="refuse images with more pixels, whatever the bundle allows (default: %(default)s)")
    parser.add_argument("--endpoint-url", metavar="URL", help="S3-compatible endpoint (default: AWS_ENDPOINT_URL_S3)")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="where the model runs (default: auto)")
    parser.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT_S, metavar="S",
                        help="each request's deadline; one that cannot be answered in time gets 503 at once, and "
                             f"a client may ask for less with {DEADLINE_HEADER} (default: %(default)s, under "
                             "SageMaker's 60 s)")
    parser.add_argument("--max-queue", type=positive, default=DEFAULT_MAX_QUEUE_IMAGES, metavar="N",
                        help="images admitted and not yet in a batch; more gets 503 with Retry-After "
                             "(default: %(default)s)")
    parser.add_argument("--max-request-decoded-bytes", type=positive, default=DEFAULT_MAX_REQUEST_DECODED_BYTES,
                        metavar="N", help="a request's images decoded (width x height x channels from their "
                                          "headers); above it 413 (default: %(default)s)")
    parser.add_argument("--max-decoded-bytes", type=positive, default=DEFAULT_MAX_DECODED_BYTES, metavar="N",
                        help="decoded bytes of all requests decoding at once; when full 503 (default: %(default)s)")
    parser.add_argument("--header-timeout", type=_seconds, default=10.0, metavar="S",
                        help="a request's header must arrive within this, or 408 and closed (default: %(default)s)")
    parser.add_argument("--body-timeout", type=_seconds, default=30.0, metavar="S",
                        help="a request's body must arrive within this, or 408 and closed (default: %(default)s)")
    parser.add_argument("--keep-alive", type=_seconds, default=5.0, metavar="S",
                        help="an idle keep-alive connection is closed after this (default: %(default)s)")
    parser.add_argument("--max-connections", type=positive, default=None, metavar="N",
                        help="open connections; past it the oldest idle one is closed (default: the file limit "
                             f"less 128, here {default_max_connections()})")
    parser.add_argument("--graceful-timeout", type=positive, default=25, metavar="S",
                        help="seconds to finish requests in flight after SIGTERM (default: %(default)s)")


def serve(args: argparse.Namespace) -> int:
    """Run the server until SIGTERM/SIGINT; raise the model's load error (exit 1) if it could not load."""
    import uvicorn

    from bincount.serve.app import Settings, create_app
    from bincount.serve.connections import uvicorn_config

    model = str(args.model)
    if not model.startswith("s3://") and not Path(model).expanduser().exists():
        raise FileNotFoundError(f"model {model} does not exist (a bundle dir, run dir, model.tar.gz or s3:// URI)")
    s3 = {"endpoint_url": args.endpoint_url} if args.endpoint_url else {}
    limits = Limits(max_body_bytes=args.max_body_bytes, max_instances=args.max_instances,
                    max_s3_bytes=args.max_s3_bytes, allow_s3=tuple(args.allow_s3), s3=s3, max_pixels=args.max_pixels)
    if args.max_request_decoded_bytes > args.max_decoded_bytes:
        raise OptionError(f"--max-request-decoded-bytes {args.max_request_decoded_bytes} is above --max-decoded-bytes "
                          f"{args.max_decoded_bytes} (the server-wide budget): no request that large could be served; "
                          "lower the first or raise the second")
    budgets = Budgets(timeout_s=args.timeout, max_queue_images=args.max_queue,
                      max_request_decoded_bytes=args.max_request_decoded_bytes, max_decoded_bytes=args.max_decoded_bytes)
    connections = ConnectionLimits(header_timeout_s=args.header_timeout, body_timeout_s=args.body_timeout,
                                   keep_alive_s=args.keep_alive,
                                   max_connections=args.max_connections or default_max_connections())
    server: uvicorn.Server | None = None

    def stop(_: BaseException) -> None:
        if server is not None:
            server.should_exit = True

    settings = Settings(model=model, limits=limits, max_batch_size=args.max_batch_size,
                        calibrate_batch_size=args.calibrate, max_wait_ms=args.max_wait_ms,
                        device=args.device, on_fail=stop, budgets=budgets, connections=connections)
    app = create_app(settings)
    config = uvicorn_config(app, args.host, args.port, connections, timeout_graceful_shutdown=args.graceful_timeout,
                            log_level="info", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    _log_like_uvicorn(logging.getLogger("bincount.serve"))
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: None) if in_main else None
    try:
        server.run()
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    error = app.state.bincount.error
    if error is not None:
        raise error
    return 0


def _log_like_uvicorn(logger: logging.Logger) -> None:
    """The server's own lines (model loaded, batch sizes, clients gone) on stderr beside uvicorn's, in its format.

    uvicorn's logging config covers only its own loggers; without a handler, INFO lines of ours went nowhere."""
    from uvicorn.logging import DefaultFormatter

    logger.setLevel(logging.INFO)
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(DefaultFormatter("%(levelprefix)s %(message)s", use_colors=None))
        logger.addHandler(handler)


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a line is logged, not the one it was made with: ``serve``
    may run more than once in a process (tests, notebooks), and an earlier stream may be closed by then."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def run(args: argparse.Namespace) -> int:
    return serve(args)
