"""CountMetrics against hand-computed values, and the result-file writers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bincount.metrics import (
    CountMetrics,
    WithinK,
    classification_report,
    read_predictions_csv,
    write_metrics_json,
    write_predictions_csv,
)

# A 4-class example with every class present in targets and predictions.
TARGET = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3]
PRED = [0, 1, 0, 1, 2, 2, 2, 3, 0, 3]


def _reference(pred, target, num_classes):
    """sklearn's formulas written out with numpy."""
    pred, target = np.asarray(pred), np.asarray(target)
    cm = np.zeros((num_classes, num_classes), dtype=int)
    for t, p in zip(target, pred):
        cm[t, p] += 1
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    err = (pred - target).astype(float)
    return {
        "cm": cm, "precision": precision, "recall": recall, "f1": f1, "support": support,
        "acc": float((pred == target).mean()), "rmse": float(np.sqrt((err**2).mean())),
        "mae": float(np.abs(err).mean()), "within_one": float((np.abs(err) <= 1).mean()),
        "f1_weighted": float((f1 * support).sum() / support.sum()),
    }


def _metrics(pred, target, num_classes=4, min_count=1) -> dict:
    m = CountMetrics(num_classes, min_count)
    m.update(torch.tensor(pred), torch.tensor(target))
    return m.compute()


def test_perfect_predictions():
    out = _metrics(TARGET, TARGET)
    for key in ("acc", "within_one", "f1_macro", "f1_weighted", "precision_macro", "recall_macro"):
        assert out[key] == pytest.approx(1.0)
    assert out["rmse"] == 0.0 and out["mae"] == 0.0
    assert out["confusion_matrix"] == np.diag([3, 2, 4, 1]).tolist()


def test_against_reference_formulas():
    out = _metrics(PRED, TARGET, num_classes=4, min_count=1)
    ref = _reference(PRED, TARGET, 4)
    assert out["confusion_matrix"] == ref["cm"].tolist()
    assert out["confusion_matrix"][2] == [1, 0, 2, 1]  # a row checked by hand: true count 3
    assert out["num_samples"] == len(TARGET)
    for key in ("acc", "rmse", "mae", "within_one", "f1_weighted"):
        assert out[key] == pytest.approx(ref[key], abs=1e-6), key
    assert out["f1_macro"] == pytest.approx(ref["f1"].mean(), abs=1e-6)
    assert out["precision_macro"] == pytest.approx(ref["precision"].mean(), abs=1e-6)
    assert out["recall_macro"] == pytest.approx(ref["recall"].mean(), abs=1e-6)
    for i in range(4):
        count = 1 + i  # per-class keys are counts, not class indices
        assert out[f"precision_{count}"] == pytest.approx(ref["precision"][i], abs=1e-6)
        assert out[f"recall_{count}"] == pytest.approx(ref["recall"][i], abs=1e-6)
        assert out[f"f1_{count}"] == pytest.approx(ref["f1"][i], abs=1e-6)
        assert out[f"support_{count}"] == ref["support"][i]
    assert "precision_0" not in out and "support_5" not in out
    weights = ref["support"] / ref["support"].sum()
    assert out["precision_weighted"] == pytest.approx(float((ref["precision"] * weights).sum()), abs=1e-6)
    assert out["recall_weighted"] == pytest.approx(float((ref["recall"] * weights).sum()), abs=1e-6)
    assert out["recall_weighted"] == pytest.approx(out["acc"]), "weighted recall is accuracy, by its definition"
    assert out["precision_weighted"] != pytest.approx(out["precision_macro"], abs=1e-3), "the example tells them apart"


def test_defaults_count_from_one_and_within_one_means_one():
    m = CountMetrics(2)  # the smallest head: two classes
    m.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
    out = m.compute()
    assert (out["support_1"], out["support_2"]) == (2, 1) and "support_0" not in out
    within = WithinK()
    within.update(torch.tensor([0, 2, 3]), torch.tensor([1, 0, 3]))
    assert float(within.compute()) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="num_classes must be >= 2, got 1"):
        CountMetrics(1)


def test_values_are_plain_python():
    out = _metrics(PRED, TARGET)
    for key, value in out.items():
        if key == "confusion_matrix":
            assert all(isinstance(x, int) for row in value for x in row)
        else:
            assert type(value) in (int, float), (key, type(value))
    json.dumps(out)


def test_off_by_one_errors_in_count_units():
    target = [0, 1, 2, 3]
    pred = [1, 2, 3, 2]  # every prediction off by one
    out = _metrics(pred, target, min_count=5)  # the count offset must not change the errors
    assert out["acc"] == 0.0
    assert out["within_one"] == 1.0
    assert out["mae"] == pytest.approx(1.0)
    assert out["rmse"] == pytest.approx(1.0)
    out = _metrics([0, 3], [3, 3])
    assert out["mae"] == pytest.approx(1.5)
    assert out["rmse"] == pytest.approx(math.sqrt(4.5))
    assert out["within_one"] == pytest.approx(0.5)


def test_accumulation_equals_one_update():
    whole = _metrics(PRED, TARGET)
    m = CountMetrics(4, 1)
    for start in range(0, len(TARGET), 3):
        m.update(torch.tensor(PRED[start:start + 3]), torch.tensor(TARGET[start:start + 3]))
    parts = m.compute()
    assert parts.pop("confusion_matrix") == whole.pop("confusion_matrix")
    assert parts == pytest.approx(whole)


def test_reset_forgets_previous_updates():
    m = CountMetrics(4, 1)
    m.update(torch.tensor(PRED), torch.tensor(TARGET))
    m.reset()
    m.update(torch.tensor(TARGET), torch.tensor(TARGET))
    out = m.compute()
    assert out["acc"] == 1.0 and out["num_samples"] == len(TARGET)


def test_is_a_submodule_that_moves_with_the_model():
    model = torch.nn.Module()
    model.metrics = CountMetrics(3, 0)
    model.to(torch.float64)  # device moves go through the same hook; no GPU needed to check the wiring
    assert any(isinstance(m, WithinK) for m in model.modules())
    assert model.metrics.within_one.hits.dtype == torch.long  # integer states are not cast
    assert model.state_dict() == {}  # metric states stay out of checkpoints


def test_within_k_states_reduce_by_sum():
    from torchmetrics.utilities.data import dim_zero_sum

    metric = WithinK(1)
    assert metric._reductions["hits"] is dim_zero_sum and metric._reductions["total"] is dim_zero_sum
    metric.update(torch.tensor([0, 2, 5]), torch.tensor([1, 0, 5]))
    assert float(metric.compute()) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="k >= 0"):
        WithinK(-1)


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="same number"):
        CountMetrics(3).update(torch.tensor([0, 1]), torch.tensor([0]))
    with pytest.raises(ValueError, match="num_classes"):
        CountMetrics(1)


def test_metrics_json_round_trip_and_nan(tmp_path):
    path = tmp_path / "run" / "metrics.json"
    metrics = {"b": 0.123456789, "a": float("nan"), "c": [[1, 2], [3, 4]], "d": torch.tensor(2.5),
               "e": np.float32(0.25), "f": float("inf"), "g": 1e-9, "h": {"z": 1, "y": float("nan")}}
    write_metrics_json(path, metrics)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    loaded = json.loads(text)
    assert list(loaded) == sorted(loaded)
    assert loaded["a"] is None and loaded["f"] is None and loaded["h"]["y"] is None
    assert loaded["b"] == pytest.approx(0.123457, abs=1e-9)
    assert loaded["g"] == pytest.approx(1e-9)  # significant digits: small values survive
    assert loaded["c"] == [[1, 2], [3, 4]] and loaded["d"] == 2.5 and loaded["e"] == 0.25
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temporary file left behind


def test_metrics_json_from_count_metrics(tmp_path):
    out = _metrics(PRED, TARGET)
    loaded = json.loads(write_metrics_json(tmp_path / "m.json", out).read_text())
    assert loaded["confusion_matrix"] == out["confusion_matrix"]
    assert loaded["acc"] == pytest.approx(out["acc"])


def test_predictions_csv_round_trip(tmp_path):
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1234567891, 0.5, 0.3765432109]])
    path = write_predictions_csv(tmp_path / "predictions.csv", ["a", "b,c"], torch.tensor([2, 4]),
                                 np.array([2, 3]), probs, min_count=2)
    header = path.read_text().splitlines()[0]
    assert header == "id,true_count,pred_count,prob_2,prob_3,prob_4"
    assert "0.123457" in path.read_text()
    back = read_predictions_csv(path)
    assert back["ids"] == ["a", "b,c"]
    assert back["true_counts"].tolist() == [2, 4] and back["pred_counts"].tolist() == [2, 3]
    assert back["counts"] == [2, 3, 4] and back["min_count"] == 2
    np.testing.assert_allclose(back["probs"], probs.numpy(), atol=1e-6)


def test_predictions_csv_checks_lengths(tmp_path):
    with pytest.raises(ValueError, match="same length"):
        write_predictions_csv(tmp_path / "p.csv", ["a"], [1, 2], [1, 2], np.ones((2, 2)) / 2, min_count=1)
    (tmp_path / "bad.csv").write_text("x,y\n1,2\n")
    with pytest.raises(ValueError, match="not a predictions.csv"):
        read_predictions_csv(tmp_path / "bad.csv")


def test_classification_report_layout():
    out = _metrics(PRED, TARGET, min_count=1)
    report = classification_report(out, min_count=1, num_classes=4)
    lines = report.splitlines()
    assert lines[0].split() == ["precision", "recall", "f1-score", "support"]
    row = next(line for line in lines if line.split()[:1] == ["3"])  # count 3 = class index 2
    assert row.split() == ["3", f"{out['precision_3']:.2f}", f"{out['recall_3']:.2f}", f"{out['f1_3']:.2f}", "4"]
    assert any(line.split()[:2] == ["accuracy", f"{out['acc']:.2f}"] for line in lines)
    assert any(line.strip().startswith("macro avg") for line in lines)
    assert any(line.strip().startswith("weighted avg") and line.split()[-1] == "10" for line in lines)
    with pytest.raises(KeyError, match="support_5"):
        classification_report(out, min_count=1, num_classes=5)


@pytest.mark.parametrize(("name", "mode"), [
    ("val/acc", "max"), ("val/within_one", "max"), ("val/f1_macro", "max"), ("test/acc", "max"),
    ("val/loss", "min"), ("val/rmse", "min"), ("val/mae", "min"), ("train/loss_epoch", "min"),
])
def test_metric_mode_follows_the_metric_name(name: str, mode: str) -> None:
    from bincount.resolvers import metric_mode

    assert metric_mode(name) == mode


def test_checkpoint_mode_follows_optimized_metric() -> None:
    """optimized_metric=val/rmse must keep the lowest-RMSE checkpoint, not the highest."""
    from hydra import compose, initialize_config_dir

    from bincount.resolvers import register_resolvers

    register_resolvers()
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        for metric, mode in (("val/rmse", "min"), ("val/acc", "max")):
            cfg = compose(config_name="train", overrides=[f"optimized_metric={metric}"])
            assert cfg.callbacks.model_checkpoint.mode == mode
            assert cfg.callbacks.model_checkpoint.monitor == metric
