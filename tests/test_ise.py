import math

import pytest
import torch
import torch.nn.functional as F

from pyreid.losses.ise import ise_lambda, label_preserving_loss, support_samples


def make(b=12, k=6, d=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(b, d, generator=g, dtype=torch.float64)
    labels = torch.randint(0, k, (b,), generator=g)
    centroids = F.normalize(torch.randn(k, d, generator=g, dtype=torch.float64), dim=1)
    return features, labels, centroids


def test_lambda_schedule():
    assert ise_lambda(0.0) == 0.0
    assert ise_lambda(1.0) == pytest.approx(0.5)
    assert ise_lambda(1.0, lambda0=2.0) == pytest.approx(1.0)
    assert ise_lambda(0.3) == pytest.approx(0.5 * math.log(1 + (math.e - 1) * 0.3))
    with pytest.raises(ValueError, match="progress t/T must be in \\[0, 1\\]"):
        ise_lambda(1.5)


def support_samples_loop(features, labels, centroids, progress, k, lambda0=1.0):
    lam = 0.5 * lambda0 * math.log(1 + (math.e - 1) * progress)
    out, out_labels = [], []
    for f, y in zip(features, labels.tolist()):
        f = f / f.norm()
        sims = [(float(f @ (c / c.norm())), j) for j, c in enumerate(centroids) if j != y]
        sims.sort(key=lambda p: -p[0])
        for _, j in sims[:k]:
            s = f + lam * (centroids[j] - centroids[y]) / 2
            out.append(s / s.norm())
            out_labels.append(y)
    return torch.stack(out), torch.tensor(out_labels)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("progress", [0.0, 0.4, 1.0])
def test_support_samples_match_a_loop(k, progress):
    features, labels, centroids = make(seed=k)
    supports, support_labels = support_samples(features, labels, centroids, progress, k=k)
    expected, expected_labels = support_samples_loop(features, labels, centroids, progress, k)
    assert supports.shape == (features.shape[0] * k, features.shape[1])
    assert torch.equal(support_labels, expected_labels)
    assert torch.allclose(supports, expected, atol=1e-12)


def test_supports_start_at_the_feature_and_move_towards_the_nearest_other_cluster():
    features, labels, centroids = make(seed=7)
    at_start, _ = support_samples(features, labels, centroids, 0.0)
    assert torch.allclose(at_start, F.normalize(features, dim=1))
    at_end, _ = support_samples(features, labels, centroids, 1.0)
    f = F.normalize(features, dim=1)
    sims = f @ centroids.t()
    sims[torch.arange(len(labels)), labels] = -2
    nearest = centroids[sims.argmax(1)]
    # The support is closer to the nearest other centroid than the feature is.
    assert ((at_end * nearest).sum(1) > (f * nearest).sum(1)).all()


def test_support_samples_errors():
    features, labels, centroids = make()
    with pytest.raises(ValueError, match="k must be in \\[1, 5\\]"):
        support_samples(features, labels, centroids, 0.5, k=6)
    with pytest.raises(ValueError, match="labels must be in \\[0, 6\\)"):
        support_samples(features, labels + 6, centroids, 0.5)
    with pytest.raises(TypeError, match="labels must be int64, got torch.int32"):
        support_samples(features, labels.int(), centroids, 0.5)


def label_preserving_loss_loop(features, labels, supports, support_labels, temp):
    anchors = F.normalize(features, dim=1)
    supports = F.normalize(supports, dim=1)
    losses = []
    for f, y in zip(anchors, labels.tolist()):
        own = [float(f @ s) for s, z in zip(supports, support_labels.tolist()) if z == y]
        terms = [min(own) / temp]
        for other in sorted(set(support_labels.tolist()) - {y}):
            terms.append(max(float(f @ s) for s, z in zip(supports, support_labels.tolist()) if z == other) / temp)
        terms = torch.tensor(terms, dtype=torch.float64)
        losses.append(-(terms[0] - torch.logsumexp(terms, 0)))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("k", [1, 2])
def test_label_preserving_loss_matches_a_loop(k):
    features, labels, centroids = make(b=16, k=5, seed=10 + k)
    supports, support_labels = support_samples(features, labels, centroids, 0.7, k=k)
    loss = label_preserving_loss(features, labels, supports, support_labels, temp=0.6)
    expected = label_preserving_loss_loop(features, labels, supports, support_labels, 0.6)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)


def test_label_preserving_loss_has_gradients_through_anchors_and_supports():
    features, labels, centroids = make(b=8, k=4, seed=3)
    features = features.requires_grad_()
    supports, support_labels = support_samples(features, labels, centroids, 0.5)
    label_preserving_loss(features, labels, supports, support_labels).backward()
    assert features.grad is not None and features.grad.abs().sum() > 0
    assert torch.autograd.gradcheck(
        lambda f: label_preserving_loss(f, labels, *support_samples(f, labels, centroids, 0.5)),
        (features.detach().clone().requires_grad_(),),
    )


def test_label_preserving_loss_edge_cases():
    features, labels, centroids = make(b=4, k=3)
    empty = label_preserving_loss(features[:0], labels[:0], features[:0], labels[:0])
    assert empty.item() == 0.0
    one_identity = torch.zeros(4, dtype=torch.int64)
    assert label_preserving_loss(features, one_identity, features, one_identity).item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="needs at least one support"):
        label_preserving_loss(features, labels, features[:1], labels[:1] + 100)
