"""``bincount serve``'s app in process: uvicorn in a thread on a free loopback port."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import httpx
from s3_server import free_port

from bincount.serve.app import Settings, create_app


@contextmanager
def running(settings: Settings):
    """uvicorn in a thread on a free loopback port; yields (base URL, app)."""
    import uvicorn

    from bincount.serve.connections import uvicorn_config

    app = create_app(settings)
    port = free_port()
    # the server's own config (header and body deadlines, keep-alive, connection limit), as `bincount serve` runs
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, settings.connections, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while not app.state.bincount.ready.is_set() or not answers_ping(url):
            assert time.time() < deadline and app.state.bincount.error is None, app.state.bincount.error
            time.sleep(0.05)
        yield url, app
    finally:
        server.should_exit = True
        thread.join(30)


def answers_ping(url: str) -> bool:
    """Whether a server answers ``/ping`` at ``url`` (any status: it is up, loaded or not)."""
    try:
        httpx.get(url + "/ping", timeout=5)
        return True
    except httpx.TransportError:
        return False


def read_until_closed(s: socket.socket) -> bytes:
    """What the server sends on ``s`` until it closes the connection (bounded by the socket's timeout)."""
    out = b""
    try:
        while part := s.recv(65536):
            out += part
    except (ConnectionResetError, socket.timeout):
        pass
    return out
