"""Multi-process training on torch.distributed (gloo, 2 CPU processes): sharded extraction,
BatchNorm groups against real processes, torchrun runs, resume across process counts, failures.
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from pyreid.data import SynthConfig, build_dataset, generate
from pyreid.distributed import DistInfo
from pyreid.evaluation.sharded import extract_items
from pyreid.models import build_model
from pyreid.models.batch_norm_groups import GroupedBatchNorm2d, convert_bn_groups
from pyreid.training import load_checkpoint


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init(rank, world, port):
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    return dist


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate(str(root), SynthConfig(ids_train=8, ids_test=6, cameras=3, images_per_id=6))
    return str(root)


def _extract_worker(rank, world, port, root, out_dir):
    dist = _init(rank, world, port)
    try:
        torch.manual_seed(0)
        model = build_model("resnet18").eval()
        items = build_dataset("synthetic", root).train
        feats, pids, cams = extract_items(model, items, height=128, width=64, batch_size=7, num_workers=0,
                                          progress=False, dist=DistInfo(rank, world))
        torch.save((feats, pids, cams), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_sharded_extraction_equals_single_process_row_for_row(data_root, tmp_path):
    mp.spawn(_extract_worker, args=(2, _free_port(), data_root, str(tmp_path)), nprocs=2, join=True)
    torch.set_num_threads(1)  # the same kernels as the workers
    torch.manual_seed(0)
    model = build_model("resnet18").eval()
    items = build_dataset("synthetic", data_root).train
    single = extract_items(model, items, height=128, width=64, batch_size=7, num_workers=0, progress=False)
    torch.set_num_threads(os.cpu_count() or 1)
    for rank in range(2):
        sharded = torch.load(tmp_path / f"rank{rank}.pt")
        for a, b in zip(single, sharded):
            assert torch.equal(a, b)
    assert [pid for _, pid, _ in items] == single[1].tolist()


def _small_net():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.BatchNorm1d(4), nn.Linear(4, 3))


def _bn_worker(rank, world, port, images, weights, out_dir):
    dist = _init(rank, world, port)
    try:
        # float64 on both sides: the comparison is of the grouping, not of float32 summation orders.
        net = nn.parallel.DistributedDataParallel(_small_net().double())
        share = images.shape[0] // world
        out = net(images[rank * share:(rank + 1) * share])
        (out * weights[rank * share:(rank + 1) * share]).sum().backward()  # DDP averages the gradients
        torch.save({"out": out.detach(), "grads": [p.grad for p in net.module.parameters()],
                    "buffers": [b.clone() for b in net.module.buffers()]}, os.path.join(out_dir, f"bn{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_bn_groups_equal_one_slice_per_process(tmp_path):
    """--bn-groups G in one process = G processes of one slice each: outputs, gradients, running statistics."""
    groups = 2
    g = torch.Generator().manual_seed(2)
    images = torch.randn(8, 3, 6, 6, generator=g, dtype=torch.float64)
    weights = torch.randn(8, 3, generator=g, dtype=torch.float64)
    mp.spawn(_bn_worker, args=(groups, _free_port(), images, weights, str(tmp_path)), nprocs=groups, join=True)
    net = convert_bn_groups(_small_net().double(), groups)
    assert isinstance(net[1], GroupedBatchNorm2d) and net[1].groups == groups
    out = net(images)
    ((out * weights).sum() / groups).backward()  # the mean over processes of each one's loss
    ranks = [torch.load(tmp_path / f"bn{r}.pt") for r in range(groups)]
    torch.testing.assert_close(out.detach(), torch.cat([r["out"] for r in ranks]), rtol=1e-5, atol=1e-6)
    for mine, theirs in zip([p.grad for p in net.parameters()], ranks[0]["grads"]):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)  # gradients are O(1) here
    # Running statistics follow the first slice, as rank 0's do (DDP broadcasts them from rank 0).
    for mine, theirs in zip(net.buffers(), ranks[0]["buffers"]):
        torch.testing.assert_close(mine, theirs)
    # And they are not those of the whole batch: the grouping changes something.
    whole = _small_net().double()
    whole(images)
    assert not torch.allclose(whole[1].running_var, net[1].running_var)


def test_bn_groups_keep_names_frozen_shifts_and_eval_mode():
    model = build_model("resnet18", num_classes=5)
    before = model.state_dict()
    convert_bn_groups(model, 4)
    assert model.state_dict().keys() == before.keys()
    assert not model.neck.bias.requires_grad  # the BN neck's frozen shift stays frozen
    model.eval()
    x = torch.randn(3, 3, 64, 32)  # eval mode: any batch size, plain BatchNorm
    reference = build_model("resnet18", num_classes=5)
    reference.load_state_dict(before)
    torch.testing.assert_close(model(x), reference.eval()(x))
    model.train()
    with pytest.raises(ValueError, match="batch of 6 does not split into 4 equal slices"):
        model(torch.randn(6, 3, 64, 32))


def _torchrun(nproc, *args, timeout=600):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m",
           "pyreid", *args] if nproc > 1 else [sys.executable, "-m", "pyreid", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _flags(root, out, epochs=2, **extra):
    flags = ["--data-root", root, "--arch", "resnet18", "--height", "128", "--width", "64", "--epochs", str(epochs),
             "--iters", "2", "--batch-size", "8", "--num-instances", "2", "--workers", "0", "--eval-step", "1",
             "--no-progress", "--no-plots", "--out", str(out), "--test-batch-size", "16"]
    for key, value in extra.items():
        flags += [f"--{key.replace('_', '-')}", str(value)]
    return flags


def test_two_process_runs_check_ranks_and_write_one_set_of_outputs(data_root, tmp_path):
    source = tmp_path / "sup"
    result = _torchrun(2, "train", "supervised", *_flags(data_root, source), "--check-ranks")
    assert result.returncode == 0, result.stdout + result.stderr
    log = (source / "train.log").read_text()
    assert log.count("epoch 0: mAP") == 1 and log.count("epoch 2/2: loss") == 1  # rank 0 alone writes
    assert sorted(p.name for p in source.iterdir()) == ["best.pth", "checkpoint.pth", "metrics.json", "train.log"]
    history = json.loads((source / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2]
    # Cluster-Contrast: every rank checks after every step that it holds the same labels, memory and weights.
    cc = tmp_path / "cc"
    result = _torchrun(2, "train", "cluster-contrast", *_flags(data_root, cc), "--check-ranks", "--weights",
                       str(source / "best.pth"), "--eps", "0.7", "--k1", "10", "--k2", "3", "--min-samples", "2",
                       "--pooling", "avg")
    assert result.returncode == 0, result.stdout + result.stderr
    history = json.loads((cc / "metrics.json").read_text())["history"]
    assert all("num_clusters" in h for h in history[1:])


@pytest.mark.parametrize("first,second", [(2, 1), (1, 2)])
def test_resume_with_another_number_of_processes(data_root, tmp_path, first, second):
    out = tmp_path / "run"
    result = _torchrun(first, "train", "supervised", *_flags(data_root, out, epochs=1))
    assert result.returncode == 0, result.stdout + result.stderr
    result = _torchrun(second, "train", "supervised", "--out", str(out), "--resume", "--epochs", "2",
                       "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    ckpt = load_checkpoint(str(out / "checkpoint.pth"))
    assert ckpt["epoch"] == 2 and [h["epoch"] for h in ckpt["history"]] == [0, 1, 2]
    assert "resumed supervised from epoch 1" in (out / "train.log").read_text()


def test_a_failure_on_one_rank_stops_every_rank(data_root, tmp_path):
    """A broken image that only rank 1 reads (in the class-mean extraction): skipped by default (named in
    train.log; its rank decides alone, the gathered rows tell the other), and with --on-bad-image fail the run ends with the error on every rank."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    items = build_dataset("synthetic", str(root)).train
    victim = items[16][0]  # batch 1 of 8 (test batch size) goes to rank 1
    with open(victim, "wb") as f:
        f.write(b"not a jpeg")
    result = _torchrun(2, "train", "supervised", *_flags(str(root), tmp_path / "skip", test_batch_size=8),
                       timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    log = (tmp_path / "skip" / "train.log").read_text()
    assert "images cannot be read and get zero features" in log and victim in log
    result = _torchrun(2, "train", "supervised", *_flags(str(root), tmp_path / "run", test_batch_size=8,
                                                         on_bad_image="fail"), timeout=300)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "cannot read image" in output and os.path.basename(victim) in output
