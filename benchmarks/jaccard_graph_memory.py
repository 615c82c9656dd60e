"""Peak memory and time of ops.jaccard_graph at N = 50,000, D = 128 (CPU).

    .venv/bin/python benchmarks/jaccard_graph_memory.py [N] [D]

Prints the process's peak resident set size before and after the call
(getrusage ru_maxrss; the difference is what jaccard_graph added on top of the
features and the loaded libraries), the wall time and the graph's size. Too
slow for repeated pytest-benchmark rounds on 2 cores, so it runs once.
"""

import resource
import sys
import time

import torch

import pyreid


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    d = int(sys.argv[2]) if len(sys.argv) > 2 else 128
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(n // 16, d, generator=g)
    x = centres[torch.randint(0, n // 16, (n,), generator=g)] + 0.5 * torch.randn(n, d, generator=g)
    x = torch.nn.functional.normalize(x, dim=1)
    before = peak_rss_mb()
    start = time.perf_counter()
    graph = pyreid.ops.jaccard_graph(x, k1=30, k2=6)
    elapsed = time.perf_counter() - start
    after = peak_rss_mb()
    nnz = graph.values().numel()
    print(f"jaccard_graph N={n} D={d} k1=30 k2=6 threads={torch.get_num_threads()}")
    print(f"  time {elapsed:.2f} s, stored pairs {nnz} ({nnz / n:.1f} per row)")
    print(f"  peak RSS {after:.0f} MB (before the call {before:.0f} MB, added {after - before:.0f} MB)")
    print(f"  a dense N x N float32 matrix would be {n * n * 4 / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
