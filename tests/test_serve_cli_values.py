"""``bincount serve``'s values, checked exactly: the options (their ``--help`` lines, defaults, types and every
refusal with its bad value), the settings ``serve`` builds from them and hands to the app and to uvicorn, the
SIGTERM handler it holds while uvicorn runs, the ``/metrics`` text an operator scrapes, the batch-size
calibration's rates on a clock of our own, and the allocator's trim call.

No server starts here: ``uvicorn.Server`` is replaced by a stand-in that keeps the (real) ``uvicorn.Config`` it is
given and runs a test's callback instead of serving; the app, its ``Settings`` and the ``Config`` are the real ones.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import threading
from types import SimpleNamespace

import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from bincount import cli as bincount_cli
from bincount.bundle import BUNDLE_FILE, BundleError
from bincount.serve import calibrate, cli, memory
from bincount.serve.admission import Budgets
from bincount.serve.app import Settings
from bincount.serve.calibrate import best_batch_size, images_per_second
from bincount.serve.container import main as container_main
from bincount.serve.container import model_source
from bincount.serve.connections import ConnectionLimits, default_max_connections
from bincount.serve.inputs import Limits
from bincount.serve.metrics import Metrics, metrics_route


# -- the options ------------------------------------------------------------------------------------------------
def help_lines(monkeypatch, capsys) -> list[str]:
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping: one line per option, whatever the terminal
    assert bincount_cli.main(["serve", "--help"]) == 0
    return capsys.readouterr().out.splitlines()


def test_the_help_lines_users_read(monkeypatch, capsys):
    usage, *rest = help_lines(monkeypatch, capsys)
    assert usage == (
        "usage: bincount serve [-h] [--host HOST] [--port PORT] [--max-batch-size N] [--calibrate | --no-calibrate] "
        "[--max-wait-ms MS] [--max-body-bytes N] [--max-instances N] [--allow-s3 PREFIX] [--max-s3-bytes N] "
        "[--max-pixels N] [--endpoint-url URL] [--device {auto,cpu,cuda,mps}] [--timeout S] [--max-queue N] "
        "[--max-request-decoded-bytes N] [--max-decoded-bytes N] [--header-timeout S] [--body-timeout S] "
        "[--keep-alive S] [--max-connections N] [--graceful-timeout S] MODEL")
    assert rest == [
        "",
        "serve a model bundle over HTTP on SageMaker's inference contract (/ping, /invocations)",
        "",
        "positional arguments:",
        "  MODEL                 a bundle dir, a run dir, a model.tar.gz, or an s3:// URI of one",
        "",
        "options:",
        "  -h, --help            show this help message and exit",
        "  --host HOST           interface to bind (default: 127.0.0.1; 0.0.0.0 for all)",
        "  --port PORT           port (default: 8080)",
        "  --max-batch-size N    images per model call, across requests (default: 16; 1 turns batching off); at start "
        "the forward is timed at 1, 2, 4, ... N and batches are capped at the fastest",
        "  --calibrate, --no-calibrate",
        "                        time the batch sizes at start (a few seconds) and cap batches at the fastest "
        "(default: on; --no-calibrate caps them at --max-batch-size)",
        "  --max-wait-ms MS      how long the first image of a batch waits for more, only while other requests are "
        "still decoding (default: 5.0)",
        "  --max-body-bytes N    largest request body (default: 6291456, SageMaker's real-time limit)",
        "  --max-instances N     most images in one JSON request (default: 64)",
        '  --allow-s3 PREFIX     s3://bucket/prefix whose objects {"s3": ...} instances may name (repeatable; '
        "default: none)",
        "  --max-s3-bytes N      largest S3 object read for an instance (default: 33554432)",
        "  --max-pixels N        refuse images with more pixels, whatever the bundle allows (default: 40000000)",
        "  --endpoint-url URL    S3-compatible endpoint (default: AWS_ENDPOINT_URL_S3)",
        "  --device {auto,cpu,cuda,mps}",
        "                        where the model runs (default: auto)",
        "  --timeout S           each request's deadline; one that cannot be answered in time gets 503 at once, and "
        "a client may ask for less with X-Bincount-Deadline-Ms (default: 55.0, under SageMaker's 60 s)",
        "  --max-queue N         images admitted and not yet in a batch; more gets 503 with Retry-After "
        "(default: 256)",
        "  --max-request-decoded-bytes N",
        "                        a request's images decoded (width x height x channels from their headers); above it "
        "413 (default: 67108864)",
        "  --max-decoded-bytes N",
        "                        decoded bytes of all requests decoding at once; when full 503 (default: 268435456)",
        "  --header-timeout S    a request's header must arrive within this, or 408 and closed (default: 10.0)",
        "  --body-timeout S      a request's body must arrive within this, or 408 and closed (default: 30.0)",
        "  --keep-alive S        an idle keep-alive connection is closed after this (default: 5.0)",
        "  --max-connections N   open connections; past it the oldest idle one is closed (default: the file limit "
        f"less 128, here {default_max_connections()})",
        "  --graceful-timeout S  seconds to finish requests in flight after SIGTERM (default: 25)",
    ]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bincount serve")
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_the_defaults_each_option_parses_to():
    assert vars(parse("m")) == {
        "model": "m", "host": "127.0.0.1", "port": 8080, "max_batch_size": 16, "calibrate": True, "max_wait_ms": 5.0,
        "max_body_bytes": 6_291_456, "max_instances": 64, "allow_s3": [], "max_s3_bytes": 32 << 20,
        "max_pixels": 40_000_000, "endpoint_url": None, "device": "auto", "timeout": 55.0, "max_queue": 256,
        "max_request_decoded_bytes": 64 << 20, "max_decoded_bytes": 256 << 20, "header_timeout": 10.0,
        "body_timeout": 30.0, "keep_alive": 5.0, "max_connections": None, "graceful_timeout": 25,
    }


EVERY_OPTION = ["--host", "0.0.0.0", "--port", "9001", "--max-batch-size", "4", "--no-calibrate",
                "--max-wait-ms", "7.5", "--max-body-bytes", "1000", "--max-instances", "3",
                "--allow-s3", "s3://bins/photos/X/", "--allow-s3", "s3://other/", "--max-s3-bytes", "2000",
                "--max-pixels", "5000", "--endpoint-url", "http://127.0.0.1:9000", "--device", "cpu",
                "--timeout", "12.5", "--max-queue", "9", "--max-request-decoded-bytes", "3000",
                "--max-decoded-bytes", "4000", "--header-timeout", "2", "--body-timeout", "3.5",
                "--keep-alive", "1.5", "--max-connections", "50", "--graceful-timeout", "7"]


def test_every_option_parses_to_its_typed_value():
    values = vars(parse("m", *EVERY_OPTION))
    assert values == {
        "model": "m", "host": "0.0.0.0", "port": 9001, "max_batch_size": 4, "calibrate": False, "max_wait_ms": 7.5,
        "max_body_bytes": 1000, "max_instances": 3, "allow_s3": ["s3://bins/photos/X", "s3://other"],
        "max_s3_bytes": 2000, "max_pixels": 5000, "endpoint_url": "http://127.0.0.1:9000", "device": "cpu",
        "timeout": 12.5, "max_queue": 9, "max_request_decoded_bytes": 3000, "max_decoded_bytes": 4000,
        "header_timeout": 2.0, "body_timeout": 3.5, "keep_alive": 1.5, "max_connections": 50, "graceful_timeout": 7,
    }
    assert [type(values[k]) for k in ("port", "max_batch_size", "max_wait_ms", "header_timeout", "max_connections",
                                      "graceful_timeout")] == [int, int, float, float, int, int]
    assert parse("m", "--calibrate").calibrate is True and parse("m", "--max-wait-ms", "0").max_wait_ms == 0.0


BAD_VALUES = [
    (["--port", "70000"], "argument --port: expected a port 0-65535, got '70000'"),
    (["--port", "http"], "argument --port: expected a port 0-65535, got 'http'"),
    (["--max-batch-size", "0"], "argument --max-batch-size: expected a positive integer, got '0'"),
    (["--max-wait-ms", "10001"], "argument --max-wait-ms: expected milliseconds between 0 and 10000, got '10001'"),
    (["--max-wait-ms", "-1"], "argument --max-wait-ms: expected milliseconds between 0 and 10000, got '-1'"),
    (["--max-body-bytes", "0"], "argument --max-body-bytes: expected a positive integer, got '0'"),
    (["--max-instances", "-2"], "argument --max-instances: expected a positive integer, got '-2'"),
    (["--allow-s3", "http://bins/photos"],
     "argument --allow-s3: 'http://bins/photos' is not an S3 URL; expected s3://BUCKET[/PREFIX]"),
    (["--allow-s3", "s3://bins/a//b"], "argument --allow-s3: 's3://bins/a//b': the prefix 'a//b' has empty, '.' or "
                                       "'..' parts"),
    (["--max-s3-bytes", "1.5"], "argument --max-s3-bytes: expected a positive integer, got '1.5'"),
    (["--max-pixels", "0"], "argument --max-pixels: expected a positive integer, got '0'"),
    (["--device", "tpu"], "argument --device: invalid choice: 'tpu' (choose from 'auto', 'cpu', 'cuda', 'mps')"),
    (["--timeout", "0"], "argument --timeout: expected seconds above 0 and at most 3600, got '0'"),
    (["--timeout", "3601"], "argument --timeout: expected seconds above 0 and at most 3600, got '3601'"),
    (["--max-queue", "0"], "argument --max-queue: expected a positive integer, got '0'"),
    (["--max-request-decoded-bytes", "0"],
     "argument --max-request-decoded-bytes: expected a positive integer, got '0'"),
    (["--max-decoded-bytes", "x"], "argument --max-decoded-bytes: expected a positive integer, got 'x'"),
    (["--header-timeout", "0"], "argument --header-timeout: expected seconds above 0 and at most 3600, got '0'"),
    (["--body-timeout", "-1"], "argument --body-timeout: expected seconds above 0 and at most 3600, got '-1'"),
    (["--keep-alive", "4000"], "argument --keep-alive: expected seconds above 0 and at most 3600, got '4000'"),
    (["--max-connections", "0"], "argument --max-connections: expected a positive integer, got '0'"),
    (["--graceful-timeout", "0"], "argument --graceful-timeout: expected a positive integer, got '0'"),
    (["--calibrate=yes"], "argument --calibrate/--no-calibrate: ignored explicit argument 'yes'"),
]


@pytest.mark.parametrize("argv, error", BAD_VALUES, ids=["=".join(argv) for argv, _ in BAD_VALUES])
def test_each_bad_value_is_a_usage_error_naming_the_option_and_the_value(argv, error, capsys, tmp_path):
    assert bincount_cli.main(["serve", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("usage: bincount serve [-h]")
    assert err[-1] == f"bincount serve: error: {error}"


# -- the settings serve builds ----------------------------------------------------------------------------------
class FakeServer:
    """uvicorn.Server's place: keeps the real Config; ``run`` calls the test's callback instead of serving."""

    def __init__(self, config) -> None:
        self.config, self.should_exit = config, False
        self.sigterm_while_running = None
        FakeServer.started.append(self)

    def run(self) -> None:
        self.sigterm_while_running = signal.getsignal(signal.SIGTERM)
        FakeServer.during_run(self)


@pytest.fixture
def served(monkeypatch):
    """The FakeServers started by ``cli.serve`` (a fresh list per test); no _Stderr handler on
    ``bincount.serve`` (or the root logger) before the test, and both loggers as they were after it."""
    import uvicorn

    monkeypatch.setattr(uvicorn, "Server", FakeServer)
    monkeypatch.setattr(FakeServer, "started", [], raising=False)
    monkeypatch.setattr(FakeServer, "during_run", staticmethod(lambda server: None), raising=False)
    loggers = [logging.getLogger("bincount.serve"), logging.getLogger()]
    kept = [(logger, list(logger.handlers), logger.level) for logger in loggers]
    for logger in loggers:
        for h in list(logger.handlers):
            if isinstance(h, cli._Stderr):
                logger.removeHandler(h)
    yield FakeServer.started
    for logger, handlers, level in kept:
        logger.handlers[:] = handlers
        logger.setLevel(level)


def settings_of(server: FakeServer) -> Settings:
    return server.config.app.state.bincount.settings


def test_the_defaults_reach_the_app_and_uvicorn(served, tmp_path):
    assert cli.run(parse(str(tmp_path))) == 0
    [server] = served
    settings = settings_of(server)
    assert dataclasses.replace(settings, on_fail=None) == Settings(
        model=str(tmp_path), limits=Limits(), max_batch_size=16, calibrate_batch_size=True, max_wait_ms=5.0,
        device="auto", budgets=Budgets(), connections=ConnectionLimits(max_connections=default_max_connections()))
    assert settings.limits.s3 == {} and settings.limits.allow_s3 == ()
    config = server.config
    assert (config.host, config.port, config.timeout_graceful_shutdown, config.timeout_keep_alive) == (
        "127.0.0.1", 8080, 25, 5.0)
    assert (config.log_level, config.access_log, config.lifespan) == ("info", False, "on")
    assert config.http.__name__ == "GuardedProtocol"


def test_every_option_reaches_the_app_and_uvicorn(served, tmp_path):
    assert cli.serve(parse(str(tmp_path), *EVERY_OPTION)) == 0
    [server] = served
    assert dataclasses.replace(settings_of(server), on_fail=None) == Settings(
        model=str(tmp_path),
        limits=Limits(max_body_bytes=1000, max_instances=3, max_s3_bytes=2000,
                      allow_s3=("s3://bins/photos/X", "s3://other"), s3={"endpoint_url": "http://127.0.0.1:9000"},
                      max_pixels=5000),
        max_batch_size=4, calibrate_batch_size=False, max_wait_ms=7.5, device="cpu",
        budgets=Budgets(timeout_s=12.5, max_queue_images=9, max_request_decoded_bytes=3000, max_decoded_bytes=4000),
        connections=ConnectionLimits(header_timeout_s=2.0, body_timeout_s=3.5, keep_alive_s=1.5, max_connections=50))
    config = server.config
    assert (config.host, config.port, config.timeout_graceful_shutdown, config.timeout_keep_alive) == (
        "0.0.0.0", 9001, 7, 1.5)
    assert server.config.app.state.bincount.admission.max_batch_size == 4


def test_an_s3_model_is_not_looked_for_on_disk_but_a_local_one_is(served, tmp_path, capsys):
    assert cli.serve(parse("s3://bins/models/model.tar.gz")) == 0
    assert settings_of(served[-1]).model == "s3://bins/models/model.tar.gz"
    missing = tmp_path / "missing"
    assert bincount_cli.main(["serve", str(missing)]) == 1
    assert capsys.readouterr().err == (f"bincount serve: error: model {missing} does not exist (a bundle dir, run dir, "
                                       "model.tar.gz or s3:// URI)\n")
    assert len(served) == 1, "nothing is served for a model that is not there"


def test_a_request_budget_above_the_server_wide_one_is_refused_equal_is_fine(served, tmp_path, capsys):
    assert bincount_cli.main(["serve", str(tmp_path), "--max-request-decoded-bytes", "2000",
                              "--max-decoded-bytes", "1999"]) == 1
    assert capsys.readouterr().err == (
        "bincount serve: error: --max-request-decoded-bytes 2000 is above --max-decoded-bytes 1999 (the server-wide "
        "budget): no request that large could be served; lower the first or raise the second\n")
    assert served == []
    assert cli.serve(parse(str(tmp_path), "--max-request-decoded-bytes", "2000", "--max-decoded-bytes", "2000")) == 0
    assert settings_of(served[-1]).budgets == Budgets(max_request_decoded_bytes=2000, max_decoded_bytes=2000)


def test_a_failed_load_stops_the_server_and_is_raised(served, tmp_path, capsys):
    def load_fails(server: FakeServer) -> None:
        state = server.config.app.state.bincount
        state.error = BundleError("weights.safetensors is missing")
        assert server.should_exit is False
        state.settings.on_fail(state.error)  # what State.load calls
        assert server.should_exit is True

    FakeServer.during_run = staticmethod(load_fails)
    assert bincount_cli.main(["serve", str(tmp_path)]) == 1
    assert capsys.readouterr().err == "bincount serve: error: weights.safetensors is missing\n"
    assert served[-1].should_exit is True


def test_sigterm_is_held_while_uvicorn_runs_and_given_back_after(served, tmp_path):
    def mine(*_):
        pass

    before = signal.signal(signal.SIGTERM, mine)
    try:
        assert cli.serve(parse(str(tmp_path))) == 0
        held = served[-1].sigterm_while_running
        assert callable(held) and held not in (mine, signal.SIG_DFL, signal.SIG_IGN)
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)


def test_serve_runs_outside_the_main_thread_without_touching_signals(served, tmp_path):
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(_try(cli.serve, parse(str(tmp_path)))))
    thread.start()
    thread.join(30)
    assert outcome == [0]
    assert served[-1].sigterm_while_running == signal.getsignal(signal.SIGTERM)


def _try(fn, *args):
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - the test compares it
        return e


def test_the_servers_own_lines_get_a_stderr_handler_at_info(served, tmp_path):
    logger = logging.getLogger("bincount.serve")
    logger.setLevel(logging.WARNING)
    cli.serve(parse(str(tmp_path)))
    assert logger.level == logging.INFO
    assert [type(h) for h in logger.handlers if isinstance(h, cli._Stderr)] == [cli._Stderr]
    assert not any(isinstance(h, cli._Stderr) for h in logging.getLogger().handlers)


# -- the container entry -----------------------------------------------------------------------------------------
@pytest.fixture
def handed(monkeypatch):
    """The argv the container entry hands to ``bincount``'s CLI (which would start a server)."""
    calls: list[list[str]] = []
    monkeypatch.setattr(bincount_cli, "main", lambda argv: calls.append(argv) or 0)
    for name in ("SM_MODEL_DIR", "SAGEMAKER_BIND_TO_PORT", "SAGEMAKER_MAX_PAYLOAD_IN_MB"):
        monkeypatch.delenv(name, raising=False)
    return calls


def test_the_containers_help_lines(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit) as stop:
        container_main(["--help"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.splitlines() == [
        "usage: bincount.serve.container [-h] [--model-dir MODEL_DIR] [--host HOST] [--port PORT] [{serve}]",
        "",
        "The image's entry point: ``python -m bincount.serve.container serve`` is what SageMaker runs.",
        "",
        "positional arguments:",
        "  {serve}               what SageMaker passes",
        "",
        "options:",
        "  -h, --help            show this help message and exit",
        "  --model-dir MODEL_DIR",
        "  --host HOST",
        "  --port PORT",
    ]


def test_batch_transforms_body_limit_is_added_after_the_options_given(handed, monkeypatch, tmp_path):
    monkeypatch.setenv("SAGEMAKER_MAX_PAYLOAD_IN_MB", "100")
    assert container_main(["serve", "--model-dir", str(tmp_path), "--max-queue", "8", "--device", "cpu"]) == 0
    assert handed == [["serve", str(tmp_path), "--host", "0.0.0.0", "--port", "8080",
                       "--max-queue", "8", "--device", "cpu", "--max-body-bytes", "104857600"]]


def test_a_run_dir_with_an_archive_beside_its_bundle_serves_the_bundle(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / BUNDLE_FILE).write_text("{}")
    (tmp_path / "checkpoints.tar.gz").write_bytes(b"")
    assert model_source(tmp_path) == tmp_path
    (tmp_path / "model" / BUNDLE_FILE).unlink()
    assert model_source(tmp_path) == tmp_path / "checkpoints.tar.gz"


# -- /metrics ---------------------------------------------------------------------------------------------------
BATCH = ("1.0", "2.0", "4.0", "8.0", "16.0", "32.0", "64.0", "128.0", "256.0", "+Inf")
LATENCY = ("0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0",
           "30.0", "60.0", "+Inf")
STAGES = ("queue", "decode", "preprocess", "model", "total")


def test_a_fresh_servers_metrics_text():
    text = Metrics().render().decode()
    lines = [line for line in text.splitlines() if "_created" not in line]  # creation times vary
    assert lines == [
        "# HELP bincount_requests_total POST /invocations answers, by HTTP status",
        "# TYPE bincount_requests_total counter",
        "# HELP bincount_queue_images images admitted and not yet taken into a model batch",
        "# TYPE bincount_queue_images gauge",
        "bincount_queue_images 0.0",
        "# HELP bincount_decoded_bytes_reserved decoded-image bytes reserved by requests from admission to their "
        "answer (the server-wide memory budget in use)",
        "# TYPE bincount_decoded_bytes_reserved gauge",
        "bincount_decoded_bytes_reserved 0.0",
        "# HELP bincount_batch_size images per model call",
        "# TYPE bincount_batch_size histogram",
        *(f'bincount_batch_size_bucket{{le="{le}"}} 0.0' for le in BATCH),
        "bincount_batch_size_count 0.0",
        "bincount_batch_size_sum 0.0",
        "# HELP bincount_latency_seconds seconds per image (queue), batch (preprocess, model) or request "
        "(decode, total)",
        "# TYPE bincount_latency_seconds histogram",
        *(line for stage in STAGES for line in (
            *(f'bincount_latency_seconds_bucket{{le="{le}",stage="{stage}"}} 0.0' for le in LATENCY),
            f'bincount_latency_seconds_count{{stage="{stage}"}} 0.0',
            f'bincount_latency_seconds_sum{{stage="{stage}"}} 0.0')),
        "# HELP bincount_images_total images answered by the model",
        "# TYPE bincount_images_total counter",
        "bincount_images_total 0.0",
        "# HELP bincount_abandoned_images_total images dropped before the model, by reason (disconnect: the client "
        "left; deadline: it passed while queued)",
        "# TYPE bincount_abandoned_images_total counter",
        'bincount_abandoned_images_total{reason="disconnect"} 0.0',
        'bincount_abandoned_images_total{reason="deadline"} 0.0',
    ]


def test_metrics_after_events_by_name_label_and_value():
    m = Metrics()
    m.requests.labels("200").inc(3)
    m.requests.labels("503").inc()
    m.queue.set(5)
    m.decoded_bytes.set(1024)
    m.batch_size.observe(3)
    m.batch_size.observe(16)
    m.latency.labels("model").observe(0.02)
    m.images.inc(19)
    m.abandoned.labels("deadline").inc(2)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(m.render().decode()) for s in family.samples
               if not s.name.endswith("_created")}
    picked = {k: v for k, v in samples.items() if v}
    assert picked == {
        ("bincount_requests_total", (("status", "200"),)): 3.0,
        ("bincount_requests_total", (("status", "503"),)): 1.0,
        ("bincount_queue_images", ()): 5.0,
        ("bincount_decoded_bytes_reserved", ()): 1024.0,
        **{("bincount_batch_size_bucket", (("le", le),)): 1.0 for le in ("4.0", "8.0")},
        **{("bincount_batch_size_bucket", (("le", le),)): 2.0 for le in BATCH[4:]},
        ("bincount_batch_size_count", ()): 2.0,
        ("bincount_batch_size_sum", ()): 19.0,
        **{("bincount_latency_seconds_bucket", (("le", le), ("stage", "model"))): 1.0 for le in LATENCY[4:]},
        ("bincount_latency_seconds_count", (("stage", "model"),)): 1.0,
        ("bincount_latency_seconds_sum", (("stage", "model"),)): 0.02,
        ("bincount_images_total", ()): 19.0,
        ("bincount_abandoned_images_total", (("reason", "deadline"),)): 2.0,
    }
    assert samples[("bincount_abandoned_images_total", (("reason", "disconnect"),))] == 0.0


def test_the_metrics_route_answers_the_registrys_text_as_prometheus_text():
    m = Metrics()
    m.images.inc(7)
    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(metrics=m)))
    response = asyncio.run(metrics_route(request))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=1.0.0; charset=utf-8"
    assert b"\nbincount_images_total 7.0\n" in response.body
    assert response.body.split(b"\n")[:2] == m.render().split(b"\n")[:2]


# -- memory -----------------------------------------------------------------------------------------------------
def test_release_free_memory_asks_the_allocator_to_trim_everything_it_can(monkeypatch):
    calls: list = []
    monkeypatch.setattr(memory, "_malloc_trim", lambda: calls.append)
    assert memory.release_free_memory() is True
    assert calls == [0], "malloc_trim(0): keep no padding at the top of the heap"
    monkeypatch.setattr(memory, "_malloc_trim", lambda: None)  # not glibc
    assert memory.release_free_memory() is False


# -- calibration on a clock of our own ---------------------------------------------------------------------------
class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def perf_counter(self) -> float:
        return self.now


class ClockedModel:
    """Each ``predict`` advances ``clock`` by ``seconds(batch size, call number)``; keeps the batch shapes."""

    def __init__(self, clock: Clock, seconds) -> None:
        self.clock, self.seconds, self.shapes = clock, seconds, []

    def predict(self, batch) -> None:
        self.shapes.append(tuple(batch.shape))
        self.clock.now += self.seconds(len(batch), len(self.shapes))


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock(64.0)
    monkeypatch.setattr(calibrate, "time", c)
    return c


@pytest.mark.parametrize("per_call, budget, runs, rate", [
    (0.25, 0.5, 2, 16.0),  # 2 runs of 4 images in 0.5 s
    (0.25, 1.0, 4, 16.0),  # exactly at the budget after 4: no fifth
    (0.25, 0.0, 2, 16.0),  # at least two runs, whatever the budget
    (0.125, 0.5, 4, 32.0),
    (2.0, 0.5, 2, 2.0),
])
def test_images_per_second_runs_at_least_twice_and_until_the_budget_is_spent(clock, per_call, budget, runs, rate):
    model = ClockedModel(clock, lambda n, i: per_call)
    assert images_per_second(model, torch.zeros(4, 3, 2, 2), budget) == rate
    assert model.shapes == [(4, 3, 2, 2)] * runs


def test_best_batch_size_times_each_size_after_a_warm_up_and_keeps_its_best_round(clock, caplog):
    # per call: size 1 takes 2 s (0.5 image/s), size 2 takes 1 s (2 images/s), size 3 takes 2 s (1.5 images/s);
    # size 2's first timed round is slow (4 s a call): its best round counts
    def seconds(n: int, call: int) -> float:
        if n == 2 and call in (5, 6):  # calls 1-3 warm up; 4-9 are round one (two calls a size)
            return 4.0
        return {1: 2.0, 2: 1.0, 3: 2.0}[n]

    model = ClockedModel(clock, seconds)
    with caplog.at_level(logging.INFO, logger="bincount.serve"):
        chosen, rates = best_batch_size(model, torch.zeros(3, 2, 2), 3, budget_s=0.0)
    assert (chosen, rates) == (2, {1: 0.5, 2: 2.0, 3: 1.5})
    assert [s[0] for s in model.shapes] == [1, 2, 3] + [1, 1, 2, 2, 3, 3] * 2
    assert set(model.shapes) == {(1, 3, 2, 2), (2, 3, 2, 2), (3, 3, 2, 2)}
    assert [r.getMessage() for r in caplog.records if r.name == "bincount.serve"] == [
        "batch sizes timed (images/s): 1: 0.5, 2: 2.0, 3: 1.5; batches capped at 2 of --max-batch-size 3"]


def test_best_batch_size_times_each_size_for_the_budget_it_is_given(clock):
    # 1/64 s a call and a budget of 4/64 s: four calls a size and round (the default budget, 0.1 s, takes seven)
    model = ClockedModel(clock, lambda n, i: 1 / 64)
    chosen, rates = best_batch_size(model, torch.zeros(3, 2, 2), 2, budget_s=4 / 64)
    assert (chosen, rates) == (2, {1: 64.0, 2: 128.0})
    assert [s[0] for s in model.shapes] == [1, 2] + ([1] * 4 + [2] * 4) * 2


def test_a_smaller_size_exactly_at_95_percent_of_the_best_rate_wins(clock):
    # size 1: 19 images/s (2 calls of 1/19 s); size 2: 20 images/s (2 calls of 0.1 s); 0.95 * 20 == 19.0 exactly.
    # The warm-up takes no time and the clock starts at 0, so round one's rates are exact; round two is slower.
    def seconds(n: int, call: int) -> float:
        if call <= 2:
            return 0.0
        if call <= 6:
            return 1 / 19 if n == 1 else 0.1
        return 1.0

    clock.now = 0.0
    model = ClockedModel(clock, seconds)
    chosen, rates = best_batch_size(model, torch.zeros(3, 2, 2), 2, budget_s=0.0)
    assert rates == {1: 19.0, 2: 20.0} and 0.95 * rates[2] == rates[1]
    assert chosen == 1, "within 5% of the best, the bound included"
