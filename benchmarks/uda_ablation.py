"""The UDA ablation: which way of adapting a source model to an unlabelled target works, on one pair.

From the same source model and with the same budget (epochs x iterations), on a
source -> target pair (by default the demo's synthetic pair and source model,
``pyreid demo``):

1. source only: the source model itself, no adaptation;
2. target only: Cluster-Contrast on the target from the source model (what
   pyreid did before ``uda``: the source is forgotten after the first run);
3. ``uda`` with separate heads (the default);
4. ``uda --heads mixed``: one softmax over source classes + target clusters
   (SpCL / OpenUnReID);
5. ``uda --bn domain``: separate heads + domain-specific BatchNorm.

It prints one table: the target's mAP / rank-1 after the last epoch (not the
best epoch: choosing it would read the target's labels), the source's mAP
(forgetting), the pseudo labels' ARI against the hidden target identities at
the last epoch (source only: the source model's own clustering of the
target), and the wall time of each run. The runs go to ``--out`` (each in its
own folder; a finished one is reused) and the table to ``OUT/ablation.json``
and ``OUT/ablation.md``.

    python benchmarks/uda_ablation.py --source-root data/demo/source --target-root data/demo/target \\
        --weights runs/demo/source/best.pth --out runs/uda_ablation
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List

VARIANTS = ("source-only", "target-only", "uda-separate", "uda-mixed", "uda-domain-bn")
UDA_OPTIONS = {"uda-separate": {}, "uda-mixed": {"heads": "mixed"}, "uda-domain-bn": {"bn": "domain"}}


def _last(history: List[Dict[str, Any]], key: str):
    return next((h[key] for h in reversed(history) if key in h), None)


def _finished(out: str):
    path = os.path.join(out, "metrics.json")
    if os.path.exists(path):
        with open(path) as f:
            metrics = json.load(f)
        if str(metrics.get("status", "")).startswith("finished"):
            return metrics
    return None


def _train(algorithm: str, out: str, config: str, options: Dict[str, Any], **settings) -> Dict[str, Any]:
    from pyreid.training import train

    metrics = _finished(out)
    start = time.perf_counter()
    if metrics is None:
        train(algorithm, config=config, options=options, out=out, **settings)
        with open(os.path.join(out, "metrics.json")) as f:
            metrics = json.load(f)
        metrics["wall_seconds"] = time.perf_counter() - start
        with open(os.path.join(out, "wall_seconds.json"), "w") as f:
            json.dump({"wall_seconds": metrics["wall_seconds"]}, f)
    else:
        with open(os.path.join(out, "wall_seconds.json")) as f:
            metrics["wall_seconds"] = json.load(f)["wall_seconds"]
    return metrics


def _source_only(args) -> Dict[str, Any]:
    """The source model's scores on both test splits and its clustering of the target."""
    from pyreid.cluster import DBSCANClustering, PseudoLabeler
    from pyreid.data import build_dataset
    from pyreid.evaluation.sharded import extract_items
    from pyreid.training import resolve_config
    from pyreid.training.evaluate import evaluate_checkpoint, model_from_checkpoint

    out = os.path.join(args.out, "source-only")
    cached = os.path.join(out, "row.json")
    if os.path.exists(cached):  # it does not depend on the budget: a finished one is reused
        with open(cached) as f:
            return json.load(f)
    start = time.perf_counter()
    target = evaluate_checkpoint(args.weights, "synthetic", args.target_root, out=out, workers=args.workers,
                                 progress=False, device=args.device)
    source = evaluate_checkpoint(args.weights, "synthetic", args.source_root, out=os.path.join(out, "source"),
                                 workers=args.workers, progress=False, device=args.device)
    _, config, options = resolve_config("uda", config=args.config)
    model = model_from_checkpoint(args.weights)
    train = build_dataset("synthetic", args.target_root).train
    labeler = PseudoLabeler(DBSCANClustering(options.eps, options.min_samples, options.k1, options.k2))
    result = labeler(lambda: extract_items(model, train, height=config.height, width=config.width,
                                           num_workers=args.workers, progress=False)[0],
                     identities=[pid for _, pid, _ in train])
    row = {"mAP": target["mAP"], "rank1": target["rank1"], "source_mAP": source["mAP"],
           "ari": result.metrics.get("ari"), "num_clusters": result.num_clusters,
           "wall_seconds": time.perf_counter() - start}
    with open(cached, "w") as f:
        json.dump(row, f)
    return row


def run(args) -> List[Dict[str, Any]]:
    budget = dict(epochs=args.epochs, iters=args.iters, eval_step=args.epochs, milestones=args.milestones,
                  seed=args.seed, workers=args.workers,
                  progress=False, plots=False, device=args.device, weights=args.weights)
    rows = []
    for variant in args.variants:
        out = os.path.join(args.out, variant)
        print(f"== {variant} -> {out}", flush=True)
        if variant == "source-only":
            row = _source_only(args)
        elif variant == "target-only":
            metrics = _train("cluster-contrast", out, "cluster_contrast_synthetic_cpu", {},
                             data_root=args.target_root, **budget)
            from pyreid.training.evaluate import evaluate_checkpoint

            source = evaluate_checkpoint(os.path.join(out, "checkpoint.pth"), "synthetic", args.source_root,
                                         out=os.path.join(out, "source"), workers=args.workers, progress=False,
                                         device=args.device)
            history = metrics["history"]
            row = {"mAP": _last(history, "mAP"), "rank1": _last(history, "rank1"), "source_mAP": source["mAP"],
                   "ari": _last(history, "ari"), "wall_seconds": metrics["wall_seconds"]}
        else:
            metrics = _train("uda", out, args.config, UDA_OPTIONS[variant], source_root=args.source_root,
                             target_root=args.target_root, **budget)
            history = metrics["history"]
            row = {"mAP": _last(history, "mAP"), "rank1": _last(history, "rank1"),
                   "source_mAP": _last(history, "source_mAP"), "ari": _last(history, "ari"),
                   "wall_seconds": metrics["wall_seconds"]}
        row["variant"] = variant
        rows.append(row)
        print(f"   {row}", flush=True)
    return rows


def table(rows: List[Dict[str, Any]]) -> str:
    def pct(v):
        return "—" if v is None else f"{100 * v:.1f}%"

    lines = ["| variant | target mAP | target rank-1 | source mAP (forgetting) | ARI, last epoch | wall time |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        ari = "—" if r.get("ari") is None else f"{r['ari']:.3f}"
        lines.append(f"| {r['variant']} | {pct(r['mAP'])} | {pct(r['rank1'])} | {pct(r['source_mAP'])} | {ari} | "
                     f"{r['wall_seconds']:.0f} s |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source-root", default="data/demo/source")
    p.add_argument("--target-root", default="data/demo/target")
    p.add_argument("--weights", default="runs/demo/source/best.pth", help="the source model every variant starts from")
    p.add_argument("--out", default="runs/uda_ablation")
    p.add_argument("--config", default="uda_synthetic_cpu", help="the uda config the uda variants start from")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--milestones", type=int, nargs="+", default=[3], help="every run's x0.1 step epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = p.parse_args(argv)
    for path in (args.source_root, args.target_root, args.weights):
        if not os.path.exists(path):
            p.error(f"{path} does not exist (`pyreid demo` writes the demo pair and source model)")
    os.makedirs(args.out, exist_ok=True)
    rows = run(args)
    text = table(rows)
    print(text)
    with open(os.path.join(args.out, "ablation.json"), "w") as f:
        json.dump({"settings": vars(args), "rows": rows}, f, indent=2)
    with open(os.path.join(args.out, "ablation.md"), "w") as f:
        f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
