"""Every head speaks the same four verbs, learns a toy problem, and weights classes as documented."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bincount.models.heads import HEADS, CoralHead, CornHead, RegressionHead, create_head

C, D = 5, 8


def _toy(n: int = 100, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features that separate the classes both as categories (a one-hot block) and as an ordered scale
    (one feature proportional to the label), so that softmax, ordinal and regression heads can all fit."""
    g = torch.Generator().manual_seed(seed)
    label = torch.arange(n) % C
    x = 0.1 * torch.randn(n, D, generator=g)
    x[:, :C] += F.one_hot(label, C).float()
    x[:, C] += label.float() / (C - 1)
    return x, label


@pytest.fixture(params=sorted(HEADS))
def name(request) -> str:
    return request.param


def test_forward_shape_and_verbs(name):
    torch.manual_seed(0)
    head = create_head(name, D, C).eval()
    x, label = _toy(12)
    out = head(x)
    assert out.shape[0] == 12
    expected = {"coral": (12, C - 1), "corn": (12, C - 1), "regression": (12,)}.get(name, (12, C))
    assert tuple(out.shape) == expected
    loss = head.loss(out, label)
    assert loss.dim() == 0 and torch.isfinite(loss)
    pred = head.predict(out * 100)  # extreme outputs must still predict in range
    assert pred.dtype == torch.long and pred.shape == (12,)
    assert int(pred.min()) >= 0 and int(pred.max()) <= C - 1
    probs = head.probabilities(out)
    assert probs.shape == (12, C) and (probs >= 0).all()
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(12))


def test_learns_separable_toy_problem(name):
    torch.manual_seed(0)
    head = create_head(name, D, C)
    x, label = _toy()
    opt = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(150):
        head.train()
        loss = head.loss(head(x), label)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(map(torch.isfinite, map(torch.tensor, losses)))
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])
    head.eval()
    with torch.no_grad():
        acc = (head.predict(head(x)) == label).float().mean()
    assert acc >= 0.9, f"{name} accuracy {acc:.2f} (chance {1 / C:.2f})"


def test_label_smoothing_changes_ce_loss():
    torch.manual_seed(0)
    plain, smooth = create_head("linear", D, C), create_head("linear", D, C, label_smoothing=0.1)
    smooth.load_state_dict(plain.state_dict())
    x, label = _toy(20)
    assert not torch.isclose(plain.loss(plain(x), label), smooth.loss(smooth(x), label))
    with pytest.raises(ValueError, match="label_smoothing"):
        create_head("linear", D, C, label_smoothing=1.0)


def test_class_weights_list_matches_weighted_ce():
    weights = [1.0, 2.0, 0.5, 1.0, 3.0]
    head = create_head("linear", D, C, class_weights=weights)
    x, label = _toy(20)
    out = head(x)
    expected = F.cross_entropy(out, label, weight=torch.tensor(weights))
    torch.testing.assert_close(head.loss(out, label), expected)
    with pytest.raises(ValueError, match="expected num_classes=5"):
        create_head("linear", D, C, class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="'balanced'"):
        create_head("linear", D, C, class_weights="inverse")


@pytest.mark.parametrize("head_name", ["coral", "regression"])
def test_class_weights_weight_samples_of_non_ce_heads(head_name):
    head = create_head(head_name, D, C, class_weights=[0.0, 0.0, 0.0, 0.0, 1.0])
    x, label = _toy(20)
    out = head(x)
    keep = label == C - 1  # weight only on the last class: the loss is the mean over those samples alone
    torch.testing.assert_close(head.loss(out, label), head.loss(out[keep], label[keep]))


def test_balanced_weights(name):
    head = create_head(name, D, C, class_weights="balanced")
    x, label = _toy(10)
    with pytest.raises(RuntimeError, match="set_class_frequencies"):
        head.loss(head(x), label)
    counts = [10, 20, 30, 20, 20]
    head.set_class_frequencies(counts)
    expected = torch.tensor([100 / (C * c) for c in counts])
    torch.testing.assert_close(head.class_weight, expected)
    assert torch.isfinite(head.loss(head(x), label))
    # The weights and the "set" flag travel in the state dict (checkpoints).
    restored = create_head(name, D, C, class_weights="balanced")
    restored.load_state_dict(head.state_dict())
    torch.testing.assert_close(restored.class_weight, expected)
    assert torch.isfinite(restored.loss(restored(x), label))


def test_balanced_weights_empty_class_warns_and_bad_counts_raise():
    head = create_head("linear", D, C, class_weights="balanced")
    with pytest.warns(UserWarning, match=r"classes \[1\]"):
        head.set_class_frequencies([4, 0, 4, 4, 4])
    assert torch.isfinite(head.class_weight).all()
    with pytest.raises(ValueError, match="5 non-negative"):
        head.set_class_frequencies([1, 2])


def _confident_ordinal(label: torch.Tensor) -> torch.Tensor:
    """Logits +10 for tasks k < label, -10 otherwise: for CORAL ("y > k") and for CORN ("y > k given
    y > k-1") alike, these are confident, correct answers."""
    return torch.where(label.unsqueeze(1) > torch.arange(C - 1), 10.0, -10.0)


@pytest.mark.parametrize("head_type", [CoralHead, CornHead])
def test_ordinal_predict_matches_probability_argmax(head_type):
    head = head_type(D, C)
    label = torch.arange(C)
    out = _confident_ordinal(label)
    assert head.predict(out).tolist() == label.tolist()
    assert head.probabilities(out).argmax(dim=1).tolist() == label.tolist()
    assert head.loss(out, label) < 1e-3


def test_corn_rank_consistent_from_conditionals():
    head = CornHead(D, C)
    # P(y>0)=0.9, P(y>1|y>0)=0.9 -> 0.81, P(y>2|y>1)=0.5 -> 0.405: predicted class 2.
    out = torch.logit(torch.tensor([[0.9, 0.9, 0.5, 0.9]]))
    assert head.predict(out).tolist() == [2]
    probs = head.probabilities(out)
    torch.testing.assert_close(probs[0, :3], torch.tensor([0.1, 0.09, 0.405]), atol=1e-5, rtol=0)


def test_coral_task_weights():
    head = CoralHead(D, C, task_weights=[1.0, 0.0, 0.0, 0.0])
    out, label = torch.zeros(3, C - 1), torch.tensor([0, 2, 4])
    torch.testing.assert_close(head.loss(out, label), torch.tensor(0.6931471805599453))  # one BCE at p=0.5
    with pytest.raises(ValueError, match="num_classes-1=4"):
        CoralHead(D, C, task_weights=[1.0])


def test_regression_mse_vs_huber():
    mse, huber = RegressionHead(D, C, loss="mse"), RegressionHead(D, C, loss="huber", huber_delta=1.0)
    label = torch.tensor([2, 2])
    small, large = torch.tensor([2.5, 2.5]), torch.tensor([5.0, 5.0])
    torch.testing.assert_close(mse.loss(small, label), torch.tensor(0.25))
    torch.testing.assert_close(huber.loss(small, label), torch.tensor(0.125))  # 0.5 x^2 inside delta
    torch.testing.assert_close(mse.loss(large, label), torch.tensor(9.0))
    torch.testing.assert_close(huber.loss(large, label), torch.tensor(2.5))  # delta (|x| - delta/2) outside
    assert huber.predict(torch.tensor([-3.0, 1.4, 1.6, 99.0])).tolist() == [0, 1, 2, C - 1]
    probs = huber.probabilities(torch.tensor([1.4, 2.6]))
    assert probs.argmax(dim=1).tolist() == [1, 3]
    with pytest.raises(ValueError, match=r"\['huber', 'mse'\]"):
        RegressionHead(D, C, loss="l1")


def test_create_head_errors_list_choices():
    with pytest.raises(ValueError, match="valid choices") as info:
        create_head("transformer", D, C)
    for valid in HEADS:
        assert valid in str(info.value)
    with pytest.raises(ValueError, match="unknown argument") as info:
        create_head("linear", D, C, hiden=3)
    assert "'hiden'" in str(info.value) and "dropout" in str(info.value)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        create_head("linear", D, 1)
