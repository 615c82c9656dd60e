import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from common import DEVICES, cuda, relative_error

import pyreid
from references.cluster_memory import cluster_memory_update_reference
from references.published import cluster_contrast_hard_loop, cluster_contrast_momentum_loop

MODES = ["momentum", "hard"]
MOMENTA = [0.0, 0.2, 1.0]
# (B, K, D): empty batch, one sample, odd sizes, more labels than samples and
# many repeats of few labels (long sequential recursions).
CASES = [(0, 5, 8), (1, 1, 1), (1, 7, 5), (9, 3, 17), (33, 40, 13), (64, 4, 32), (257, 50, 67)]


def make_problem(b, k, d, seed=0, dtype=torch.float32, device="cpu"):
    """Normalised centroids and batch, labels drawn with repeats in random order."""
    g = torch.Generator().manual_seed(seed)
    memory = F.normalize(torch.randn(k, d, generator=g), dim=1)
    inputs = F.normalize(torch.randn(b, d, generator=g), dim=1)
    targets = torch.randint(0, k, (b,), generator=g)
    return memory.to(device), inputs.to(dtype=dtype, device=device), targets.to(device)


def reference(memory, inputs, targets, momentum, mode):
    """The reference loop in float64 on copies (inputs rounded to their dtype first)."""
    return cluster_memory_update_reference(
        memory.detach().cpu().double(), inputs.detach().cpu().double(), targets.cpu(), momentum, mode
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("momentum", MOMENTA)
@pytest.mark.parametrize("case", CASES)
def test_matches_reference_loop(device, mode, momentum, case):
    b, k, d = case
    for seed in range(3):
        memory, inputs, targets = make_problem(b, k, d, seed=seed + b, device=device)
        expected = reference(memory, inputs, targets, momentum, mode)
        out = pyreid.ops.cluster_memory_update_(memory, inputs, targets, momentum, mode)
        assert out is memory and memory.dtype == torch.float32
        assert relative_error(memory, expected) < 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_momentum_result_depends_on_batch_order(device):
    # Two samples of one label: the second one ends up weighing (1 - m) and the
    # first m (1 - m); swapping them changes the row, and the op follows.
    memory, inputs, _ = make_problem(2, 1, 16, seed=3, device=device)
    targets = torch.zeros(2, dtype=torch.int64, device=device)
    forward, backward = memory.clone(), memory.clone()
    pyreid.ops.cluster_memory_update_(forward, inputs, targets, 0.5)
    pyreid.ops.cluster_memory_update_(backward, inputs.flip(0), targets, 0.5)
    assert relative_error(forward, reference(memory, inputs, targets, 0.5, "momentum")) < 1e-6
    assert relative_error(backward, reference(memory, inputs.flip(0), targets, 0.5, "momentum")) < 1e-6
    assert (forward - backward).abs().max() > 1e-3


@pytest.mark.parametrize("device", DEVICES)
def test_momentum_zero_and_one(device):
    memory, inputs, targets = make_problem(40, 6, 9, seed=4, device=device)
    inputs = inputs * 3  # not normalised: the op normalises the row
    kept = memory.clone()
    pyreid.ops.cluster_memory_update_(kept, inputs, targets, 1.0)
    assert torch.allclose(kept, memory, atol=1e-6)
    last = memory.clone()
    pyreid.ops.cluster_memory_update_(last, inputs, targets, 0.0)
    for y in range(6):
        members = (targets == y).nonzero().flatten()
        if len(members):
            assert torch.allclose(last[y], F.normalize(inputs[members[-1]], dim=0), atol=1e-6)
        else:
            assert torch.equal(last[y], memory[y])


@pytest.mark.parametrize("device", DEVICES)
def test_hard_mode_picks_the_first_of_exactly_tied_distinct_samples(device):
    # Two different samples with the same similarity to the centroid:
    # x1 = c*a + s*u, x2 = c*a - s*u with u orthogonal to the centroid a, both
    # exact in float32 (coordinates on the axes). The first one in batch order wins.
    d = 4
    memory = torch.zeros(2, d)
    memory[0, 0] = 1.0
    memory[1, 1] = 1.0
    x1 = torch.tensor([0.6, 0.0, 0.8, 0.0])
    x2 = torch.tensor([0.6, 0.0, -0.8, 0.0])
    x_easy = torch.tensor([1.0, 0.0, 0.0, 0.0])
    for order in ([x_easy, x1, x2], [x_easy, x2, x1]):
        inputs = torch.stack(order).to(device)
        targets = torch.zeros(3, dtype=torch.int64, device=device)
        out = memory.to(device).clone()
        pyreid.ops.cluster_memory_update_(out, inputs, targets, 0.5, "hard")
        expected = F.normalize(0.5 * memory[0] + 0.5 * order[1], dim=0)
        assert torch.allclose(out[0].cpu(), expected, atol=1e-6)
        assert torch.equal(out[1].cpu(), memory[1])


@pytest.mark.parametrize("device", DEVICES)
def test_hard_mode_ties_across_blocks_of_samples(device):
    # The CPU kernel takes a label's samples four at a time and the rest one
    # at a time; the exactly tied pair sits in different blocks (positions 2
    # and 8 of the label's nine samples), in either order, and the first wins.
    d = 20
    memory = torch.zeros(1, d)
    memory[0, 0] = 1.0
    x1, x2 = torch.zeros(d), torch.zeros(d)
    x1[0], x1[17] = 0.6, 0.8
    x2[0], x2[17] = 0.6, -0.8
    easy = memory[0].clone()  # similarity 1
    for first, second in ((x1, x2), (x2, x1)):
        rows = [easy] * 9
        rows[2], rows[8] = first, second
        out = memory.clone().to(device)
        targets = torch.zeros(9, dtype=torch.int64, device=device)
        pyreid.ops.cluster_memory_update_(out, torch.stack(rows).to(device), targets, 0.5, "hard")
        assert torch.allclose(out[0].cpu(), F.normalize(0.5 * memory[0] + 0.5 * first, dim=0), atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_cpu_result_is_the_same_with_one_or_more_threads(mode):
    # Labels run in parallel, each on one thread with a fixed order of sums:
    # the bits do not depend on the thread count.
    memory, inputs, targets = make_problem(256, 20, 67, seed=13)
    threads = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            outs.append(pyreid.ops.cluster_memory_update_(memory.clone(), inputs, targets, 0.2, mode))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(outs[0], out) for out in outs[1:])


def test_cpu_sse_and_avx_paths_give_the_same_bits(tmp_path):
    # The CPU kernel picks AVX row functions at run time where the CPU has
    # them (and F16C for float16 inputs); PYREID_CPU_NO_AVX=1 forces the SSE
    # ones. Both keep 16 partial sums in one order and convert exactly, so the
    # memories must be bit-identical.
    problems = {}
    for mode in MODES:
        for d in (5, 16, 67, 2048):
            for dtype in (torch.float32, torch.float16, torch.bfloat16):
                memory, inputs, targets = make_problem(70, 9, d, seed=d, dtype=dtype)
                problems[f"{mode}-{d}-{dtype}"] = (memory, inputs, targets, mode)
    torch.save(problems, tmp_path / "problems.pt")
    script = (
        "import sys, torch, pyreid\n"
        "problems = torch.load(sys.argv[1])\n"
        "out = {k: pyreid.ops.cluster_memory_update_(m.clone(), x, t, 0.2, mode) "
        "for k, (m, x, t, mode) in problems.items()}\n"
        "torch.save(out, sys.argv[2])\n"
    )
    env = {**os.environ, "PYREID_CPU_NO_AVX": "1", "PYTHONPATH": str(Path(pyreid.__file__).parent.parent)}
    args = [sys.executable, "-c", script, str(tmp_path / "problems.pt"), str(tmp_path / "sse.pt")]
    subprocess.run(args, env=env, check=True)
    sse = torch.load(tmp_path / "sse.pt")
    for key, (memory, inputs, targets, mode) in problems.items():
        here = pyreid.ops.cluster_memory_update_(memory.clone(), inputs, targets, 0.2, mode)
        assert torch.equal(here, sse[key]), key


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("labels", ["pk", "uniform"])
def test_matches_cluster_contrast_loops_in_float32(mode, labels):
    # The loops the benchmark times (Cluster-Contrast's published structure)
    # give the op's memory; PK batches as their sampler draws them.
    memory, inputs, targets = make_problem(64, 30, 96, seed=14)
    if labels == "pk":
        g = torch.Generator().manual_seed(15)
        targets = torch.randperm(30, generator=g)[:8].repeat_interleave(8)[torch.randperm(64, generator=g)]
    loop = cluster_contrast_momentum_loop if mode == "momentum" else cluster_contrast_hard_loop
    expected = loop(memory.clone(), inputs, targets, 0.2)
    assert relative_error(expected, reference(memory, inputs, targets, 0.2, mode)) < 1e-5
    pyreid.ops.cluster_memory_update_(memory, inputs, targets, 0.2, mode)
    assert relative_error(memory, expected) < 1e-5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", MODES)
def test_half_precision_inputs_accumulate_in_float32(device, dtype, mode):
    memory, inputs, targets = make_problem(100, 12, 64, seed=6, dtype=dtype, device=device)
    # The reference sees the same rounded inputs, so only float32 arithmetic differs.
    expected = reference(memory, inputs, targets, 0.2, mode)
    pyreid.ops.cluster_memory_update_(memory, inputs, targets, 0.2, mode)
    assert memory.dtype == torch.float32
    assert relative_error(memory, expected) < 1e-5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
def test_non_contiguous_inputs_targets_and_memory(device, mode):
    memory, inputs, targets = make_problem(50, 10, 24, seed=7, device=device)
    expected = reference(memory, inputs, targets, 0.2, mode)
    wide_inputs = torch.zeros(50, 48, device=device)
    wide_inputs[:, ::2] = inputs
    wide_targets = torch.zeros(100, dtype=torch.int64, device=device)
    wide_targets[::2] = targets
    memory_t = memory.t().contiguous().t()  # column-major K x D
    assert not memory_t.is_contiguous()
    pyreid.ops.cluster_memory_update_(memory_t, wide_inputs[:, ::2], wide_targets[::2], 0.2, mode)
    assert relative_error(memory_t, expected) < 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_updates_a_view_of_a_larger_memory_in_place(device):
    memory, inputs, targets = make_problem(30, 8, 16, seed=8, device=device)
    storage = torch.zeros(10, 16, device=device)
    storage[1:9] = memory
    expected = reference(memory, inputs, targets, 0.2, "momentum")
    pyreid.ops.cluster_memory_update_(storage[1:9], inputs, targets, 0.2)
    assert relative_error(storage[1:9], expected) < 1e-5
    assert (storage[0] == 0).all() and (storage[9] == 0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
def test_inputs_that_are_rows_of_the_memory_itself(device, mode):
    # The batch is a view of the memory: the op must read the rows as they
    # were when it was called, as the reference (given a copy) does.
    memory, _, _ = make_problem(0, 12, 16, seed=12, device=device)
    targets = torch.tensor([3, 4, 3, 0, 4, 4], device=device)
    expected = reference(memory, memory[2:8].clone(), targets, 0.5, mode)
    pyreid.ops.cluster_memory_update_(memory, memory[2:8], targets, 0.5, mode)
    assert relative_error(memory, expected) < 1e-5


@pytest.mark.parametrize("mode", MODES)
def test_opcheck(mode):
    memory, inputs, targets = make_problem(20, 5, 8, seed=9)
    torch.library.opcheck(torch.ops.pyreid.cluster_memory_update_.default, (memory, inputs, targets, 0.2, mode))
    empty = make_problem(0, 5, 8)
    torch.library.opcheck(torch.ops.pyreid.cluster_memory_update_.default, (*empty, 0.2, mode))


def test_fake_tensor_mode_does_not_touch_data():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        memory = torch.empty(5, 8)
        out = pyreid.ops.cluster_memory_update_(memory, torch.empty(3, 8), torch.zeros(3, dtype=torch.int64), 0.2)
        assert out.shape == (5, 8)


@pytest.mark.parametrize(
    "memory_shape,inputs_shape,targets_shape,match",
    [
        ((5,), (3, 4), (3,), "memory must be a 2-D tensor"),
        ((5, 4), (3,), (3,), "inputs must be a 2-D tensor"),
        ((5, 4), (3, 4), (3, 1), "targets must be a 2-D|targets must be a 1-D tensor"),
        ((5, 4), (3, 6), (3,), "inputs have 6 features per row but memory has 4"),
        ((5, 4), (3, 4), (2,), "inputs have 3 rows but targets has 2 labels"),
    ],
)
def test_shape_errors(memory_shape, inputs_shape, targets_shape, match):
    with pytest.raises(ValueError, match=match):
        pyreid.ops.cluster_memory_update_(
            torch.zeros(memory_shape), torch.zeros(inputs_shape), torch.zeros(targets_shape, dtype=torch.int64), 0.2
        )


def test_value_errors():
    memory, inputs, targets = make_problem(4, 3, 5)
    with pytest.raises(ValueError, match=r"targets\[2\] = 3 is out of range for a memory of 3 rows"):
        pyreid.ops.cluster_memory_update_(memory, inputs, torch.tensor([0, 1, 3, 2]), 0.2)
    with pytest.raises(ValueError, match=r"targets\[0\] = -1 is out of range"):
        pyreid.ops.cluster_memory_update_(memory, inputs, torch.tensor([-1, 1, 0, 2]), 0.2)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="momentum must be in \\[0, 1\\]"):
            pyreid.ops.cluster_memory_update_(memory, inputs, targets, bad)
    with pytest.raises(ValueError, match="unknown mode 'median'; expected 'momentum' or 'hard'"):
        pyreid.ops.cluster_memory_update_(memory, inputs, targets, 0.2, "median")


def test_dtype_errors():
    memory, inputs, targets = make_problem(4, 3, 5)
    with pytest.raises(TypeError, match="memory must be float32, got Double"):
        pyreid.ops.cluster_memory_update_(memory.double(), inputs, targets, 0.2)
    with pytest.raises(TypeError, match="inputs must be float32, float16 or bfloat16, got Double"):
        pyreid.ops.cluster_memory_update_(memory, inputs.double(), targets, 0.2)
    with pytest.raises(TypeError, match="targets must be int64, got Int"):
        pyreid.ops.cluster_memory_update_(memory, inputs, targets.int(), 0.2)


@cuda
def test_device_mix_error():
    memory, inputs, targets = make_problem(4, 3, 5)
    with pytest.raises(ValueError, match="memory is on cuda:0 but inputs is on cpu"):
        pyreid.ops.cluster_memory_update_(memory.cuda(), inputs, targets.cuda(), 0.2)
    with pytest.raises(ValueError, match="memory is on cuda:0 but targets is on cpu"):
        pyreid.ops.cluster_memory_update_(memory.cuda(), inputs.cuda(), targets, 0.2)


def test_device_mix_error_on_meta():
    # Without a GPU, a meta tensor stands in for the other device.
    memory, inputs, targets = make_problem(4, 3, 5)
    with pytest.raises(ValueError, match="memory is on cpu but inputs is on meta"):
        pyreid.ops.cluster_memory_update_(memory, inputs.to("meta"), targets, 0.2)


@cuda
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cpu_and_cuda_agree(mode, dtype):
    # Batch of 256 = 16 labels x 16 instances, shuffled, as Cluster-Contrast samples it.
    memory, inputs, _ = make_problem(256, 1000, 2048, seed=10, dtype=dtype)
    targets = torch.randperm(1000)[:16].repeat_interleave(16)[torch.randperm(256)]
    on_cpu = memory.clone()
    pyreid.ops.cluster_memory_update_(on_cpu, inputs, targets, 0.2, mode)
    on_cuda = memory.cuda()
    pyreid.ops.cluster_memory_update_(on_cuda, inputs.cuda(), targets.cuda(), 0.2, mode)
    assert relative_error(on_cuda, on_cpu) < 1e-5


@cuda
def test_cuda_update_does_not_sync_with_the_host():
    memory, inputs, targets = make_problem(256, 100, 128, seed=11, device="cuda")
    expected = reference(memory, inputs, targets, 0.2, "hard")
    torch.cuda.set_sync_debug_mode("error")  # any host sync raises
    try:
        pyreid.ops.cluster_memory_update_(memory, inputs, targets, 0.2, "hard")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert relative_error(memory, expected) < 1e-5
