"""pyreid.losses.cross_entropy: label smoothing and temperature against a hand computation."""

import math

import pytest
import torch
import torch.nn.functional as F

from pyreid.losses import CrossEntropyLoss, cross_entropy


def _by_hand(logits, targets, eps, temperature):
    """-sum_c q_c log p_c with q = (1 - eps) onehot + eps / K, p = softmax(logits / T), in float64 loops."""
    total = 0.0
    for row, y in zip(logits.tolist(), targets.tolist()):
        scaled = [v / temperature for v in row]
        top = max(scaled)
        log_z = top + math.log(sum(math.exp(v - top) for v in scaled))
        k = len(row)
        total += -sum(((1 - eps) * (c == y) + eps / k) * (v - log_z) for c, v in enumerate(scaled))
    return total / len(targets)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("temperature", [1.0, 0.1, 0.05, 2.0])
def test_matches_hand_computation(eps, temperature):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 7, generator=g, dtype=torch.float64) * 3
    targets = torch.tensor([0, 6, 3, 3, 1])
    loss = cross_entropy(logits, targets, label_smoothing=eps, temperature=temperature)
    assert loss.item() == pytest.approx(_by_hand(logits, targets, eps, temperature), rel=1e-6)
    # The same distribution as PyTorch's own label smoothing (eps spread over all K classes).
    torch.testing.assert_close(loss, F.cross_entropy(logits.float() / temperature, targets, label_smoothing=eps),
                               check_dtype=False)


def test_two_class_example_worked_by_hand():
    # logits (2, 0), T = 0.5 -> scaled (4, 0); log p = (-log(1 + e^-4), -4 - log(1 + e^-4)).
    # eps = 0.2, K = 2, y = 0: q = (0.9, 0.1); loss = log(1 + e^-4) + 0.1 * 4.
    loss = cross_entropy(torch.tensor([[2.0, 0.0]]), torch.tensor([0]), label_smoothing=0.2, temperature=0.5)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-4)) + 0.4, rel=1e-6)


def test_gradient_and_module():
    logits = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([1, 2, 3, 0])
    assert torch.autograd.gradcheck(lambda x: cross_entropy(x, targets, 0.1, 0.3), (logits,))
    module = CrossEntropyLoss(label_smoothing=0.1, temperature=0.3)
    torch.testing.assert_close(module(logits, targets), cross_entropy(logits, targets, 0.1, 0.3), check_dtype=False)
    module.temperature = 1.0  # a schedule changes it between steps
    torch.testing.assert_close(module(logits, targets), cross_entropy(logits, targets, 0.1, 1.0), check_dtype=False)


def test_errors():
    logits, targets = torch.randn(3, 4), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\), got 1.0"):
        cross_entropy(logits, targets, label_smoothing=1.0)
    with pytest.raises(ValueError, match="temperature must be positive, got 0"):
        cross_entropy(logits, targets, temperature=0)
    with pytest.raises(ValueError, match=r"targets must be in \[0, 4\), got \[0, 4\]"):
        cross_entropy(logits, torch.tensor([0, 1, 4]))
    with pytest.raises(TypeError, match="targets must be int64, got torch.float32"):
        cross_entropy(logits, targets.float())
    with pytest.raises(ValueError, match="logits must be B x K"):
        cross_entropy(logits[0], targets)
    with pytest.raises(ValueError, match="temperature must be positive"):
        CrossEntropyLoss(temperature=-1)
