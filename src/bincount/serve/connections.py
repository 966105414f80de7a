"""Slow and idle clients: deadlines on a request's header and body, keep-alive, and a connection limit.

Why: uvicorn times out only an idle keep-alive connection *after* a response. A connection that sends
half a header, or a header and half a body, is held for ever: 1,000 stalled uploads were held 90 s, and
at 1,030 stalled connections the process ran out of file descriptors and ``/ping`` failed, which makes
SageMaker replace the instance. So, on top of uvicorn's httptools protocol:

- the header of each request must be complete within ``--header-timeout`` seconds of its first byte (or
  of the connection's opening) and within ``MAX_HEADER_BYTES``, or the connection gets 408 and is closed;
- the body must arrive within ``--body-timeout`` (:func:`read_within`, used by the route: 408, closed);
- an idle keep-alive connection is closed after ``--keep-alive`` seconds (uvicorn's own timer);
- at ``--max-connections`` (below the process' file limit) a new connection evicts the oldest one that
  has no request in progress (stalled in its header, or idle); only when every connection is serving a
  request is the new one closed. So stalled clients cannot lock out ``/ping``.

A client that goes away is not an error: it is logged as one INFO line by the route, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from bincount.serve.inputs import ServeError

log = logging.getLogger("bincount.serve")
MAX_HEADER_BYTES = 64 << 10
RESERVED_FDS = 128  # files, the model, S3 clients and threads need descriptors too
_REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def default_max_connections() -> int:
    """The process' soft file limit less what the server needs besides sockets (at least 16)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(16, soft - RESERVED_FDS)


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0  # 6 MB at 200 KB/s; SageMaker's own front end sends bodies fast
    keep_alive_s: float = 5.0  # uvicorn's default
    max_connections: int = field(default_factory=default_max_connections)

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "body_timeout_s", "keep_alive_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be positive seconds")
        if self.max_connections < 2:
            raise ValueError(f"max_connections={self.max_connections!r} must be at least 2 (one for /ping)")


async def read_within(chunks: AsyncIterator[bytes], seconds: float) -> AsyncIterator[bytes]:
    """``chunks`` while they arrive within ``seconds`` in all; 408 ``body_timeout`` (connection closed) after."""
    deadline = time.monotonic() + seconds
    iterator = chunks.__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(iterator.__anext__(), max(0.0, deadline - time.monotonic()))
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise ServeError(408, "body_timeout", f"the body did not arrive within {seconds:g} s (--body-timeout); "
                             "the connection is closed") from None
        yield chunk


def protocol_class(limits: ConnectionLimits) -> type:
    """uvicorn's httptools protocol with the header deadline, header size cap and connection limit."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    shed = {"count": 0, "logged": 0.0}

    class GuardedProtocol(HttpToolsProtocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.opened, self.header_bytes, self.header_timer = time.monotonic(), 0, None
            self._arm()
            if len(self.connections) > limits.max_connections:
                idle = [c for c in self.connections if c is not self and isinstance(c, GuardedProtocol) and c.idle()]
                victim = min(idle, key=lambda c: c.opened) if idle else self
                victim.transport.close()
                shed["count"] += 1
                if time.monotonic() - shed["logged"] > 1:
                    shed["logged"] = time.monotonic()
                    log.info("at --max-connections %d: closed %d connection(s) so far (oldest idle first)",
                             limits.max_connections, shed["count"])

        def idle(self) -> bool:
            """No request in progress: still in its header, or between requests."""
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            if self.header_timer is None:
                self.header_timer = self.loop.call_later(limits.header_timeout_s, self._header_late)
                self.header_bytes = 0

        def _disarm(self) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None

        def data_received(self, data: bytes) -> None:
            in_header = self.idle()  # these bytes start or continue a request's header
            if in_header:
                self._arm()
                self.header_bytes += len(data)
            super().data_received(data)
            if in_header and self.idle() and self.header_bytes > MAX_HEADER_BYTES and not self.transport.is_closing():
                log.info("closed a connection from %s: its request header passed %d bytes", self._who(),
                         MAX_HEADER_BYTES)
                self._close_with_408()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._disarm()  # idle now: uvicorn's keep-alive timer runs; the next header's first byte re-arms

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _header_late(self) -> None:
            self.header_timer = None
            if self.idle() and not self.transport.is_closing():
                if self.header_bytes:
                    log.info("closed a connection from %s: no complete request header within %g s (--header-timeout)",
                             self._who(), limits.header_timeout_s)
                self._close_with_408()

        def _close_with_408(self) -> None:
            self._disarm()
            if self.header_bytes:
                self.transport.write(_REQUEST_TIMEOUT)
            self.transport.close()

        def _who(self) -> str:
            return "%s:%d" % self.client if self.client else "a client"

    return GuardedProtocol


def uvicorn_config(app: Any, host: str, port: int, limits: ConnectionLimits, **kwargs: Any):
    """The server's uvicorn Config: the guarded protocol, the keep-alive timeout, our own logging of requests."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, http=protocol_class(limits),
                          timeout_keep_alive=limits.keep_alive_s, **kwargs)
