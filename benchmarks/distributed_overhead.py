"""Training throughput of 1 process against 2 torchrun processes on the same global batch (CPU, gloo).

    .venv/bin/python benchmarks/distributed_overhead.py [--iters 30] [--batch-size 32] [--arch resnet18]

Runs ``pyreid train supervised`` on a small synthetic set three times with
the same flags and the same global batch (P x K images per step, split
across the ranks under torchrun): one process with every core, one process
with half of them, and ``torchrun --nproc-per-node 2`` with half the cores
per process (gloo all-reduce of the gradients, rank-aware PK sampler).
Prints each run's training seconds and images per second of the last epoch
(the first epoch warms the allocator and the loader up) and two ratios:
2 processes against 1 process with every core (what a user gains or loses
by launching with torchrun on this machine), and 2 processes against half
the time of 1 process with the same threads each (perfect scaling; the
excess is DDP's communication and the split batch). Data loading runs in
the training processes (``--workers 0``), so each process also decodes its
own share of the batch.

On a 2-core machine each process has one core, so the 2-process figure
includes no extra compute; on more cores give each process its share with
``--threads``. Too slow for repeated pytest-benchmark rounds, so it runs once
per configuration.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def _run(nproc, threads, root, out, args):
    flags = ["train", "supervised", "--data-root", root, "--arch", args.arch, "--height", "128", "--width", "64",
             "--epochs", "2", "--iters", str(args.iters), "--batch-size", str(args.batch_size), "--num-instances",
             "4", "--workers", "0", "--eval-step", "100", "--no-progress", "--no-plots", "--test-batch-size", "64",
             "--out", out, "--seed", "0"]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m",
               "pyreid", *flags]
    else:
        cmd = [sys.executable, "-m", "pyreid", *flags]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    start = time.perf_counter()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"run with {nproc} process(es) failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    with open(os.path.join(out, "metrics.json")) as f:
        history = json.load(f)["history"]
    last = [h for h in history if "train_seconds" in h][-1]
    return last["train_seconds"], last["images_per_second"], wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=30, help="iterations per epoch (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="global batch, P x K (default: %(default)s)")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads of the single process; each of the 2 processes gets half (default: all cores)")
    args = parser.parse_args()

    from pyreid.data import SynthConfig, generate

    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "synthetic")
        generate(root, SynthConfig(ids_train=24, ids_test=8, cameras=3, images_per_id=8))
        rows = []  # (processes, threads each, train seconds, images / s, wall seconds)
        half = max(1, args.threads // 2)
        for nproc, threads in ((1, args.threads), (1, half), (2, half)):
            seconds, ips, wall = _run(nproc, threads, root, os.path.join(tmp, f"run{nproc}x{threads}"), args)
            rows.append((nproc, threads, seconds, ips, wall))
    print(f"supervised {args.arch}, 128 x 64, global batch {args.batch_size}, {args.iters} iterations per epoch, "
          f"last of 2 epochs, {os.cpu_count()} cores")
    print(f"{'processes':>9} {'threads each':>12} {'train s':>8} {'img/s':>7} {'wall s':>7}")
    for nproc, threads, seconds, ips, wall in rows:
        print(f"{nproc:>9} {threads:>12} {seconds:>8.2f} {ips:>7.1f} {wall:>7.1f}")
    one_all, one_half, two = rows[0][2], rows[1][2], rows[2][2]
    print(f"2 processes / 1 process with all threads, training time: {two / one_all:.2f}x")
    # Perfect scaling of the same per-process work: 2 processes take half
    # the time of 1 process with the same threads each; the rest is DDP's.
    print(f"2 processes / (1 process with {half} thread(s) / 2), training time: {two / (one_half / 2):.2f}x "
          "(1.00x = no communication or split overhead)")


if __name__ == "__main__":
    main()
