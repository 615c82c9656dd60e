"""``pyreid demo`` (``make demo``): unsupervised domain adaptation on the synthetic pedestrians.

1. Writes (once; later runs reuse them) a labelled synthetic **source** set and
   an unlabelled synthetic **target** set: other identities, other cameras,
   another seed.
2. Trains a source model with the supervised baseline on the source set.
3. Adapts it to the target with Cluster-Contrast: every epoch the target's
   training images are clustered into pseudo identities with pyreid's kernels
   (k-reciprocal Jaccard graph + DBSCAN); no target label is used.
4. Prints the target's mAP / rank-1 before and after adaptation, the pseudo
   labels' agreement with the (hidden) true identities per epoch, and where
   the runs' plots are.

GPU when present, else CPU. The CPU settings are sized for a few minutes on
two cores; ``--quick`` is a smaller smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from typing import Any, Dict, List

__all__ = ["main", "DEMO_SETS"]

# Source and target differ in identities, cameras and seed: the camera styles of the
# target (colour casts, backgrounds, light) are ones the source model never saw.
DEMO_SETS = {
    "source": dict(ids_train=100, ids_test=40, cameras=6, images_per_id=10, seed=101),
    "target": dict(ids_train=60, ids_test=40, cameras=5, images_per_id=10, seed=202),
}
QUICK_SETS = {
    "source": dict(ids_train=12, ids_test=8, cameras=3, images_per_id=6, seed=101),
    "target": dict(ids_train=10, ids_test=8, cameras=3, images_per_id=6, seed=202),
}

# Run settings on top of the shipped CPU presets (what the demo's time budget allows).
SOURCE_RUN = dict(epochs=6, eval_step=6, milestones=[5], warmup_epochs=1)
TARGET_RUN = dict(epochs=4, iters=20, eval_step=1)
QUICK_RUN = dict(epochs=1, iters=2, batch_size=8, num_instances=2, eval_step=1, test_batch_size=32)


def _ensure_dataset(folder: str, spec: Dict[str, Any]) -> str:
    """Generate the synthetic set in ``folder`` unless the same one is already there."""
    from pyreid.data.synthetic import MARKER_FILE, SynthConfig, generate

    config = SynthConfig(**spec)
    marker = os.path.join(folder, MARKER_FILE)
    if os.path.exists(marker):
        with open(marker) as f:
            if json.load(f).get("config") == asdict(config):
                return "cached"
    generate(folder, config, overwrite=True, progress=True)
    return "written"


def _finished(out: str, expected: Dict[str, Any]) -> bool:
    """Whether ``out`` holds a finished run whose config has the ``expected`` values."""
    path = os.path.join(out, "metrics.json")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        metrics = json.load(f)
    config = metrics.get("config", {})
    return metrics.get("status") == "finished" and all(config.get(k) == v for k, v in expected.items())


def _run(algorithm: str, preset: str, out: str, settings: Dict[str, Any]) -> Dict[str, Any]:
    from pyreid.training import train

    expected = {k: v for k, v in settings.items() if k not in ("progress",)}
    if _finished(out, expected):
        print(f"  reusing the finished run in {out}")
        with open(os.path.join(out, "metrics.json")) as f:
            return json.load(f)
    if os.path.exists(out):  # the demo's own earlier, unfinished or different run
        shutil.rmtree(out)
    train(algorithm, config=preset, out=out, **settings)
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)


def _evaluations(history: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [h for h in history if "mAP" in h]


def _pseudo_label_table(history: List[Dict[str, Any]]) -> List[str]:
    rows = [f"  {'epoch':>5} {'clusters':>8} {'outliers':>8} {'largest':>7} {'ARI':>6} {'NMI':>6} {'prec.':>6} "
            f"{'recall':>6} {'mAP':>6} {'rank-1':>6} {'pseudo-label s':>14}"]
    for h in history:
        if "num_clusters" not in h:
            continue
        score = (f"{100 * h['mAP']:5.1f}% {100 * h['rank1']:5.1f}%" if "mAP" in h else f"{'':>6} {'':>6}")
        rows.append(f"  {h['epoch']:>5} {h['num_clusters']:>8} {h['num_outliers']:>8} {h['largest_cluster']:>7} "
                    f"{h.get('ari', float('nan')):6.3f} {h.get('nmi', float('nan')):6.3f} "
                    f"{h.get('precision', float('nan')):6.3f} {h.get('recall', float('nan')):6.3f} {score} "
                    f"{h['pseudo_label_seconds']:14.2f}")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pyreid demo", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="data/demo", help="where the synthetic sets are written and cached "
                        "(default: %(default)s)")
    parser.add_argument("--out", default="runs/demo", help="output folder of the two runs (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (default: auto)")
    parser.add_argument("--workers", type=int, default=2, help="data loader workers (default: 2)")
    parser.add_argument("--quick", action="store_true", help="tiny sets and runs: a smoke test in seconds")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    import logging

    from pyreid.training.engine import resolve_device

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    start = time.perf_counter()
    sets = QUICK_SETS if args.quick else DEMO_SETS
    device = resolve_device(args.device)
    common = dict(device=args.device, workers=args.workers, progress=not args.no_progress)
    source_dir, target_dir = (os.path.join(args.data, "quick" if args.quick else "", name) for name in sets)
    print(f"pyreid demo: unsupervised domain adaptation on synthetic pedestrians ({device})\n")
    print("1. data sets")
    for name, folder in (("source", source_dir), ("target", target_dir)):
        state = _ensure_dataset(folder, sets[name])
        spec = sets[name]
        print(f"  {name}: {folder} ({state}; {spec['ids_train']} training identities x {spec['images_per_id']} "
              f"images, {spec['cameras']} cameras, seed {spec['seed']})")

    source_out, target_out = os.path.join(args.out, "source"), os.path.join(args.out, "target")
    source_settings = {**(QUICK_RUN if args.quick else SOURCE_RUN), **common, "data_root": source_dir}
    print("\n2. source model: supervised baseline on the labelled source set")
    source = _run("supervised", "supervised_synthetic_cpu", source_out, source_settings)
    best = os.path.join(source_out, "best.pth")

    print("\n3. adaptation: Cluster-Contrast on the unlabelled target set, from the source model")
    target_settings = {**(QUICK_RUN if args.quick else TARGET_RUN), **common, "data_root": target_dir,
                       "weights": best}
    target = _run("cluster-contrast", "cluster_contrast_synthetic_cpu", target_out, target_settings)

    evals = _evaluations(target["history"])
    before, after = evals[0], evals[-1]
    source_final = _evaluations(source["history"])[-1]
    print("\n4. results")
    print(f"  source model on the source test set:   mAP {100 * source_final['mAP']:5.1f}%  "
          f"rank-1 {100 * source_final['rank1']:5.1f}%")
    print(f"  source model on the target (before):    mAP {100 * before['mAP']:5.1f}%  "
          f"rank-1 {100 * before['rank1']:5.1f}%")
    print(f"  after adaptation (epoch {after['epoch']}, no labels):  mAP {100 * after['mAP']:5.1f}%  "
          f"rank-1 {100 * after['rank1']:5.1f}%   ({100 * (after['mAP'] - before['mAP']):+.1f} mAP)")
    print("\n  pseudo labels per epoch, against the target's hidden identities:")
    print("\n".join(_pseudo_label_table(target["history"])))
    print("\n  plots: " + ", ".join(os.path.join(target_out, p) for p in ("curves.png", "cmc.png",
                                                                          "ranked_lists.png", "embedding.png")))
    print(f"  source run: {source_out}   target run: {target_out}")
    print(f"\ndemo done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
