"""The run report: built after a real tiny training run, self-contained, rebuildable, never fatal, and
it opens in a real headless Chromium without console errors or network requests.

One tiny run (60 synthetic bins, one epoch, timm's test_resnet at 32 px) trains once for the module.
Chromium is driven over the Chrome DevTools Protocol (a websocket on 127.0.0.1): every console message,
uncaught exception, log entry and network request of the page load is recorded. The browser tests skip
where no Chromium is installed (``apt-get install chromium-headless-shell`` or ``chromium``, or set
BINCOUNT_CHROMIUM to its path).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers.train import train_tiny
from omegaconf import OmegaConf

CHARTS = ("learning_curves", "confusion_matrix", "per_class", "error_distribution")
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chromium-headless-shell", "headless_shell")
TIMEOUT_S = 60


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("report_run")
    train_tiny(tmp, "logger=csv")
    (run,) = (tmp / "logs" / "train" / "runs").iterdir()
    return run


@pytest.mark.slow
def test_every_run_gets_a_self_contained_report_with_png_charts(run_dir):
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    for title in ("summary", "learning curves", "confusion matrix", "per-class precision, recall, F1",
                  "error distribution", "worst mistakes", "config"):
        assert f">{title}</h2>" in page, title
    # Nothing the page refers to lives outside it: every src/href is a data URI or an in-page anchor.
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), [r[:40] for r in refs if not r.startswith(("data:", "#"))]
    assert "<script" not in page and "@import" not in page and "url(" not in page
    for name in CHARTS:
        png = (run_dir / "report" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2000, name
    assert page.count("data:image/png;base64,") == len(CHARTS)
    # The per-class table carries the run's own numbers.
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert f"{metrics['test/f1_macro']:.4g}" in page
    thumbs = page.count("data:image/jpeg;base64,")
    wrong = sum(1 for line in (run_dir / "predictions.csv").read_text().splitlines()[1:]
                if line.split(",")[1] != line.split(",")[2])
    assert thumbs == min(wrong, 12), (thumbs, wrong)


@pytest.mark.slow
def test_report_command_rebuilds_the_same_page(run_dir, tmp_path):
    from bincount.cli import main

    out = tmp_path / "again.html"
    assert main(["report", str(run_dir), "--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == (run_dir / "report.html").read_text(encoding="utf-8")


def test_report_command_names_what_is_missing(tmp_path, capsys):
    from bincount.cli import main

    (tmp_path / "checkpoints").mkdir()
    assert main(["report", str(tmp_path)]) == 1
    assert "no metrics.json" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_a_failing_report_is_a_warning_and_the_results_stay(run_dir, tmp_path, caplog):
    from bincount.report import after_run

    broken = Path(shutil.copytree(run_dir, tmp_path / "run"))
    (broken / "report.html").unlink()
    (broken / "predictions.csv").write_text("not,a,predictions,file\n")
    before = (broken / "metrics.json").read_bytes()
    with caplog.at_level(logging.WARNING):
        after_run(OmegaConf.create({"report": True}), broken, {}, [])
    assert "Report not written" in caplog.text and "not a predictions.csv" in caplog.text
    assert (broken / "metrics.json").read_bytes() == before and not (broken / "report.html").exists()


@pytest.mark.slow
def test_report_false_writes_no_report(run_dir, tmp_path):
    from bincount.report import after_run

    copy = Path(shutil.copytree(run_dir, tmp_path / "run"))
    (copy / "report.html").unlink()
    after_run(OmegaConf.create({"report": False}), copy, {}, [])
    assert not (copy / "report.html").exists()


def test_worst_mistakes_rank_by_error_then_confidence_and_survive_missing_images(tmp_path):
    from bincount.report.mistakes import collect

    predictions = {
        "ids": ["a", "b", "c", "d"], "counts": [1, 2, 3],
        "true_counts": np.array([1, 1, 3, 2]), "pred_counts": np.array([2, 3, 1, 2]),
        "probs": np.array([[0.1, 0.9, 0.0], [0.2, 0.2, 0.6], [0.7, 0.1, 0.2], [0.0, 1.0, 0.0]]),
    }
    (tmp_path / "bin-images").mkdir()
    from PIL import Image

    Image.new("RGB", (300, 200), "red").save(tmp_path / "bin-images" / "c.jpg")
    (tmp_path / "bin-images" / "b.jpg").write_bytes(b"not a jpeg")
    mistakes = collect(predictions, str(tmp_path))
    assert [m.id for m in mistakes] == ["c", "b", "a"]  # |err| 2 (p .7), 2 (p .6), then 1; d is right
    assert mistakes[0].thumbnail.startswith("data:image/jpeg;base64,")
    assert mistakes[1].thumbnail is None and "unreadable image b.jpg" in mistakes[1].note
    assert mistakes[2].thumbnail is None and "image not found" in mistakes[2].note
    remote = collect(predictions, "s3://bucket/abid")
    assert all(m.thumbnail is None and "not local" in m.note for m in remote)


def test_report_key_is_in_the_schema():
    from bincount.config import ConfigError, check_schema

    assert check_schema(OmegaConf.create({"report": False})).report is False
    with pytest.raises(ConfigError, match="report"):
        check_schema(OmegaConf.create({"report": "sometimes"}))


# -- in a real browser ----------------------------------------------------------------------------
def find_browser() -> str | None:
    explicit = os.environ.get("BINCOUNT_CHROMIUM")
    return explicit or next((path for path in map(shutil.which, BROWSERS) if path), None)


def load_page(browser: str, page: Path, screenshot: Path | None = None) -> tuple[list[dict], list[bool]]:
    """Open ``page`` in a fresh headless profile; return the CDP events of the load and each image's decode state."""
    websocket = pytest.importorskip("websocket", reason="websocket-client (dev extra) drives Chromium")
    profile = tempfile.mkdtemp(prefix="bincount-chromium-")
    proc = subprocess.Popen(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-address=127.0.0.1",
         "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + TIMEOUT_S
    try:
        port = None
        while port is None:  # Chromium prints its DevTools address on stderr
            line = proc.stderr.readline()
            assert line or proc.poll() is None, f"{browser} exited with {proc.returncode} before DevTools started"
            assert time.time() < deadline, "Chromium did not start DevTools in time"
            if m := re.search(r"ws://127\.0\.0\.1:(\d+)/", line):
                port = int(m.group(1))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as reply:
            target = next(t for t in json.load(reply) if t["type"] == "page")
        ws = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=TIMEOUT_S, suppress_origin=True)
        events: list[dict] = []
        ids = iter(range(1, 1_000_000))

        def call(method: str, **params):
            i = next(ids)
            ws.send(json.dumps({"id": i, "method": method, "params": params}))
            while True:
                msg = json.loads(ws.recv())
                if msg.get("id") == i:
                    assert "error" not in msg, msg
                    return msg["result"]
                events.append(msg)

        for domain in ("Runtime", "Log", "Network", "Page"):
            call(f"{domain}.enable")
        call("Page.navigate", url=page.resolve().as_uri())
        while not any(e.get("method") == "Page.loadEventFired" for e in events):
            assert time.time() < deadline, "the page did not finish loading"
            events.append(json.loads(ws.recv()))
        images = call("Runtime.evaluate", returnByValue=True,
                      expression="Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
        if screenshot:
            shot = call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        ws.close()
        return events, images["result"]["value"]
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stderr.close()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> str:
    path = find_browser()
    if not path:
        pytest.skip(f"no Chromium found (looked for {', '.join(BROWSERS)} on PATH and $BINCOUNT_CHROMIUM)")
    return path


@pytest.mark.slow
def test_report_opens_in_chromium_without_errors_or_network(browser, run_dir, tmp_path):
    report = run_dir / "report.html"
    events, images = load_page(browser, report, screenshot=tmp_path / "report.png")
    methods = [e.get("method") for e in events]
    errors = [e["params"] for e in events if e.get("method") in ("Runtime.exceptionThrown", "Network.loadingFailed")
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "warning", "assert"))
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] in ("error", "warning"))]
    assert not errors, errors
    requests = [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]
    assert requests and requests[0] == report.resolve().as_uri(), requests[:1]
    outside = [u[:60] for u in requests[1:] if not u.startswith("data:")]
    assert not outside, f"the report loaded something besides itself: {outside}"
    assert "Page.loadEventFired" in methods
    assert len(images) >= 4 and all(images), images  # charts and thumbnails decode
    assert (tmp_path / "report.png").stat().st_size > 10_000  # it rendered something


def test_the_check_catches_a_page_that_fetches_from_the_network(browser, tmp_path):
    """The recorder is not blind: an external stylesheet and a script error both show up."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><head><link rel="stylesheet" href="http://127.0.0.1:9/x.css">'
                    "<script>console.error('boom'); undefined_function();</script></head><body></body></html>")
    events, _ = load_page(browser, page)
    urls = [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]
    assert "http://127.0.0.1:9/x.css" in urls
    assert any(e.get("method") == "Runtime.exceptionThrown" for e in events)
    assert any(e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error" for e in events)


@pytest.mark.slow
def test_without_matplotlib_the_page_keeps_its_tables(run_dir, tmp_path, monkeypatch):
    from bincount.report import charts
    from bincount.report.page import write_report

    def no_matplotlib():
        raise ImportError("No module named 'matplotlib'")

    monkeypatch.setattr(charts, "pyplot", no_matplotlib)
    page = write_report(run_dir, tmp_path / "plain.html").read_text(encoding="utf-8")
    assert "charts need matplotlib" in page and "pip install -c constraints.txt matplotlib" in page
    assert "data:image/png" not in page and "true \\ pred</th>" in page and ">per-class precision, recall, F1</h2>" in page
    assert not (tmp_path / "report").exists()


def test_learning_curves_leave_out_the_final_evaluation(tmp_path):
    """The best checkpoint's evaluation restarts at step 0, epoch 0: not a point on the curve."""
    from bincount.report.charts import _series
    from bincount.report.rundata import read_history

    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,val/acc\n0,9,0.2\n1,19,0.5\n1,19,\n0,0,0.5\n")
    history = read_history(path)
    assert len(history) == 3 and history[-1]["val/acc"] is None
    assert _series(history, "val/acc") == ([0.0, 1.0], [0.2, 0.5])
