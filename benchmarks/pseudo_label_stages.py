"""Where the pseudo-label step's time goes: each stage of dbscan_pseudo_labels timed on its own (CPU).

    .venv/bin/python benchmarks/pseudo_label_stages.py [N] [D]      # default: 12,936 x 2,048 (Market-1501 train)

Runs the stages in the order the step runs them, on the same clustered unit
features as bench_pseudo_labels.py (k1 = 30, k2 = 6, eps = 0.6,
min_samples = 4): normalise, the NaN/Inf check, the kNN pass, the
k-reciprocal sets, the encoding's weights (from the kNN lists), the Jaccard
rows within eps, DBSCAN. Prints the best of ``--repeat`` runs per stage and
the stages after the kNN as a share of the kNN pass (issue 14's target: at
most 25% at Market scale). The first repeat also pays one-time costs (the
first DBSCAN call imports a torch module), so take the best.
"""

import argparse
import math
import time
import warnings

import torch
from unit_features import clustered_unit_features

from pyreid import ops
from pyreid.ops.checks import check_finite
from pyreid.ops.kreciprocal_encoding import neighbour_columns

EPS, MIN_SAMPLES, K1, K2 = 0.6, 4, 30, 6


def stages(features):
    """One run of the step's stages: {stage: seconds} and the labels."""
    times = {}
    clock = time.perf_counter()

    def lap(name):
        nonlocal clock
        now = time.perf_counter()
        times[name] = now - clock
        clock = now

    x = torch.nn.functional.normalize(features, dim=1)
    lap("normalise")
    check_finite(x, "features", "jaccard_graph")
    lap("NaN/Inf check")
    dist, nb = ops.knn(x, k=neighbour_columns(K1, "cluster"), metric="sqeuclidean")
    lap("knn")
    crow, col = ops.kreciprocal_sets(nb, K1)
    lap("kreciprocal_sets")
    val = ops.kreciprocal_weights(x, crow, col, "cluster", None, nb, dist)
    lap("kreciprocal_weights")
    max_distance = min(1.0, math.nextafter(EPS, math.inf) + 4 * 2.0**-24 * EPS)  # as dbscan_pseudo_labels
    jcrow, jcol, jval = ops.kreciprocal_jaccard(crow, col, val, nb[:, :K2].contiguous(), x.shape[0], max_distance)
    lap("kreciprocal_jaccard")
    n = x.shape[0]
    labels = ops.dbscan(torch.sparse_csr_tensor(jcrow, jcol, jval, (n, n), check_invariants=False), EPS, MIN_SAMPLES)
    lap("dbscan")
    return times, labels


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=12936)
    parser.add_argument("d", nargs="?", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=4)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
    features = clustered_unit_features(args.n, args.d, clusters=args.n // 16)
    best = {}
    for _ in range(args.repeat):
        times, labels = stages(features)
        for name, seconds in times.items():
            best[name] = min(best.get(name, math.inf), seconds)
    print(f"N = {args.n}, D = {args.d}, k1 = {K1}, k2 = {K2}, eps = {EPS}: {int(labels.max()) + 1} clusters, "
          f"{torch.get_num_threads()} threads, best of {args.repeat}")
    for name, seconds in best.items():
        print(f"  {name:<20} {seconds:8.3f} s")
    after = sum(s for name, s in best.items() if name != "knn")
    print(f"  everything but the kNN: {after:.3f} s = {after / best['knn']:.1%} of the kNN pass")


if __name__ == "__main__":
    main()
