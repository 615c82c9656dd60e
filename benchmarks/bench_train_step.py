"""What limits a training iteration: the model's step or the data loader?

    python -m pytest benchmarks/bench_train_step.py --benchmark-only --benchmark-columns=median,iqr,rounds

Two groups at 256 x 128, each reporting images per second in ``extra_info``:

* ``train_step``: one iteration of the supervised baseline as the engine runs
  it (forward in train mode, identity + batch-hard triplet loss, backward,
  Adam step) on random images of a P x K batch. On CUDA with and without
  bfloat16 autocast and channels-last; CUDA times are CUDA-event medians.
* ``train_loader``: the PK loader alone (JPEG decode, resize, flip, pad-crop,
  random erasing, collation) over a synthetic image tree, with 0 and 2 workers.

Training runs at the smaller of the two rates.
"""

import os
import shutil
import tempfile

import pytest
import torch

from pyreid.data import SynthConfig, build_dataset, build_train_loader, generate
from pyreid.losses import CrossEntropyLoss, TripletLoss
from pyreid.models import build_model

HAS_CUDA = torch.cuda.is_available()

# CPU: small batches so a round stays around seconds on 2 cores.
STEP_CASES = [
    pytest.param("cpu", "resnet18", 16, False, False, id="cpu-resnet18-b16"),
    pytest.param("cpu", "resnet50", 16, False, False, id="cpu-resnet50-b16"),
]
for amp in (False, True):
    for channels_last in (False, True):
        STEP_CASES.append(pytest.param("cuda", "resnet50", 64, amp, channels_last,
                                       id=f"cuda-resnet50-b64-{'bf16' if amp else 'fp32'}"
                                          f"{'-channels_last' if channels_last else ''}",
                                       marks=pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")))


def _step_fn(device, arch, batch, amp, channels_last):
    torch.manual_seed(0)
    num_classes = 751
    model = build_model(arch, last_stride=1, num_classes=num_classes).to(device).train()
    images = torch.randn(batch, 3, 256, 128, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.arange(batch // 4, device=device).repeat_interleave(4)
    optimizer = torch.optim.Adam(model.parameters(), lr=3.5e-4)
    id_loss, triplet_loss = CrossEntropyLoss(0.1, 0.1), TripletLoss(0.3)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = model(images)
            loss = id_loss(out.logits, labels) + triplet_loss(out.features, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


@pytest.mark.parametrize("device,arch,batch,amp,channels_last", STEP_CASES)
def test_train_step(benchmark, device, arch, batch, amp, channels_last):
    benchmark.group = "train_step"
    step = _step_fn(device, arch, batch, amp, channels_last)
    assert torch.isfinite(step())  # warm-up, and a check that the step computes a loss
    if device == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []

        def timed():
            start.record()
            step()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)

        benchmark.pedantic(timed, rounds=20, warmup_rounds=3, iterations=1)
        seconds = sorted(times)[len(times) // 2]
        benchmark.extra_info["cuda_event_median_ms"] = round(seconds * 1e3, 2)
        benchmark.extra_info["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    else:
        benchmark.pedantic(step, rounds=3, warmup_rounds=0, iterations=1)
        seconds = benchmark.stats.stats.median
    benchmark.extra_info["images_per_s"] = round(batch / seconds, 1)


@pytest.fixture(scope="module")
def image_tree():
    root = tempfile.mkdtemp()
    generate(root, SynthConfig(ids_train=40, ids_test=2, images_per_id=8, height=256, width=128))
    yield build_dataset("synthetic", root)
    shutil.rmtree(root)


@pytest.mark.parametrize("workers", [0, 2])
def test_train_loader(benchmark, image_tree, workers):
    benchmark.group = "train_loader"
    batch, iters = 32, 8
    loader = build_train_loader(image_tree.train, batch_size=batch, num_instances=4, iters=iters, height=256,
                                width=128, num_workers=workers, seed=0)

    def one_epoch():
        n = 0
        for images, *_ in loader:
            n += images.shape[0]
        return n

    assert one_epoch() == batch * iters  # warm-up (starts the persistent workers) and a check
    benchmark.pedantic(one_epoch, rounds=3, iterations=1)
    benchmark.extra_info["images_per_s"] = round(batch * iters / benchmark.stats.stats.median, 1)
    benchmark.extra_info["cpu_cores"] = os.cpu_count()
