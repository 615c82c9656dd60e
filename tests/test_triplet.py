"""pyreid.losses.triplet: batch-hard mining and the loss against brute-force loops."""

import math

import pytest
import torch

from pyreid.losses import TripletLoss, batch_hard_mining, batch_hard_triplet_loss


def _brute_force(x, labels, metric="euclidean"):
    """Per anchor, by explicit loops in float64: (d_ap, positive, d_an, negative) or None without both."""
    x = x.double()
    n = x.shape[0]

    def d(i, j):
        if metric == "cosine":
            return 1 - float(x[i] @ x[j] / (x[i].norm() * x[j].norm()))
        sq = float(((x[i] - x[j]) ** 2).sum())
        return sq if metric == "sqeuclidean" else math.sqrt(sq)

    out = []
    for i in range(n):
        pos = [(d(i, j), j) for j in range(n) if j != i and labels[j] == labels[i]]
        neg = [(d(i, j), j) for j in range(n) if labels[j] != labels[i]]
        if not pos or not neg:
            out.append(None)
            continue
        # Ties (duplicate images) go to the smaller index, as torch's max/min report them.
        d_ap, pos_j = max(pos, key=lambda t: (t[0], -t[1]))
        out.append((d_ap, pos_j, *min(neg)))
    return out


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_mining_picks_the_hardest_pairs(metric):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(24, 10, generator=g)
    labels = torch.randint(0, 5, (24,), generator=g)
    labels[0] = 9  # an anchor without a positive
    from pyreid.ops import pairwise_distance

    pairs = batch_hard_mining(pairwise_distance(x, metric=metric), labels)
    expected = _brute_force(x, labels.tolist(), metric)
    for i, e in enumerate(expected):
        assert bool(pairs.valid[i]) == (e is not None)
        if e is None:
            continue
        d_ap, pos, d_an, neg = e
        assert int(pairs.positive[i]) == pos and int(pairs.negative[i]) == neg
        assert float(pairs.d_ap[i]) == pytest.approx(d_ap, rel=1e-4, abs=1e-5)
        assert float(pairs.d_an[i]) == pytest.approx(d_an, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("margin", [0.3, 0.0, 2.0, None])
def test_loss_matches_brute_force(margin):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(16, 8, generator=g)
    labels = torch.arange(4).repeat_interleave(4)
    expected = []
    for e in _brute_force(x, labels.tolist()):
        gap = e[0] - e[2]
        expected.append(math.log1p(math.exp(gap)) if margin is None else max(0.0, gap + margin))
    loss = batch_hard_triplet_loss(x, labels, margin=margin)
    assert loss.item() == pytest.approx(sum(expected) / len(expected), rel=1e-5)


def test_normalize_and_module():
    x = torch.randn(12, 6) * 5
    labels = torch.arange(3).repeat_interleave(4)
    unit = torch.nn.functional.normalize(x, dim=1)
    torch.testing.assert_close(batch_hard_triplet_loss(x, labels, normalize=True),
                               batch_hard_triplet_loss(unit, labels))
    module = TripletLoss(margin=None, metric="cosine")
    torch.testing.assert_close(module(x, labels), batch_hard_triplet_loss(x, labels, None, "cosine"))
    assert "soft" in repr(module)


def test_no_valid_anchor_gives_zero_with_gradient():
    x = torch.randn(4, 3, requires_grad=True)
    loss = batch_hard_triplet_loss(x, torch.tensor([0, 1, 2, 3]))  # nobody has a positive
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_gradient_is_finite_with_duplicate_rows_and_matches_float64():
    """Identical images give zero distances, where sqrt has no derivative: the gradient must stay finite,
    and equal the float64 gradient of the same loss written with torch.cdist-free explicit distances."""
    g = torch.Generator().manual_seed(3)
    base = torch.randn(8, 5, generator=g, dtype=torch.float64)
    base[1] = base[0]  # a duplicate positive pair
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    x = base.clone().float().requires_grad_(True)
    batch_hard_triplet_loss(x, labels, margin=0.5).backward()
    assert torch.isfinite(x.grad).all()
    # Reference: the same mined pairs, distances written out in float64.
    ref = base.clone().requires_grad_(True)
    pairs = _brute_force(base, labels.tolist())
    terms = []
    for i, (_, pos, _, neg) in enumerate(pairs):
        d_ap = (ref[i] - ref[pos]).pow(2).sum().clamp_min(1e-30).sqrt()
        d_an = (ref[i] - ref[neg]).pow(2).sum().sqrt()
        terms.append(torch.relu(d_ap - d_an + 0.5))
    torch.stack(terms).mean().backward()
    torch.testing.assert_close(x.grad.double(), ref.grad, rtol=1e-4, atol=1e-5)


def test_errors():
    x, labels = torch.randn(4, 3), torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="unknown metric 'manhattan'"):
        batch_hard_triplet_loss(x, labels, metric="manhattan")
    with pytest.raises(ValueError, match="margin must be >= 0 or None"):
        batch_hard_triplet_loss(x, labels, margin=-0.1)
    with pytest.raises(ValueError, match="features must be B x D and targets B"):
        batch_hard_triplet_loss(x, labels[:3])
    with pytest.raises(ValueError, match="unknown metric"):
        TripletLoss(metric="l1")
