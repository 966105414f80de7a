"""A tiny fault-injecting HTTP proxy on 127.0.0.1, put in front of ``moto_server`` to test retries.

Written by hand because no test library injects S3-shaped faults into a real HTTP exchange: a
``503 SlowDown`` with S3's XML body, a TCP reset before the response, a reset in the middle of a
body, and added latency. Faults hit a configured fraction of requests, drawn from a seeded RNG,
and every injected fault is counted so tests can assert the faults really happened.

Usage::

    with FaultProxy(upstream="http://127.0.0.1:PORT", slowdown=0.1, reset=0.05, body_reset=0.05) as proxy:
        ... point the S3 client's endpoint_url at proxy.url ...
    proxy.counts  # {"requests": n, "slowdown": k, "reset": m, "body_reset": j, "delayed": d}
    proxy.served  # {"/bucket/key": complete 200 GET responses}: proves exactly-once reads
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

_SLOWDOWN_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
                  b"<Message>Please reduce your request rate.</Message></Error>")
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


class FaultProxy:
    """Forward every request to ``upstream``, injecting faults at the given per-request rates."""

    def __init__(self, upstream: str, slowdown: float = 0.0, reset: float = 0.0, body_reset: float = 0.0,
                 delay: float = 0.0, delay_s: float = 0.05, seed: int = 0, methods: tuple[str, ...] = ("GET",)) -> None:
        parsed = urlparse(upstream)
        self.upstream = (parsed.hostname, parsed.port)
        self.rates = {"slowdown": slowdown, "reset": reset, "body_reset": body_reset}
        self.delay, self.delay_s, self.methods = delay, delay_s, methods
        self.rng = random.Random(seed)
        self.counts: Counter = Counter()
        self.served: Counter = Counter()  # path (no query) -> complete GET responses with status 200
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="fault-proxy", daemon=True)

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def draw(self, method: str) -> tuple[str | None, bool]:
        """(fault or None, delayed?) for one request."""
        with self.lock:
            self.counts["requests"] += 1
            fault = None
            if method in self.methods:
                x = self.rng.random()
                for name, rate in self.rates.items():
                    if x < rate:
                        fault = name
                        break
                    x -= rate
            delayed = self.rng.random() < self.delay
            if fault:
                self.counts[fault] += 1
            if delayed:
                self.counts["delayed"] += 1
            return fault, delayed


def _make_handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body go out in two writes; with Nagle on, the client's delayed ACK stalls each
        # response by ~25-40 ms (measured: 37 ms per GET through the proxy vs 11 ms direct)
        disable_nagle_algorithm = True

        def log_message(self, *args) -> None:  # quiet
            pass

        def _reset(self) -> None:
            """Close with SO_LINGER 0: the client sees ECONNRESET, like a dropped S3 connection."""
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            fault, delayed = proxy.draw(self.command)
            if delayed:
                threading.Event().wait(proxy.delay_s)
            if fault == "reset":
                return self._reset()
            if fault == "slowdown":
                self.send_response(503, "Slow Down")
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(_SLOWDOWN_BODY)))
                self.end_headers()
                self.wfile.write(_SLOWDOWN_BODY)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
            upstream = http.client.HTTPConnection(*proxy.upstream, timeout=30)
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
            finally:
                upstream.close()
            self.send_response(response.status, response.reason)
            for k, v in response.getheaders():
                if k.lower() not in _HOP_HEADERS and (k.lower() != "content-length" or self.command == "HEAD"):
                    self.send_header(k, v)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if fault == "body_reset" and len(data) > 1:
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                return self._reset()
            if self.command != "HEAD":
                self.wfile.write(data)
            if self.command == "GET" and response.status == 200:
                with proxy.lock:
                    proxy.served[self.path.partition("?")[0]] += 1

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

    return Handler
