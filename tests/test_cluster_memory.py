import os
import socket

import pytest
import torch
import torch.nn.functional as F
from common import DEVICES, relative_error

import pyreid
import pyreid.compat
from pyreid.losses.cluster_memory import update_memory_
from references.cluster_memory import cluster_contrast_memory_loss, cluster_memory_update_reference


def make_batch(b, k, d, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    centroids = torch.randn(k, d, generator=g)
    inputs = torch.randn(b, d, generator=g)
    targets = torch.randint(0, k, (b,), generator=g)
    return centroids.to(device), inputs.to(device), targets.to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["momentum", "hard"])
@pytest.mark.parametrize("b", [1, 7, 64])
def test_loss_and_gradient_match_plain_autograd_then_memory_is_updated(device, mode, b):
    centroids, x, targets = make_batch(b, 12, 16, seed=b, device=device)
    memory = pyreid.losses.ClusterMemory.from_centroids(centroids, temp=0.05, momentum=0.2, mode=mode)
    before = memory.features.clone()
    assert torch.allclose(before.norm(dim=1), torch.ones(12, device=device))

    # The same formula with plain autograd and a frozen copy of the memory.
    x_ref = x.clone().requires_grad_()
    loss_ref = F.cross_entropy(F.normalize(x_ref, dim=1) @ before.t() / 0.05, targets)
    loss_ref.backward()

    x_op = x.clone().requires_grad_()
    loss = memory(x_op, targets)
    assert torch.allclose(loss, loss_ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(memory.features, before), "forward must not touch the memory"
    loss.backward()
    assert relative_error(x_op.grad, x_ref.grad) < 1e-5

    expected = cluster_memory_update_reference(
        before.double().cpu(), F.normalize(x, dim=1).double().cpu(), targets.cpu(), 0.2, mode
    )
    assert relative_error(memory.features, expected) < 1e-5


def test_float64_inputs_are_accepted_and_integer_memory_refused():
    centroids, x, targets = make_batch(5, 4, 3, seed=1)
    memory = pyreid.losses.ClusterMemory.from_centroids(centroids)
    x64 = x.double().requires_grad_()
    memory(x64, targets).backward()
    assert x64.grad.dtype == torch.float64 and memory.features.dtype == torch.float32
    memory.features = memory.features.long()
    with pytest.raises(TypeError, match="ClusterMemory: features must be float16, bfloat16, float32 or float64"):
        memory(x.double().requires_grad_(), targets)


@pytest.mark.parametrize("use_hard", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_compat_cluster_memory_trains_in_the_features_dtype(use_hard, dtype):
    # Cluster-Contrast's module trains with whatever dtype the script gives
    # its features (mm needs the inputs in it too). A few steps against the
    # float64 published CM / CM_Hard fed the same (rounded) inputs: loss,
    # input gradient, memory. float64: equal to rounding. Half: at most twice
    # the error of the published module run in that dtype (STYLE.md's rule),
    # or a few units of rounding where that error happens to be tiny.
    g = torch.Generator().manual_seed(7)
    centroids = F.normalize(torch.randn(9, 16, generator=g), dim=1).to(dtype)
    memory = pyreid.compat.ClusterMemory(16, 9, temp=0.05, momentum=0.2, use_hard=use_hard)
    memory.features = centroids.clone()
    exact, same_precision = centroids.double(), centroids.clone()
    eps = torch.finfo(dtype).eps
    for step in range(4):
        x = torch.randn(24, 16, generator=g).to(dtype).requires_grad_()
        targets = torch.cat([torch.arange(9), torch.randint(0, 9, (15,), generator=g)])
        loss = memory(x, targets)
        loss.backward()
        assert memory.features.dtype == dtype and x.grad.dtype == dtype and loss.dtype == dtype
        runs = []
        for features in (exact, same_precision):
            x_ref = x.detach().to(features.dtype).requires_grad_()
            loss_ref = cluster_contrast_memory_loss(features, x_ref, targets, 0.05, 0.2, use_hard)
            loss_ref.backward()
            runs.append((loss_ref.detach(), x_ref.grad))
        (loss_64, grad_64), (loss_same, grad_same) = runs
        errors = (abs(loss.item() - loss_64.item()) / max(1.0, abs(loss_64.item())), relative_error(x.grad, grad_64),
                  relative_error(memory.features, exact))
        if dtype == torch.float64:
            assert max(errors) < 1e-12, step
            continue
        published = (abs(loss_same.item() - loss_64.item()) / max(1.0, abs(loss_64.item())),
                     relative_error(grad_same, grad_64), relative_error(same_precision, exact))
        for ours, theirs in zip(errors, published):
            assert ours <= max(2 * theirs, 4 * eps), (step, errors, published)


def test_float64_memory_update_equals_the_fused_op():
    # The float64 path (torch, vectorised over labels) and the float32 op
    # agree on the recursion: same rows, many samples per label, ties in "hard".
    centroids, x, targets = make_batch(64, 5, 8, seed=9)
    x[10] = x[3]  # an exact tie for "hard" if both are a label's minimum
    targets[10] = targets[3]
    for mode in ("momentum", "hard"):
        memory = F.normalize(centroids, dim=1)
        expected = cluster_memory_update_reference(memory.double(), F.normalize(x, dim=1).double(), targets, 0.3, mode)
        out = update_memory_(memory.double(), F.normalize(x, dim=1), targets, 0.3, mode)
        assert out.dtype == torch.float64 and relative_error(out, expected) < 1e-14
        fused = pyreid.ops.cluster_memory_update_(memory.clone(), F.normalize(x, dim=1), targets, 0.3, mode)
        assert relative_error(fused, expected) < 1e-5


def test_input_gradient_uses_the_memory_before_the_update():
    centroids, x, targets = make_batch(32, 3, 8, seed=2)
    memory = pyreid.losses.ClusterMemory.from_centroids(centroids, momentum=0.0)
    before = memory.features.clone()
    x = x.requires_grad_()
    memory(x, targets).backward()
    assert not torch.allclose(memory.features, before)  # momentum 0 moved every present row
    x_ref = x.detach().clone().requires_grad_()
    F.cross_entropy(F.normalize(x_ref, dim=1) @ before.t() / 0.05, targets).backward()
    assert relative_error(x.grad, x_ref.grad) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    centroids, x, targets = make_batch(40, 10, 32, seed=3)
    memory = pyreid.losses.ClusterMemory.from_centroids(centroids)
    before = memory.features.clone()
    x = x.to(dtype).requires_grad_()
    memory(x, targets).backward()
    assert x.grad.dtype == dtype and memory.features.dtype == torch.float32
    normalised = F.normalize(x.detach(), dim=1)
    expected = cluster_memory_update_reference(before.double(), normalised.double(), targets, 0.2, "momentum")
    assert relative_error(memory.features, expected) < 1e-5


def test_load_centroids_normalises_and_resizes():
    memory = pyreid.losses.ClusterMemory(8, 4)
    assert memory.features.shape == (4, 8) and (memory.features == 0).all()
    memory.load_centroids_(3 * torch.randn(6, 8))
    assert memory.features.shape == (6, 8) and memory.num_samples == 6
    assert torch.allclose(memory.features.norm(dim=1), torch.ones(6))
    with pytest.raises(ValueError, match="centroids must be K x 8"):
        memory.load_centroids_(torch.randn(6, 5))


def test_constructor_errors():
    with pytest.raises(ValueError, match="unknown mode 'median'"):
        pyreid.losses.ClusterMemory(8, 4, mode="median")
    with pytest.raises(ValueError, match="momentum must be in \\[0, 1\\]"):
        pyreid.losses.ClusterMemory(8, 4, momentum=2.0)
    with pytest.raises(ValueError, match="temp must be positive"):
        pyreid.losses.ClusterMemory(8, 4, temp=0.0)


def test_forward_errors():
    # The update op's error types, raised in forward rather than in backward.
    memory = pyreid.losses.ClusterMemory.from_centroids(torch.randn(4, 8))
    x = torch.randn(6, 8)
    with pytest.raises(TypeError, match="ClusterMemory: targets must be int64, got torch.int32"):
        memory(x, torch.zeros(6, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"inputs must be B x 8 and targets B, got \(6, 5\) and \(6,\)"):
        memory(torch.randn(6, 5), torch.zeros(6, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"inputs must be B x 8 and targets B, got \(6, 8\) and \(5,\)"):
        memory(x, torch.zeros(5, dtype=torch.int64))
    with pytest.raises(ValueError, match="inputs must be a 2-D tensor, got 1-D"):
        memory(x[0], torch.zeros(1, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"targets must be in \[0, 4\), got \[0, 4\]"):
        memory(x, torch.tensor([0, 1, 2, 3, 4, 0]))
    with pytest.raises(ValueError, match="features is on cpu but inputs is on meta"):
        memory(x.to("meta"), torch.zeros(6, dtype=torch.int64))


@pytest.mark.parametrize("use_hard", [False, True])
def test_compat_cluster_memory_behaves_like_cluster_contrast(use_hard):
    centroids, x, targets = make_batch(48, 9, 16, seed=4)
    memory = pyreid.compat.ClusterMemory(16, 9, temp=0.05, momentum=0.2, use_hard=use_hard)
    assert memory.use_hard is use_hard and memory.features.shape == (9, 16)
    # Cluster-Contrast's training script assigns the centroids to .features.
    memory.features = F.normalize(centroids, dim=1)
    before = memory.features.clone()
    x = x.requires_grad_()
    loss = memory(x, targets)
    assert loss.dim() == 0
    loss.backward()
    mode = "hard" if use_hard else "momentum"
    expected = cluster_memory_update_reference(
        before.double(), F.normalize(x.detach(), dim=1).double(), targets, 0.2, mode
    )
    assert relative_error(memory.features, expected) < 1e-5
    assert "features" in dict(memory.named_buffers())


# ---- distributed: two CPU processes on gloo -------------------------------


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed_worker(rank, world, port, centroids, inputs, targets, sizes, out_dir):
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        start = sum(sizes[:rank])
        for mode in ("momentum", "hard"):
            x = inputs[start : start + sizes[rank]].clone().requires_grad_()
            memory = pyreid.losses.ClusterMemory.from_centroids(centroids, momentum=0.2, mode=mode)
            memory(x, targets[start : start + sizes[rank]]).backward()
            torch.save(memory.features, os.path.join(out_dir, f"{mode}_rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_distributed_memories_stay_identical_and_see_every_rank(tmp_path):
    # Two processes on gloo (one spawn for both modes: starting processes is the slow part).
    import torch.multiprocessing as mp

    sizes = [24, 17]  # unequal batches on purpose
    centroids, inputs, targets = make_batch(sum(sizes), 6, 8, seed=5)
    mp.spawn(
        _distributed_worker,
        args=(2, _free_port(), centroids, inputs, targets, sizes, str(tmp_path)),
        nprocs=2,
        join=True,
    )
    for mode in ("momentum", "hard"):
        single = pyreid.losses.ClusterMemory.from_centroids(centroids, momentum=0.2, mode=mode)
        single(inputs.clone().requires_grad_(), targets).backward()  # the concatenated batch in one process
        rank0 = torch.load(tmp_path / f"{mode}_rank0.pt")
        rank1 = torch.load(tmp_path / f"{mode}_rank1.pt")
        assert torch.equal(rank0, rank1)
        assert torch.allclose(rank0, single.features, atol=1e-6)
        assert not torch.allclose(rank0, F.normalize(centroids, dim=1), atol=1e-3)
