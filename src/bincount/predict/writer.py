"""The CSV of ``bincount predict``, written batch by batch as Lightning finishes them.

Why a :class:`BasePredictionWriter`: predictions over a whole bucket do not fit in memory, and a
long run that stops half way should leave the rows it made. Each batch's rows are written and
flushed at ``on_predict_batch_end``; only running sums for the scores and the list of bad files stay.

Scores (accuracy, RMSE, MAE, within one) are taken where the true count is known (ABID metadata),
against the count the model can express: under ``overflow=clip`` a true 9 is the last class (>= max).
Counts the model has no class for (below ``min_count``, or above it under ``drop``/``fail``) are
predicted but not scored, and counted as ``unscored``. File names and S3 keys are written through
:func:`bincount.text.csv_cell`: a name like ``=HYPERLINK(...).jpg`` must not run when the CSV is opened.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import BasePredictionWriter

from bincount.answers import answer_rows, fixed
from bincount.layout import DataError
from bincount.predict.inputs import Item
from bincount.text import csv_cell


def scored_count(true: int, classes: dict[str, Any]) -> int | None:
    """The count a perfect model would predict for ``true`` under the bundle's class policy, or None."""
    if true < classes["min_count"]:
        return None
    if true > classes["max_count"]:
        return classes["max_count"] if classes["overflow"] == "clip" else None
    return true


class CSVPredictionWriter(BasePredictionWriter):
    def __init__(self, path: str | Path, items: list[Item], classes: dict[str, Any], bad_input: str = "skip") -> None:
        super().__init__(write_interval="batch")
        self.path, self.items, self.classes, self.bad_input = Path(path), items, classes, bad_input
        self.first = "id" if all(i.abid for i in items) else "path"
        self.with_truth = any(i.true_count is not None for i in items)
        self.bad: list[tuple[str, str]] = []
        self.rows = self.scored = self.unscored = self.correct = self.within_one = 0
        self.abs_err = self.sq_err = 0.0
        self._file = None
        self._csv: Any = None

    def on_predict_start(self, trainer, pl_module) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w", newline="")
        self._csv = csv.writer(self._file, lineterminator="\n")
        probs = [f"prob_{c}" for c in self.classes["counts"]]
        truth = ["true_count"] if self.with_truth else []
        self._csv.writerow([self.first, *truth, "pred_count", "expected_count", "confidence", *probs])

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        for name, reason in batch.get("bad") or []:
            if self.bad_input == "fail":
                raise DataError(f"{name}: {reason} (--bad-input fail; 'skip' lists bad files and goes on)")
            self.bad.append((name, reason))
        answers = answer_rows(prediction, self.classes["counts"])
        for answer, index in zip(answers, batch["index"].tolist()):
            item = self.items[index]
            truth = [] if not self.with_truth else ["" if item.true_count is None else item.true_count]
            self._csv.writerow([csv_cell(item.name), *truth, answer["count"], fixed(answer["expected_count"]),
                                fixed(answer["confidence"]), *map(fixed, answer["probabilities"].values())])
            self._score(item.true_count, answer["count"])
        self.rows += len(answers)
        self._file.flush()

    def _score(self, true: int | None, pred: int) -> None:
        if true is None:
            return
        target = scored_count(true, self.classes)
        if target is None:
            self.unscored += 1
            return
        err = pred - target
        self.scored += 1
        self.correct += err == 0
        self.within_one += abs(err) <= 1
        self.abs_err += abs(err)
        self.sq_err += err * err

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def on_predict_end(self, trainer, pl_module) -> None:
        self._close()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._close()

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"images": len(self.items), "predicted": self.rows, "bad_count": len(self.bad),
                               "bad": [{"name": n, "reason": r} for n, r in self.bad], "csv": str(self.path)}
        if self.scored:
            n = self.scored
            out["metrics"] = {"n": n, "unscored": self.unscored, "acc": self.correct / n,
                              "rmse": math.sqrt(self.sq_err / n), "mae": self.abs_err / n, "within_one": self.within_one / n}
        elif self.with_truth:
            out["metrics"] = {"n": 0, "unscored": self.unscored}
        return out
