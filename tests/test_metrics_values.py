"""Exact values of the result files and reports that ``bincount.metrics`` writes.

``test_metrics.py`` checks the metric numbers against reference formulas; this file pins what a reader of
``metrics.json``/``predictions.csv``/the text report sees byte for byte, the error messages that name the
bad input, and the atomic write (temporary file beside the target, nothing left behind on failure).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import bincount.metrics as metrics_module
from bincount.metrics import (
    WithinK,
    classification_report,
    read_predictions_csv,
    write_metrics_json,
    write_predictions_csv,
)


# -- classification_report ----------------------------------------------------------------------
def _two_class_metrics(**overrides) -> dict:
    """Per-class values for counts 1 and 2 (supports 3 and 1) and the averages the report prints."""
    m = {
        "precision_1": 0.5, "recall_1": 0.25, "f1_1": 1 / 3, "support_1": 3,
        "precision_2": 0.9, "recall_2": 1.0, "f1_2": 0.9473684, "support_2": 1,
        "acc": 0.5, "precision_macro": 0.7, "recall_macro": 0.6, "f1_macro": 0.64, "f1_weighted": 0.5,
    }
    m.update(overrides)
    return m


EXPECTED_REPORT = (
    "             precision    recall  f1-score   support\n"
    "\n"
    "           1      0.50      0.25      0.33         3\n"
    "           2      0.90      1.00      0.95         1\n"
    "\n"
    "    accuracy                          0.50         4\n"
    "   macro avg      0.70      0.60      0.64         4\n"
    "weighted avg      0.60      0.44      0.50         4\n"
)


def test_report_text_weights_per_class_values_by_support_when_no_weighted_entries():
    # No precision_weighted/recall_weighted: (0.5*3 + 0.9*1)/4 = 0.60 and (0.25*3 + 1.0*1)/4 = 0.44.
    report = classification_report(_two_class_metrics(), min_count=1, num_classes=2)
    assert report == EXPECTED_REPORT


def test_report_prefers_given_weighted_entries():
    report = classification_report(_two_class_metrics(precision_weighted=0.11, recall_weighted=0.22),
                                   min_count=1, num_classes=2)
    assert report.splitlines()[-1] == "weighted avg      0.11      0.22      0.50         4"


def test_report_weighted_average_with_one_sample_is_that_class():
    m = _two_class_metrics(support_1=1, support_2=0)
    last = classification_report(m, min_count=1, num_classes=2).splitlines()[-1]
    assert last == "weighted avg      0.50      0.25      0.50         1"


def test_report_weighted_average_without_samples_is_nan():
    m = _two_class_metrics(support_1=0, support_2=0)
    lines = classification_report(m, min_count=1, num_classes=2).splitlines()
    assert lines[-1] == "weighted avg       nan       nan      0.50         0"
    assert lines[-3] == "    accuracy                          0.50         0"


def test_report_names_every_missing_per_class_entry():
    with pytest.raises(KeyError) as info:
        classification_report(_two_class_metrics(), min_count=2, num_classes=3)
    assert "['support_3', 'support_4']" in str(info.value)
    assert "min_count and num_classes" in str(info.value)


# -- metrics.json -------------------------------------------------------------------------------
def test_metrics_json_exact_text(tmp_path):
    path = write_metrics_json(tmp_path / "metrics.json", {"b": 1, "a": [1, 2.5], "c": None, "d": float("nan")})
    assert path == tmp_path / "metrics.json"
    assert path.read_bytes() == (
        b'{\n  "a": [\n    1,\n    2.5\n  ],\n  "b": 1,\n  "c": null,\n  "d": null\n}\n'
    )


def test_metrics_json_converts_tensors_arrays_and_paths(tmp_path):
    metrics = {
        "scalar": torch.tensor(2.5),
        "one": torch.tensor([3]),  # a 1-element 1-d tensor stays a list
        "pair": torch.tensor([1, 2]),
        "empty": torch.tensor([]),
        "matrix": np.array([[1, 2], [3, 4]]),
        "np_scalar": np.int64(7),
        "path": Path("runs") / "exp1",
        "flag": True,
        "off": False,
        "none": None,
        "tuple": (1, 0.5),
        "nested": {1: torch.tensor(float("inf"))},
    }
    loaded = json.loads(write_metrics_json(tmp_path / "m.json", metrics).read_text(encoding="utf-8"))
    assert loaded == {
        "scalar": 2.5, "one": [3], "pair": [1, 2], "empty": [], "matrix": [[1, 2], [3, 4]], "np_scalar": 7,
        "path": str(Path("runs") / "exp1"), "flag": True, "off": False, "none": None, "tuple": [1, 0.5],
        "nested": {"1": None},
    }
    assert loaded["flag"] is True and loaded["none"] is None


class _Widget:
    def __repr__(self) -> str:
        return "<widget 42>"


def test_metrics_json_error_names_value_and_type_and_writes_nothing(tmp_path):
    with pytest.raises(TypeError) as info:
        write_metrics_json(tmp_path / "metrics.json", {"ok": 1, "bad": _Widget()})
    assert str(info.value) == "metrics value <widget 42> of type _Widget is not JSON-serialisable"
    assert list(tmp_path.iterdir()) == []


# -- atomic write -------------------------------------------------------------------------------
def test_atomic_write_renames_a_hidden_temp_file_from_the_same_directory(tmp_path, monkeypatch):
    real_replace = os.replace
    seen = []

    def recording_replace(src, dst):
        seen.append((Path(src), Path(dst), Path(src).read_text(encoding="utf-8")))
        real_replace(src, dst)

    monkeypatch.setattr(metrics_module.os, "replace", recording_replace)
    target = tmp_path / "run" / "metrics.json"
    write_metrics_json(target, {"acc": 0.5})
    [(src, dst, text_at_rename)] = seen
    assert dst == target
    assert src.parent == target.parent  # same directory, so the rename is atomic
    assert src.name.startswith(".metrics.json.") and src.name.endswith(".tmp") and src.name != ".metrics.json..tmp"
    assert text_at_rename == '{\n  "acc": 0.5\n}\n'
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


def test_atomic_write_creates_missing_parent_directories(tmp_path):
    target = tmp_path / "a" / "b" / "c" / "predictions.csv"
    write_predictions_csv(target, ["x"], [1], [1], np.array([[1.0]]), min_count=1)
    assert target.read_text(encoding="utf-8") == "id,true_count,pred_count,prob_1\nx,1,1,1.000000\n"


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    target.write_text("old\n", encoding="utf-8")

    def failing_replace(src, dst):
        raise OSError(f"disk full while replacing {dst}")

    monkeypatch.setattr(metrics_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_metrics_json(target, {"acc": 1.0})
    assert target.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_unencodable_text_leaves_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(UnicodeEncodeError):
        metrics_module._atomic_write_text(target, "lone surrogate \ud800")
    assert list(tmp_path.iterdir()) == []


class _Interrupt(BaseException):
    """Stands for a KeyboardInterrupt that arrives right after the rename."""


def test_interrupt_after_rename_propagates_as_is(tmp_path, monkeypatch):
    real_replace = os.replace

    def replace_then_interrupt(src, dst):
        real_replace(src, dst)
        raise _Interrupt()

    monkeypatch.setattr(metrics_module.os, "replace", replace_then_interrupt)
    target = tmp_path / "metrics.json"
    with pytest.raises(_Interrupt):  # not a FileNotFoundError from cleaning up the renamed temp file
        write_metrics_json(target, {"acc": 1.0})
    assert target.read_text(encoding="utf-8") == '{\n  "acc": 1.0\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


# -- predictions.csv ----------------------------------------------------------------------------
def test_predictions_csv_exact_bytes_and_dtypes(tmp_path):
    path = write_predictions_csv(tmp_path / "predictions.csv", ["a", "b"], torch.tensor([3, 4]), [4, 4],
                                 torch.tensor([[0.25, 0.75], [0.0, 1.0]], dtype=torch.float32), min_count=3)
    assert path.read_bytes() == (b"id,true_count,pred_count,prob_3,prob_4\n"
                                 b"a,3,4,0.250000,0.750000\nb,4,4,0.000000,1.000000\n")
    back = read_predictions_csv(path)
    assert back["true_counts"].dtype == np.int64 and back["pred_counts"].dtype == np.int64
    assert back["probs"].dtype == np.float64 and back["probs"].shape == (2, 2)
    assert back["counts"] == [3, 4] and back["min_count"] == 3


def test_predictions_csv_flattens_row_vectors(tmp_path):
    path = write_predictions_csv(tmp_path / "p.csv", ["a", "b"], torch.tensor([[1, 2]]), np.array([[2, 2]]),
                                 np.array([[0.5, 0.5], [0.1, 0.9]]), min_count=1)
    back = read_predictions_csv(path)
    assert back["true_counts"].tolist() == [1, 2] and back["pred_counts"].tolist() == [2, 2]


def test_predictions_csv_keeps_large_counts_exact(tmp_path):
    big = 2**53 + 1  # not representable as a float64: the counts must not go through floats
    path = write_predictions_csv(tmp_path / "p.csv", ["a"], [big], [big + 2], np.array([[1.0]]), min_count=0)
    assert path.read_text(encoding="utf-8").splitlines()[1] == f"a,{big},{big + 2},1.000000"
    back = read_predictions_csv(path)
    assert back["true_counts"].tolist() == [big] and back["pred_counts"].tolist() == [big + 2]


def test_predictions_csv_without_rows_reads_back_typed_empty_arrays(tmp_path):
    path = write_predictions_csv(tmp_path / "p.csv", [], [], [], np.zeros((0, 3)), min_count=2)
    assert path.read_text(encoding="utf-8") == "id,true_count,pred_count,prob_2,prob_3,prob_4\n"
    back = read_predictions_csv(path)
    assert back["ids"] == []
    assert back["true_counts"].dtype == np.int64 and back["true_counts"].shape == (0,)
    assert back["pred_counts"].dtype == np.int64 and back["pred_counts"].shape == (0,)
    assert back["probs"].dtype == np.float64 and back["probs"].shape == (0, 3)
    assert back["counts"] == [2, 3, 4] and back["min_count"] == 2


def test_predictions_csv_without_prob_columns_has_no_min_count(tmp_path):
    path = write_predictions_csv(tmp_path / "p.csv", ["a"], [1], [2], np.zeros((1, 0)), min_count=1)
    assert path.read_text(encoding="utf-8") == "id,true_count,pred_count\na,1,2\n"
    back = read_predictions_csv(path)
    assert back["counts"] == [] and back["min_count"] is None
    assert back["probs"].shape == (1, 0)
    assert back["true_counts"].tolist() == [1] and back["pred_counts"].tolist() == [2]


def test_read_predictions_csv_keeps_crlf_inside_quoted_id(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes(b'id,true_count,pred_count,prob_1\r\n"a\r\nb",1,1,1.000000\r\n')
    back = read_predictions_csv(path)
    assert back["ids"] == ["a\r\nb"]
    assert back["true_counts"].tolist() == [1]


def test_read_predictions_csv_rejects_empty_file(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"not a predictions\.csv \(header None"):
        read_predictions_csv(path)


def test_read_predictions_csv_checks_every_prob_column(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("id,true_count,pred_count,count1,prob_2\na,1,1,0.5,0.5\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not a predictions.csv") as info:
        read_predictions_csv(path)
    assert "'count1'" in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("bad", ["true_counts", "pred_counts", "probs"])
def test_predictions_csv_non_numeric_input_names_the_argument(tmp_path, bad):
    args = {"true_counts": [1, 2], "pred_counts": [1, 2], "probs": np.full((2, 2), 0.5)}
    args[bad] = [[0.5, None], [0.5, 0.5]] if bad == "probs" else [1, None]
    with pytest.raises(TypeError) as info:
        write_predictions_csv(tmp_path / "p.csv", ["a", "b"], min_count=1, **args)
    assert str(info.value) == f"{bad} must be numeric, got object"
    assert list(tmp_path.iterdir()) == []


def test_predictions_csv_probs_must_be_a_matrix(tmp_path):
    with pytest.raises(ValueError) as info:
        write_predictions_csv(tmp_path / "p.csv", ["a", "b", "c"], [1, 1, 1], [1, 1, 1], np.ones(3), min_count=1)
    assert str(info.value) == "probs must be N x C, got shape (3,)"


def test_predictions_csv_length_error_names_every_length(tmp_path):
    with pytest.raises(ValueError) as info:
        write_predictions_csv(tmp_path / "p.csv", ["a"], [1], [1, 2, 3], np.full((2, 3), 1 / 3), min_count=1)
    assert str(info.value) == ("ids (1), true_counts (1), pred_counts (3) and probs (2 rows) "
                               "must have the same length")
    assert list(tmp_path.iterdir()) == []


# -- WithinK ------------------------------------------------------------------------------------
def test_within_k_shape_error_names_both_shapes():
    with pytest.raises(ValueError) as info:
        WithinK(1).update(torch.tensor([1, 2]), torch.tensor([[1, 2, 3]]))
    assert str(info.value) == "preds and target must have the same shape, got (2,) and (1, 3)"


def test_within_k_single_sample_and_empty():
    metric = WithinK(1)
    metric.update(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long))
    assert float(metric.compute()) == 0.0  # nothing seen: 0, not NaN
    metric.update(torch.tensor([4]), torch.tensor([5]))
    assert float(metric.compute()) == 1.0


def test_within_k_zero_is_exact_match():
    metric = WithinK(0)
    metric.update(torch.tensor([1, 2, 3]), torch.tensor([1, 3, 3]))
    assert float(metric.compute()) == pytest.approx(2 / 3)
    metric = WithinK(2)
    metric.update(torch.tensor([0, 0, 0]), torch.tensor([2, 3, 0]))
    assert float(metric.compute()) == pytest.approx(2 / 3)
    assert not math.isnan(float(metric.compute()))
