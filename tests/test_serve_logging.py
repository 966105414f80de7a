"""``bincount serve``'s own lines reach stderr in uvicorn's format, whichever stderr is current.

uvicorn configures only its own loggers; the server's (model loaded, batch sizes, a client gone) went
nowhere until ``serve`` gave them a handler. That handler must follow ``sys.stderr``: serve can run several
times in one process (tests, notebooks) and the stream of an earlier run may be closed.
"""

from __future__ import annotations

import io
import logging
import sys

from bincount.serve.cli import _log_like_uvicorn


def test_the_servers_lines_follow_the_current_stderr(monkeypatch):
    logger = logging.getLogger("test-serve-logging")  # not under bincount.serve: an earlier serve's handler is there
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    _log_like_uvicorn(logger)
    _log_like_uvicorn(logger)  # a second serve in the process adds no second handler
    logger.info("model m loaded on cpu (test_resnet); ready")
    assert first.getvalue() == "INFO:     model m loaded on cpu (test_resnet); ready\n"
    first.close()
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    logger.warning("timing batch sizes failed")
    assert second.getvalue() == "WARNING:  timing batch sizes failed\n", "no 'Logging error' on a closed stream"
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
