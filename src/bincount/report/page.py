"""``report.html``: one self-contained page per run (inline CSS, base64 images, no scripts, no network).

The page must open anywhere, from a laptop's file browser to an e-mail attachment, years later: so no
CDN scripts or fonts, no external files, no JavaScript at all. The charts are also written as PNG files
into ``report/`` next to it for people who prefer files.
"""

from __future__ import annotations

import base64
import html
import logging
import os
from pathlib import Path
from typing import Optional

import numpy as np

from bincount.report import charts
from bincount.report.mistakes import collect
from bincount.report.profile import PROFILE_DIR, summaries
from bincount.report.rundata import RunData, load_run

log = logging.getLogger(__name__)

HEADLINE = ("test/acc", "test/rmse", "test/mae", "test/within_one", "test/f1_macro", "test/f1_weighted",
            "val/acc", "val/rmse", "val/loss", "objective", "epochs_trained", "duration_s")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.85em}
img.chart{max-width:100%}.grid{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #ddd;padding:6px;width:170px;font-size:.85em}
.card img{display:block;max-width:160px;max-height:160px}.muted{color:#777}nav a{margin-right:1em}
"""


def _e(value) -> str:
    return html.escape(str(value))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return _e(value) if value is not None else "—"


def _table(header: list[str], rows: list[list], left: int = 1) -> str:
    head = "".join(f'<th class="{"l" if i < left else ""}">{_e(h)}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{_fmt(v)}</td>' for i, v in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(png: bytes, alt: str) -> str:
    return f'<img class="chart" alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _confusion_table(matrix: list[list[int]], counts: list[int]) -> str:
    """The matrix as a shaded HTML table: readable without matplotlib and by screen readers."""
    peak = max((max(r) for r in matrix), default=0) or 1
    head = '<tr><th class="l">true \\ pred</th>' + "".join(f"<th>{c}</th>" for c in counts) + "</tr>"
    rows = []
    for c, row in zip(counts, matrix):
        cells = "".join(f'<td style="background:rgba(33,102,172,{0.85 * n / peak:.2f});'
                        f'color:{"#fff" if n > peak / 2 else "#222"}">{int(n)}</td>' for n in row)
        rows.append(f"<tr><th>{c}</th>{cells}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


class _Charts:
    """Draws each chart once, writes it to ``report/<name>.png`` and returns the inline image tag."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.missing = folder, None
        try:
            charts.pyplot()
        except ImportError as err:
            self.missing = f"charts need matplotlib ({err}); install it with: pip install -c constraints.txt matplotlib"

    def __call__(self, name: str, draw, *args) -> str:
        if self.missing:
            return f'<p class="muted">{_e(self.missing)}</p>'
        png = draw(*args)
        if png is None:
            return '<p class="muted">nothing to draw</p>'
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"{name}.png").write_bytes(png)
        return _img(png, name.replace("_", " "))


def render(run: RunData, folder: Path) -> str:
    m, counts, chart = run.metrics, run.counts, _Charts(folder)
    sections = []
    headline = [[k, m[k]] for k in HEADLINE if k in m]
    quality = [[k, len(v) if isinstance(v, (list, dict)) else v] for k, v in sorted((m.get("data_quality") or {}).items())]
    sections.append(("summary", _table(["metric", "value"], headline)
                     + f'<p>optimized metric: <b>{_e(m.get("optimized_metric", "?"))}</b>; best checkpoint: '
                       f'{_e(m.get("best_checkpoint") or "—")}</p>'
                     + f"<details><summary>data quality</summary>{_table(['check', 'count'], quality)}</details>"))
    if run.history:
        sections.append(("learning curves", chart("learning_curves", charts.learning_curves, run.history)))
    else:
        sections.append(("learning curves", '<p class="muted">no csv/metrics.csv in this run '
                                            "(train with logger=default, csv, wandb or all for curves)</p>"))
    matrix = m.get("test/confusion_matrix")
    if matrix and counts and len(matrix) == len(counts):
        sections.append(("confusion matrix", _confusion_table(matrix, counts)
                         + chart("confusion_matrix", charts.confusion_matrix, matrix, counts)))
    if counts and all(f"test/f1_{c}" in m for c in counts):
        p, r, f = ([m[f"test/{k}_{c}"] for c in counts] for k in ("precision", "recall", "f1"))
        rows = [[c, pi, ri, fi, m.get(f"test/support_{c}")] for c, pi, ri, fi in zip(counts, p, r, f)]
        rows += [["macro avg", m.get("test/precision_macro"), m.get("test/recall_macro"), m.get("test/f1_macro"), ""],
                 ["weighted avg", m.get("test/precision_weighted"), m.get("test/recall_weighted"),
                  m.get("test/f1_weighted"), ""]]
        sections.append(("per-class precision, recall, F1", _table(["count", "precision", "recall", "F1", "support"], rows)
                         + chart("per_class", charts.per_class, counts, p, r, f)))
    pred = run.predictions
    if pred is not None and len(pred["ids"]):
        sections.append(("error distribution", chart("error_distribution", charts.error_distribution,
                                                     np.asarray(pred["true_counts"]), np.asarray(pred["pred_counts"]))))
        sections.append(("worst mistakes", _mistakes(pred, run.data_root)))
    else:
        sections.append(("predictions", '<p class="muted">no predictions.csv (run with test=true)</p>'))
    profiled = summaries(run.run_dir)
    if profiled:
        sections.append(("where the time went", "".join(
            f"<p>{_e(PROFILE_DIR)}/{_e(name)}</p>" + (_table(["action", "mean s", "calls", "total s", "%"], rows)
                                                      if rows else f"<pre>{_e(preview)}</pre>")
            for name, rows, preview in profiled)))
    overrides = "".join(f"<li><code>{_e(o)}</code></li>" for o in run.overrides) or "<li>none</li>"
    sections.append(("config", f"<p>overrides:</p><ul>{overrides}</ul><pre>{_e(run.config_text)}</pre>"))
    nav = "".join(f'<a href="#s{i}">{_e(t)}</a>' for i, (t, _) in enumerate(sections))
    body = "".join(f'<h2 id="s{i}">{_e(t)}</h2>{content}' for i, (t, content) in enumerate(sections))
    title = f"bincount run {run.run_dir.name}"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style>'
            f'<link rel="icon" href="data:,"></head><body><h1>{_e(title)}</h1>'
            f'<p class="muted">{_e(run.run_dir.resolve())}</p><nav>{nav}</nav>{body}</body></html>\n')


def _mistakes(predictions: dict, data_root: Optional[str]) -> str:
    mistakes = collect(predictions, data_root)
    if not mistakes:
        return "<p>no mistakes on the test split.</p>"
    cards = []
    for x in mistakes:
        image = f'<img alt="bin {_e(x.id)}" src="{x.thumbnail}">' if x.thumbnail else f'<p class="muted">{_e(x.note)}</p>'
        cards.append(f'<div class="card">{image}<b>{_e(x.id)}</b><br>true {x.true_count}, predicted {x.pred_count}'
                     f'<br><span class="muted">p(pred) = {_fmt(x.confidence)}</span></div>')
    return f'<p>largest errors first, then the most confident.</p><div class="grid">{"".join(cards)}</div>'


def write_report(run_dir: str | Path, output: Optional[str | Path] = None) -> Path:
    """Build ``<run_dir>/report.html`` (and ``report/*.png``); return the HTML's path."""
    from bincount.metrics import _atomic_write_text  # readers never see half a page

    run = load_run(run_dir)
    output = Path(output) if output else run.run_dir / "report.html"
    text = render(run, output.parent / "report")
    path = _atomic_write_text(output, text)
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)  # a temporary file's 0600 would hide the page from other users
    return path
