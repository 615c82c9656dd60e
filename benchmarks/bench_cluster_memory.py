"""cluster_memory_update_ against the Python loops it replaces.

Run: .venv/bin/python -m pytest benchmarks/bench_cluster_memory.py --benchmark-only

Each group puts the op and two loops on the same inputs (float32, in place):
B = 256, D = 2048, K = 1000, labels either "pk" (16 identities x 16
instances, shuffled: Cluster-Contrast's sampler) or "uniform" (drawn from all
K). The loops:

- "cluster_contrast_loop": the structure of Cluster-Contrast's backward as
  published (references/published.py: cluster_contrast_momentum_loop /
  cluster_contrast_hard_loop): per sample for "momentum"; for "hard" the
  batch grouped into lists and one 1 x 1 mm + .cpu().numpy() per instance.
  This is the loop the op replaces.
- "reference_loop": references/cluster_memory.py: cluster_memory_update_reference,
  a stricter baseline: the same per-sample loop for "momentum", but for
  "hard" one vectorised dot product and argmin per label (16 Python
  iterations instead of 256 instance steps for "pk").

Before timing, each loop is checked to give the op's memory. On a shared
machine, PYREID_BENCH_THREADS=1 runs everything on one intra-op thread: the
loops' small torch ops then no longer stall on a busy second core (which
inflates their times, and so the ratios, under load). The GPU case
times forward + backward of pyreid.losses.ClusterMemory.
"""

import os

import pytest
import torch
import torch.nn.functional as F
from common import relative_error

import pyreid
from references.cluster_memory import cluster_memory_update_reference
from references.published import cluster_contrast_hard_loop, cluster_contrast_momentum_loop

B, D, K = 256, 2048, 1000


@pytest.fixture(autouse=True)
def intra_op_threads():
    """torch's intra-op threads for the test: PYREID_BENCH_THREADS, else torch's default."""
    default = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("PYREID_BENCH_THREADS", default)))
    yield
    torch.set_num_threads(default)


def make_inputs(labels, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    memory = F.normalize(torch.randn(K, D, generator=g), dim=1)
    inputs = F.normalize(torch.randn(B, D, generator=g), dim=1)
    if labels == "pk":
        ids = torch.randperm(K, generator=g)[:16]
        targets = ids.repeat_interleave(16)[torch.randperm(B, generator=g)]
    else:
        targets = torch.randint(0, K, (B,), generator=g)
    return memory.to(device), inputs.to(device), targets.to(device)


def cluster_contrast_loop(memory, inputs, targets, momentum, mode):
    if mode == "momentum":
        return cluster_contrast_momentum_loop(memory, inputs, targets, momentum)
    return cluster_contrast_hard_loop(memory, inputs, targets, momentum)


LOOPS = {"cluster_contrast_loop": cluster_contrast_loop, "reference_loop": cluster_memory_update_reference}


def _check_once(memory, inputs, targets, mode):
    out = pyreid.ops.cluster_memory_update_(memory.clone(), inputs, targets, 0.2, mode)
    ref = cluster_memory_update_reference(memory.double().cpu(), inputs.double().cpu(), targets.cpu(), 0.2, mode)
    assert relative_error(out, ref) < 1e-5
    # The float32 loops that are timed give the same memory as the op.
    for loop in LOOPS.values():
        looped = loop(memory.clone().cpu(), inputs.cpu(), targets.cpu(), 0.2, mode)
        assert relative_error(out, looped) < 1e-5


@pytest.mark.parametrize("labels", ["pk", "uniform"])
@pytest.mark.parametrize("mode", ["momentum", "hard"])
@pytest.mark.parametrize("impl", ["pyreid", *LOOPS])
def test_cluster_memory_update_cpu(benchmark, impl, mode, labels):
    benchmark.group = f"cluster_memory_update_ cpu {mode} {labels} B={B} D={D} K={K}"
    memory, inputs, targets = make_inputs(labels)
    _check_once(memory, inputs, targets, mode)
    update = pyreid.ops.cluster_memory_update_ if impl == "pyreid" else LOOPS[impl]
    benchmark.extra_info["threads"] = torch.get_num_threads()
    benchmark(update, memory, inputs, targets, 0.2, mode)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", ["momentum", "hard"])
def test_cluster_memory_forward_backward_cuda(benchmark, mode):
    benchmark.group = f"ClusterMemory cuda forward+backward {mode} B={B} D={D} K={K}"
    memory, inputs, targets = make_inputs("pk", device="cuda")
    _check_once(memory, inputs, targets, mode)
    module = pyreid.losses.ClusterMemory.from_centroids(memory, mode=mode)
    x = inputs.clone().requires_grad_()

    def step():
        module(x, targets).backward()
        torch.cuda.synchronize()

    for _ in range(10):
        step()
    benchmark(step)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(50):
        start.record()
        module(x, targets).backward()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    benchmark.extra_info["cuda_event_median_ms"] = sorted(times)[len(times) // 2]
