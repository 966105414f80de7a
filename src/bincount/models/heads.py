"""Counting heads and their matching losses.

A head turns pooled backbone features (N x in_features) into a count. Counting can be framed as
classification (linear, MLP), ordinal regression (CORAL, CORN) or plain regression, and the research
question is often *which framing works best*, so every head speaks the same four verbs and the
LightningModule never branches on the head type:

- ``head(features) -> output``: raw output (logits, ordinal logits or a real number);
- ``head.loss(output, label) -> scalar``: ``label`` is the class index (long, 0..C-1);
- ``head.predict(output) -> LongTensor``: a class index in range for every head;
- ``head.probabilities(output) -> N x C``: rows are non-negative and sum to 1.

Heads only see class indices; the mapping index -> count (``min_count + index``) lives in the data.

Class imbalance: every head accepts ``class_weights`` (a list of C floats, or ``"balanced"``). CE heads
pass them to ``cross_entropy``; the others weight each sample by the weight of its true class and
normalise by the sum of weights, which is what weighted CE does too. ``"balanced"`` weights are only
known once the training split is, so they are set by ``set_class_frequencies(counts)``; calling
``loss`` before that raises instead of silently training unweighted.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CountHead(nn.Module):
    """Base class: argument checks and class weighting shared by every head."""

    def __init__(self, in_features: int, num_classes: int, class_weights: Sequence[float] | str | None = None):
        super().__init__()
        if int(in_features) < 1:
            raise ValueError(f"in_features must be >= 1, got {in_features}")
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.in_features, self.num_classes = int(in_features), int(num_classes)
        self.balanced = isinstance(class_weights, str)
        if self.balanced and class_weights != "balanced":
            raise ValueError(f"class_weights must be a list of {num_classes} floats or 'balanced', got {class_weights!r}")
        if class_weights is None:
            self.register_buffer("class_weight", None)
        else:
            weights = torch.ones(self.num_classes) if self.balanced else self._check_weights(class_weights)
            self.register_buffer("class_weight", weights)
            # A buffer, not a bool attribute, so that a checkpoint restores "weights were set".
            self.register_buffer("class_weight_ready", torch.tensor(not self.balanced))

    def _check_weights(self, weights) -> Tensor:
        weights = torch.as_tensor([float(w) for w in weights], dtype=torch.float32)
        if weights.numel() != self.num_classes:
            raise ValueError(f"class_weights has {weights.numel()} entries, expected num_classes={self.num_classes}")
        if not torch.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"class_weights must be finite, >= 0 and not all zero, got {weights.tolist()}")
        return weights

    def set_class_frequencies(self, counts: Sequence[int]) -> None:
        """Set ``"balanced"`` weights N / (C * count_c) from training-split class counts (no-op otherwise).

        sklearn's "balanced" is undefined for an empty class; such a class is counted as 1 (with a
        warning) so that small samples of the dataset still train.
        """
        if not self.balanced:
            return
        counts = torch.as_tensor([float(c) for c in counts], dtype=torch.float32)
        if counts.numel() != self.num_classes or (counts < 0).any():
            raise ValueError(f"expected {self.num_classes} non-negative class counts, got {counts.tolist()}")
        if (counts == 0).any():
            empty = torch.nonzero(counts == 0).flatten().tolist()
            warnings.warn(f"balanced class weights: classes {empty} have no samples; counting them as 1")
        total = counts.sum().clamp_min(1.0)
        self.class_weight.copy_(total / (self.num_classes * counts.clamp_min(1.0)))
        self.class_weight_ready.fill_(True)

    def _weights(self) -> Tensor | None:
        if self.class_weight is not None and not bool(self.class_weight_ready):
            raise RuntimeError("class_weights='balanced': call set_class_frequencies(train counts) before loss()")
        return self.class_weight

    def _weighted_mean(self, per_sample: Tensor, label: Tensor) -> Tensor:
        weights = self._weights()
        if weights is None:
            return per_sample.mean()
        w = weights[label]
        return (w * per_sample).sum() / w.sum().clamp_min(torch.finfo(w.dtype).tiny)


class _SoftmaxHead(CountHead):
    """Shared loss/predict/probabilities for heads whose output is C logits."""

    def __init__(self, in_features, num_classes, class_weights=None, label_smoothing: float = 0.0):
        super().__init__(in_features, num_classes, class_weights)
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def forward(self, features: Tensor) -> Tensor:
        return self.net(features)

    def loss(self, output: Tensor, label: Tensor) -> Tensor:
        return F.cross_entropy(output, label, weight=self._weights(), label_smoothing=self.label_smoothing)

    def predict(self, output: Tensor) -> Tensor:
        return output.argmax(dim=1)

    def probabilities(self, output: Tensor) -> Tensor:
        return output.softmax(dim=1)


class LinearHead(_SoftmaxHead):
    """Dropout + Linear: the linear probe, the baseline every other head must beat."""

    def __init__(self, in_features, num_classes, dropout: float = 0.0, class_weights=None, label_smoothing=0.0):
        super().__init__(in_features, num_classes, class_weights, label_smoothing)
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.in_features, self.num_classes))


class MLPHead(_SoftmaxHead):
    """The first capstone report's head: Dropout(0.6) -> Linear(in,128) -> ReLU -> Dropout(0.3) -> Linear."""

    def __init__(self, in_features, num_classes, hidden: int = 128, dropout: float = 0.6,
                 hidden_dropout: float = 0.3, class_weights=None, label_smoothing=0.0):
        super().__init__(in_features, num_classes, class_weights, label_smoothing)
        self.net = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(self.in_features, hidden), nn.ReLU(),
            nn.Dropout(hidden_dropout), nn.Linear(hidden, self.num_classes),
        )


class MLPBNHead(_SoftmaxHead):
    """The report's refined head: Linear(in,256) -> BatchNorm1d -> ReLU -> Dropout(0.3) -> Linear.

    ``dropout`` (input dropout, default 0) keeps the parameter names of ``mlp``. BatchNorm needs
    training batches of more than one sample (use ``drop_last`` in the train loader).
    """

    def __init__(self, in_features, num_classes, hidden: int = 256, dropout: float = 0.0,
                 hidden_dropout: float = 0.3, class_weights=None, label_smoothing=0.0):
        super().__init__(in_features, num_classes, class_weights, label_smoothing)
        self.net = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(self.in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Dropout(hidden_dropout), nn.Linear(hidden, self.num_classes),
        )


# CORAL and CORN are written by hand: the reference package (coral-pytorch) is a few dozen lines and
# unmaintained, not worth a dependency. Both output C-1 logits for the binary tasks "label > k".
class _OrdinalHead(CountHead):
    """Shared pieces of the ordinal heads: per-task BCE and probabilities from P(y > k)."""

    def _task_losses(self, output: Tensor, label: Tensor) -> Tensor:
        ks = torch.arange(output.shape[1], device=output.device)
        levels = (label.unsqueeze(1) > ks).to(output.dtype)
        return F.binary_cross_entropy_with_logits(output, levels, reduction="none")

    @staticmethod
    def _from_cumulative(greater: Tensor) -> Tensor:
        """Class probabilities from P(y > k), k = 0..C-2: P(y=k) = P(y>k-1) - P(y>k).

        The differences telescope to 1, so after clipping negatives (rank-inconsistent outputs) the sum
        is >= 1 and renormalising is always safe.
        """
        ones = greater.new_ones(greater.shape[0], 1)
        upper = torch.cat([ones, greater], dim=1)
        lower = torch.cat([greater, torch.zeros_like(ones)], dim=1)
        probs = (upper - lower).clamp_min(0)
        return probs / probs.sum(dim=1, keepdim=True)


class CoralHead(_OrdinalHead):
    """CORAL (Cao et al. 2020): one shared weight vector and C-1 biases -> rank-consistent logits.

    ``task_weights`` are the paper's importance weights lambda_k (C-1 floats) for the binary tasks.
    """

    def __init__(self, in_features, num_classes, dropout: float = 0.0, task_weights: Sequence[float] | None = None,
                 class_weights=None):
        super().__init__(in_features, num_classes, class_weights)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.in_features, 1, bias=False)
        # Ordered initial biases, as in the paper's reference code.
        self.bias = nn.Parameter(torch.arange(self.num_classes - 1, 0, -1).float() / (self.num_classes - 1))
        if task_weights is not None:
            task_weights = torch.as_tensor([float(w) for w in task_weights])
            if task_weights.numel() != self.num_classes - 1 or (task_weights < 0).any():
                raise ValueError(f"task_weights needs num_classes-1={self.num_classes - 1} non-negative floats")
        self.register_buffer("task_weights", task_weights)

    def forward(self, features: Tensor) -> Tensor:
        return self.fc(self.dropout(features)) + self.bias

    def loss(self, output: Tensor, label: Tensor) -> Tensor:
        per_task = self._task_losses(output, label)
        if self.task_weights is not None:
            per_task = per_task * self.task_weights
        return self._weighted_mean(per_task.sum(dim=1), label)

    def predict(self, output: Tensor) -> Tensor:
        return (output > 0).sum(dim=1)  # number of sigmoid(logit_k) > 0.5

    def probabilities(self, output: Tensor) -> Tensor:
        return self._from_cumulative(torch.sigmoid(output))


class CornHead(_OrdinalHead):
    """CORN (Shi et al. 2021): C-1 independent logits for the conditional tasks P(y > k | y > k-1).

    Task k is trained only on samples with label >= k (label > k-1), so rank consistency comes from
    the chain rule, P(y > k) = prod_{j<=k} P(y > j | y > j-1), instead of from shared weights.
    """

    def __init__(self, in_features, num_classes, dropout: float = 0.0, class_weights=None):
        super().__init__(in_features, num_classes, class_weights)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.in_features, self.num_classes - 1)

    def forward(self, features: Tensor) -> Tensor:
        return self.fc(self.dropout(features))

    def loss(self, output: Tensor, label: Tensor) -> Tensor:
        ks = torch.arange(output.shape[1], device=output.device)
        mask = (label.unsqueeze(1) >= ks).to(output.dtype)  # the conditional subset of task k
        per_task = self._task_losses(output, label) * mask
        weights = self._weights()
        if weights is not None:
            per_task, mask = per_task * weights[label].unsqueeze(1), mask * weights[label].unsqueeze(1)
        return per_task.sum() / mask.sum().clamp_min(torch.finfo(output.dtype).tiny)

    def predict(self, output: Tensor) -> Tensor:
        return (torch.cumprod(torch.sigmoid(output), dim=1) > 0.5).sum(dim=1)

    def probabilities(self, output: Tensor) -> Tensor:
        return self._from_cumulative(torch.cumprod(torch.sigmoid(output), dim=1))


class RegressionHead(CountHead):
    """Linear -> 1 real number, the class index; the simplest head that knows 3 is closer to 4 than to 1.

    ``probabilities`` is a Gaussian kernel around the prediction, softmax(-(y_hat - k)^2 / (2 sigma^2))
    with sigma = ``prob_sigma``; its argmax is the nearest class, i.e. equals ``predict``.
    """

    def __init__(self, in_features, num_classes, loss: str = "mse", huber_delta: float = 1.0,
                 prob_sigma: float = 0.5, dropout: float = 0.0, class_weights=None):
        super().__init__(in_features, num_classes, class_weights)
        if loss not in ("mse", "huber"):
            raise ValueError(f"regression loss must be one of ['huber', 'mse'], got {loss!r}")
        if huber_delta <= 0 or prob_sigma <= 0:
            raise ValueError("huber_delta and prob_sigma must be > 0")
        self.loss_name, self.huber_delta, self.prob_sigma = loss, float(huber_delta), float(prob_sigma)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.in_features, 1)
        nn.init.constant_(self.fc.bias, (self.num_classes - 1) / 2)  # start in the middle of the range

    def forward(self, features: Tensor) -> Tensor:
        return self.fc(self.dropout(features)).squeeze(1)

    def loss(self, output: Tensor, label: Tensor) -> Tensor:
        target = label.to(output.dtype)
        if self.loss_name == "mse":
            per_sample = F.mse_loss(output, target, reduction="none")
        else:
            per_sample = F.huber_loss(output, target, reduction="none", delta=self.huber_delta)
        return self._weighted_mean(per_sample, label)

    def predict(self, output: Tensor) -> Tensor:
        return output.round().clamp(0, self.num_classes - 1).long()

    def probabilities(self, output: Tensor) -> Tensor:
        centres = torch.arange(self.num_classes, device=output.device, dtype=output.dtype)
        return (-((output.unsqueeze(1) - centres) ** 2) / (2 * self.prob_sigma**2)).softmax(dim=1)


HEADS: dict[str, type[CountHead]] = {
    "linear": LinearHead,
    "mlp": MLPHead,
    "mlp_bn": MLPBNHead,
    "coral": CoralHead,
    "corn": CornHead,
    "regression": RegressionHead,
}


def create_head(name: str, in_features: int, num_classes: int, **kwargs) -> CountHead:
    """Build a head by registry name; unknown names and keyword arguments fail with the valid choices."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; valid choices: {sorted(HEADS)}")
    cls = HEADS[name]
    valid = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "in_features", "num_classes")]
    bad = sorted(set(kwargs) - set(valid))
    if bad:
        raise ValueError(f"head {name!r} got unknown argument(s) {bad}; valid arguments: {sorted(valid)}")
    return cls(in_features, num_classes, **kwargs)
