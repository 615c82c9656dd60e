"""pyreid.cluster.quality against scikit-learn (ARI, NMI) and pair counting by brute force."""

import itertools

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from pyreid.cluster.quality import pseudo_label_quality


def _with_singletons(labels):
    out = np.array(labels, dtype=np.int64)
    outliers = out < 0
    out[outliers] = out.max(initial=-1) + 1 + np.arange(outliers.sum())
    return out


def _pairwise(labels, identities):
    same_cluster = same_identity = both = 0
    for i, j in itertools.combinations(range(len(labels)), 2):
        c = labels[i] >= 0 and labels[i] == labels[j]
        t = identities[i] == identities[j]
        same_cluster += c
        same_identity += t
        both += c and t
    return (both / same_cluster if same_cluster else 0.0), (both / same_identity if same_identity else 0.0)


@pytest.mark.parametrize("seed", range(40))
def test_matches_sklearn_and_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 50))
    identities = rng.integers(0, int(rng.integers(1, 8)), n)
    # Pseudo labels: identities, partly merged, partly split, some outliers; or pure noise.
    if seed % 3:
        labels = np.where(rng.random(n) < 0.2, -1, identities // int(rng.integers(1, 3)) + 10 * rng.integers(0, 2, n))
    else:
        labels = rng.integers(-1, 4, n)
    q = pseudo_label_quality(labels, identities)
    assert q["ari"] == pytest.approx(adjusted_rand_score(identities, _with_singletons(labels)), abs=1e-12)
    assert q["nmi"] == pytest.approx(normalized_mutual_info_score(identities, _with_singletons(labels)), abs=1e-12)
    precision, recall = _pairwise(labels.tolist(), identities.tolist())
    assert q["precision"] == pytest.approx(precision) and q["recall"] == pytest.approx(recall)


def test_perfect_merged_and_all_outliers():
    ids = [0, 0, 1, 1, 2, 2]
    perfect = pseudo_label_quality([5, 5, 3, 3, 9, 9], ids)
    assert perfect == {"ari": 1.0, "nmi": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    merged = pseudo_label_quality([0] * 6, ids)  # one giant cluster: all recall, little precision
    assert merged["recall"] == 1.0 and merged["precision"] == pytest.approx(3 / 15) and merged["ari"] == 0.0
    nothing = pseudo_label_quality([-1] * 6, ids)
    assert nothing["precision"] == 0.0 and nothing["recall"] == 0.0
    with pytest.raises(ValueError, match="6 labels but 5 identities"):
        pseudo_label_quality([0] * 6, ids[:5])
