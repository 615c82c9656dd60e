"""Calls every CUDA op of pyreid once on small inputs and checks the result against the CPU op.

    python tools/gpu_check_kernels.py [--json FILE] [--device cuda|cpu]

The quick correctness smoke of `make gpu-check`, and the program it runs
under compute-sanitizer (memcheck, racecheck): seconds on a GPU, so that it
still finishes under the sanitizer's slowdown, yet large enough that every
kernel launches several blocks and runs its odd-size tails (N not a multiple
of any tile, k above one warp).

Each kernel gets the inputs the CPU pipeline produced (the k-reciprocal
stages take the CPU's neighbour lists, sets and weights), so a mismatch
points at one kernel and not at whatever ran before it. It fails when a
pyreid op has a CUDA kernel registered but no case here, so a new kernel
cannot be left out of the check.

`--device cpu` runs both sides on the CPU: it checks this script (that every
case runs and its comparisons hold), not the CUDA kernels. Exit status 0 when
every case agrees, 1 when one does not, 2 when there is nothing to check
(no CUDA device, pyreid not importable or built without CUDA kernels).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import warnings

import torch

# Run from anywhere: the repository's pyreid (the in-place build), not an installed one.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

METRICS = ("sqeuclidean", "euclidean", "cosine")
CASES = []  # (name, ops the case launches, function(device))


def case(*ops):
    def register(fn):
        CASES.append((fn.__name__, ops, fn))
        return fn

    return register


def features(n, d, seed, clusters=8, spread=0.3, dtype=torch.float32):
    """Points around random centres (the shape re-ID features have), made on the CPU so both devices get the same."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, d, generator=g, dtype=torch.float64)
    x = centres[torch.randint(0, clusters, (n,), generator=g)] + spread * torch.randn(n, d, generator=g, dtype=torch.float64)
    return x.to(dtype)


def unit_features(n, d, seed, dtype=torch.float32):
    return torch.nn.functional.normalize(features(n, d, seed, spread=0.5, dtype=torch.float64), dim=1).to(dtype)


def relative_error(out, ref):
    out, ref = out.detach().cpu().double(), ref.detach().cpu().double()
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


def expect_close(out, ref, tol, what):
    error = relative_error(out, ref)
    expect(error < tol, f"{what}: relative error {error:.2e} >= {tol:.0e}")


def expect_equal(out, ref, what):
    out, ref = out.cpu(), ref.cpu()
    expect(out.shape == ref.shape, f"{what}: shape {tuple(out.shape)} != CPU's {tuple(ref.shape)}")
    differ = int((out != ref).sum())
    expect(differ == 0, f"{what}: {differ} of {out.numel()} entries differ from the CPU's")


def tolerance(dtype):
    return 1e-5 if dtype in (torch.float32, torch.float64) else 1e-2


@case("pairwise_distance")
def pairwise_distance(device):
    import pyreid

    for dtype in (torch.float32, torch.float16):
        x, y = features(193, 37, seed=1, dtype=dtype), features(261, 37, seed=2, dtype=dtype)
        for metric in METRICS:
            for other in (None, y):
                cpu = pyreid.ops.pairwise_distance(x, other, metric)
                out = pyreid.ops.pairwise_distance(x.to(device), None if other is None else other.to(device), metric)
                expect_close(out, cpu, tolerance(dtype), f"{metric} {dtype} y={'self' if other is None else 'other'}")


@case("knn")
def knn(device):
    import pyreid
    from references.distances import pairwise_distance_reference

    for dtype, metric, n, m, k in (
        (torch.float32, "sqeuclidean", 300, None, 9),
        (torch.float32, "euclidean", 300, 517, 40),
        (torch.float32, "cosine", 257, 1031, 33),
        (torch.float16, "sqeuclidean", 300, None, 17),
    ):
        x = features(n, 24, seed=3, dtype=dtype)
        y = None if m is None else features(m, 24, seed=4, dtype=dtype)
        d_cpu, i_cpu = pyreid.ops.knn(x, y, k=k, metric=metric)
        d_out, i_out = pyreid.ops.knn(x.to(device), None if y is None else y.to(device), k=k, metric=metric)
        what = f"{metric} {dtype} N={n} M={m or n} k={k}"
        expect_close(d_out, d_cpu, tolerance(dtype), f"{what} distances")
        # Indices may differ only between (near-)tied neighbours: the exact
        # distances of the neighbours each device chose must agree.
        exact = pairwise_distance_reference(x, y, metric)
        i_out = i_out.cpu()
        expect(bool(((i_out >= 0) & (i_out < exact.shape[1])).all()), f"{what}: index out of range")
        expect(bool((i_out.sort(dim=1).values.diff(dim=1) > 0).all()), f"{what}: a row repeats a neighbour")
        expect_close(exact.gather(1, i_out), exact.gather(1, i_cpu), tolerance(dtype), f"{what} chosen neighbours")


@case("knn_row_max")
def knn_row_max(device):
    import pyreid

    for metric, n, k in (("sqeuclidean", 300, 9), ("euclidean", 517, 21), ("cosine", 257, 33)):
        x = features(n, 24, seed=5)
        d_cpu, _, max_cpu = pyreid.ops.knn_row_max(x, k=k, metric=metric)
        d_out, _, max_out = pyreid.ops.knn_row_max(x.to(device), k=k, metric=metric)
        what = f"knn_row_max {metric} N={n} k={k}"
        expect_close(d_out, d_cpu, tolerance(torch.float32), f"{what} distances")
        expect_close(max_out, max_cpu, tolerance(torch.float32), f"{what} row maxima")


@case("kmeans_plus_plus")
def kmeans_plus_plus(device):
    import pyreid

    # Clustered points: each greedy choice is decided by clear margins, so both devices pick the same centres.
    for n, d, k, trials in ((300, 24, 12, None), (2051, 64, 40, 5), (517, 7, 30, 1)):
        x = features(n, d, seed=7, clusters=k, spread=0.05)
        cpu = pyreid.ops.kmeans_plus_plus(x, k, seed=1, trials=trials)
        out = pyreid.ops.kmeans_plus_plus(x.to(device), k, seed=1, trials=trials)
        what = f"kmeans_plus_plus N={n} D={d} k={k}"
        if not (torch.equal(out[0].cpu(), cpu[0]) and torch.equal(out[1].cpu(), cpu[1])):
            raise AssertionError(f"{what}: centres or labels differ from the CPU's")
        expect_close(out[2], cpu[2], tolerance(torch.float32), f"{what} closest")
        expect_close(out[3], cpu[3], tolerance(torch.float32), f"{what} second")


def _dbscan_problem():
    """Cosine distances of clustered points and an eps that leaves both clusters and noise."""
    import pyreid

    x = torch.cat([features(400, 16, seed=5, clusters=6, spread=0.25), 3 * torch.randn(23, 16, dtype=torch.float32)])
    dist = pyreid.ops.pairwise_distance(x, metric="cosine")
    eps = float(dist.topk(5, dim=1, largest=False).values[:, -1].median())
    return dist, eps


@case("dbscan_dense")
def dbscan_dense(device):
    import pyreid

    dist, eps = _dbscan_problem()
    cpu = pyreid.ops.dbscan(dist, eps, 4)
    expect(int(cpu.max()) >= 1 and bool((cpu == -1).any()), "the problem should have clusters and noise")
    expect_equal(pyreid.ops.dbscan(dist.to(device), eps, 4), cpu, "labels")


@case("dbscan_csr")
def dbscan_csr(device):
    import pyreid

    dist, eps = _dbscan_problem()
    rows, cols = torch.nonzero(dist <= 1.5 * eps, as_tuple=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notes that sparse CSR is beta and unchecked
        graph = torch.sparse_coo_tensor(torch.stack([rows, cols]), dist[rows, cols], dist.shape)
        graph = graph.coalesce().to_sparse_csr()
    cpu = pyreid.ops.dbscan(graph, eps, 4)
    expect(int(cpu.max()) >= 1, "the problem should have clusters")
    expect_equal(pyreid.ops.dbscan(graph.to(device), eps, 4), cpu, "labels")


@case("cluster_memory_update_")
def cluster_memory_update(device):
    import pyreid

    g = torch.Generator().manual_seed(6)
    memory = torch.nn.functional.normalize(torch.randn(50, 130, generator=g), dim=1)
    for dtype in (torch.float32, torch.float16):
        inputs = torch.nn.functional.normalize(torch.randn(64, 130, generator=g), dim=1).to(dtype)
        # 16 labels x 4 instances, shuffled: same-label samples must be applied in batch order.
        targets = torch.randperm(50, generator=g)[:16].repeat_interleave(4)[torch.randperm(64, generator=g)]
        for mode in ("momentum", "hard"):
            cpu = pyreid.ops.cluster_memory_update_(memory.clone(), inputs, targets, 0.2, mode)
            out = pyreid.ops.cluster_memory_update_(memory.to(device), inputs.to(device), targets.to(device), 0.2, mode)
            expect_close(out, cpu, 1e-5, f"{mode} {dtype}")


def _encoding_inputs(k1=20):
    """float64 unit features (so both devices' neighbour lists agree exactly) and their CPU neighbour lists."""
    import pyreid

    x = unit_features(413, 32, seed=7, dtype=torch.float64)
    return x, {"cluster": pyreid.ops.knn(x, k=k1)[1], "original": pyreid.ops.knn(x, k=k1 + 1)[1]}


@case("kreciprocal_sets")
def kreciprocal_sets(device):
    import pyreid

    _, neighbors = _encoding_inputs()
    for variant, nb in neighbors.items():
        crow, col = pyreid.ops.kreciprocal_sets(nb, 20)
        out_crow, out_col = pyreid.ops.kreciprocal_sets(nb.to(device), 20)
        expect_equal(out_crow, crow, f"{variant} crow")
        expect_equal(out_col, col, f"{variant} col")


@case("kreciprocal_weights")
def kreciprocal_weights(device):
    import pyreid

    x64, neighbors = _encoding_inputs()
    for dtype in (torch.float32, torch.float64):
        x = x64.to(dtype)
        for variant, nb in neighbors.items():
            crow, col = pyreid.ops.kreciprocal_sets(nb, 20)
            row_max = pyreid.ops.knn_row_max(x, k=1, metric="sqeuclidean")[2] if variant == "original" else None
            cpu = pyreid.ops.kreciprocal_weights(x, crow, col, variant, row_max)
            out = pyreid.ops.kreciprocal_weights(
                x.to(device), crow.to(device), col.to(device), variant, None if row_max is None else row_max.to(device)
            )
            expect_close(out, cpu, 1e-5, f"{variant} {dtype}")
            # The listed-distance path: half of each list, so rows mix both paths.
            dist, lists = pyreid.ops.knn(x, k=10)
            cpu = pyreid.ops.kreciprocal_weights(x, crow, col, variant, row_max, lists, dist)
            out = pyreid.ops.kreciprocal_weights(
                x.to(device), crow.to(device), col.to(device), variant,
                None if row_max is None else row_max.to(device), lists.to(device), dist.to(device),
            )
            expect_close(out, cpu, 1e-5, f"{variant} {dtype} with lists")


@case("kreciprocal_jaccard")
def kreciprocal_jaccard(device):
    import pyreid
    from pyreid.ops.kreciprocal_encoding import kreciprocal_encoding

    x, _ = _encoding_inputs()
    for variant in ("cluster", "original"):
        nb, crow, col, val = kreciprocal_encoding(x, 20, variant)
        expansion = nb[:, :6].contiguous()
        # All rows (jaccard_graph) and the leading query rows only (re_ranking).
        for rows, max_distance in ((x.shape[0], 1.0), (151, 0.9)):
            cpu = pyreid.ops.kreciprocal_jaccard(crow, col, val, expansion, rows, max_distance)
            out = pyreid.ops.kreciprocal_jaccard(
                crow.to(device), col.to(device), val.to(device), expansion.to(device), rows, max_distance
            )
            what = f"{variant} rows={rows}"
            expect_equal(out[0], cpu[0], f"{what} crow")
            expect_equal(out[1], cpu[1], f"{what} col")
            # The CUDA kernel sums in the CPU's order.
            gap = float((out[2].cpu() - cpu[2]).abs().max()) if cpu[2].numel() else 0.0
            expect(gap < 1e-6, f"{what} values: max difference {gap:.2e}")


@case("knn", "kreciprocal_sets", "kreciprocal_weights", "kreciprocal_jaccard", "pairwise_distance")
def jaccard_graph_and_re_ranking(device):
    """The whole pipelines on the device, as users call them."""
    import pyreid

    x = unit_features(389, 32, seed=8, dtype=torch.float64)
    for variant in ("cluster", "original"):
        cpu = pyreid.ops.jaccard_graph(x, 20, 6, variant=variant)
        out = pyreid.ops.jaccard_graph(x.to(device), 20, 6, variant=variant)
        expect_equal(out.crow_indices(), cpu.crow_indices(), f"jaccard_graph {variant} crow")
        expect_equal(out.col_indices(), cpu.col_indices(), f"jaccard_graph {variant} col")
        expect_close(out.values(), cpu.values(), 1e-5, f"jaccard_graph {variant} values")
    query, gallery = x[:61].float(), x[61:].float()
    cpu = pyreid.ops.re_ranking(query, gallery)
    out = pyreid.ops.re_ranking(query.to(device), gallery.to(device))
    gap = float((out.cpu() - cpu).abs().max())
    expect(gap < 1e-5, f"re_ranking: max difference {gap:.2e}")


def covered_ops():
    return sorted({op for _, ops, _ in CASES for op in ops})


def ops_with_cuda_kernels():
    return sorted(
        name.split("::", 1)[1]
        for name in torch._C._dispatch_get_all_op_names()
        if name.startswith("pyreid::") and torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA")
    )


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def run_cases(device):
    results = []
    for name, ops, fn in CASES:
        start = time.perf_counter()
        try:
            fn(device)
            sync(device)
            status, message = "passed", ""
        except Exception as error:  # one failing kernel must not hide the others
            status, message = "failed", f"{type(error).__name__}: {error}"
            traceback.print_exc()
        seconds = time.perf_counter() - start
        print(f"  {name:32s} {status:6s} {seconds:6.2f} s  {message}", flush=True)
        results.append({"name": name, "ops": list(ops), "status": status, "seconds": round(seconds, 3),
                        "message": message})
    return results


def check(device):
    """(exit status, findings): runs every case on `device` against the CPU."""
    findings = {"device": device, "torch": torch.__version__, "cases": [], "problem": None}
    if device == "cuda" and not torch.cuda.is_available():
        findings["problem"] = "no CUDA device visible (torch.cuda.is_available() is False)"
        return 2, findings
    try:
        import pyreid
    except ImportError as error:
        findings["problem"] = f"import pyreid failed: {error}"
        return 2, findings
    findings["build_info"] = pyreid.build_info()
    if device == "cuda":
        findings["gpu"] = torch.cuda.get_device_name(0)
        if not findings["build_info"]["cuda_kernels"]:
            findings["problem"] = "pyreid._C was built without CUDA kernels (rebuild with FORCE_CUDA=1)"
            return 2, findings
        findings["uncovered_ops"] = sorted(set(ops_with_cuda_kernels()) - set(covered_ops()))
    findings["cases"] = run_cases(device)
    failed = [c["name"] for c in findings["cases"] if c["status"] != "passed"]
    if findings.get("uncovered_ops"):
        findings["problem"] = f"CUDA kernels without a smoke case here: {', '.join(findings['uncovered_ops'])}"
    elif failed:
        findings["problem"] = f"{len(failed)} of {len(findings['cases'])} cases disagree with the CPU: {', '.join(failed)}"
    return (1 if findings["problem"] else 0), findings


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cpu: run both sides on the CPU, to check this script without a GPU")
    args = parser.parse_args(argv)
    print(f"gpu_check_kernels: {len(CASES)} cases on {args.device} against the CPU "
          f"(ops: {', '.join(covered_ops())})", flush=True)
    status, findings = check(args.device)
    if findings["problem"]:
        print(f"gpu_check_kernels: {findings['problem']}", flush=True)
    else:
        print(f"gpu_check_kernels: all {len(findings['cases'])} cases agree with the CPU", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(findings, f, indent=2)
    return status


if __name__ == "__main__":
    sys.exit(main())
