"""``pyreid eval``: score a saved model (``checkpoint.pth`` or ``best.pth``) on a query/gallery split."""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, Optional

import torch

from pyreid.data.datasets import build_dataset
from pyreid.evaluation.protocol import SCORE_KEYS, evaluate_split, plot_split
from pyreid.models.model import build_model
from pyreid.training.checkpoint import CheckpointError, load_checkpoint, model_state
from pyreid.training.engine import resolve_device

__all__ = ["evaluate_checkpoint", "model_from_checkpoint"]

logger = logging.getLogger("pyreid.eval")


def model_from_checkpoint(path: str, state: Optional[Dict[str, Any]] = None) -> torch.nn.Module:
    """The model a pyreid checkpoint holds, rebuilt from its ``model_args`` (CPU, eval mode)."""
    state = state if state is not None else load_checkpoint(path)
    weights, args = model_state(state, path)
    if args is None:
        raise CheckpointError(f"{path} does not say how to build its model (no model_args)")
    model = build_model(**args)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: the saved weights do not fit the saved architecture: "
                              f"{str(e).splitlines()[0]}") from e
    return model.eval()


def evaluate_checkpoint(path: str, dataset: Optional[str] = None, data_root: Optional[str] = None,
                        rerank: bool = False, flip: bool = False, plots: bool = False, out: Optional[str] = None,
                        device: str = "auto", batch_size: int = 128, workers: Optional[int] = None,
                        progress: bool = True, rerank_distance: str = "euclidean",
                        camera_pattern: Optional[str] = None, crops: Optional[str] = None) -> Dict[str, Any]:
    """Scores (mAP, rank-1/5/10, mINP as fractions, and the CMC curve) of the model in ``path``.

    The data set, image size and root default to the ones the run was trained
    with. The scores go to ``OUT/eval[_rerank[_sqeuclidean]][_flip].json``
    (``out`` defaults to the checkpoint's folder); with ``plots`` the CMC curve
    and ranked lists go next to them as ``eval[...]_cmc.png`` and
    ``eval[...]_ranked_lists.png``. ``rerank_distance``: see
    :class:`pyreid.evaluation.Evaluator` (``"sqeuclidean"`` reproduces
    torchreid's and Cluster-Contrast's re-ranked scores). ``workers`` defaults
    to ``min(4, os.cpu_count())``; ``camera_pattern``: see
    :func:`pyreid.data.build_dataset` (``folder`` and ``list`` data sets);
    ``crops`` (``"none"`` or ``"five"``, TriNet's crops) defaults to the run's
    ``test_crops``.
    """
    from pyreid.ops.checks import RERANK_DISTANCES, check_choice

    check_choice(rerank_distance, RERANK_DISTANCES, "rerank_distance", "evaluate_checkpoint")  # before any work
    state = load_checkpoint(path)
    config = state.get("config", {})
    # A two-data-set run (source + target) is scored on its target, as during training.
    dataset = dataset or config.get("target") or config.get("dataset")
    data_root = data_root or config.get("target_root") or config.get("data_root")
    if not dataset or not data_root:
        raise CheckpointError(f"{path} does not say which data set it was trained on: pass --dataset and --data-root")
    height, width = config.get("height", 256), config.get("width", 128)
    crops = crops or config.get("test_crops", "none")
    device = resolve_device(device)
    model = model_from_checkpoint(path, state).to(device)
    data = build_dataset(dataset, data_root, camera_pattern=camera_pattern)
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    result = evaluate_split(model, data, height=height, width=width, batch_size=batch_size, workers=workers,
                            device=device, flip=flip, rerank=rerank, rerank_distance=rerank_distance,
                            progress=progress, crops=crops)
    scores = result.scores
    rerank_tag = ("_rerank" + ("_sqeuclidean" if rerank_distance == "sqeuclidean" else "")) if rerank else ""
    stem = "eval" + rerank_tag + ("_flip" if flip else "")
    out = out or os.path.dirname(os.path.abspath(path))
    os.makedirs(out, exist_ok=True)
    record = {
        "checkpoint": os.path.abspath(path), "epoch": state.get("epoch"), "dataset": dataset,
        "data_root": data_root, "rerank": rerank,
        "rerank_distance": rerank_distance if rerank else None, "flip": flip, "test_crops": crops,
        "num_query": len(data.query),
        "num_gallery": len(data.gallery), **{k: float(scores[k]) for k in SCORE_KEYS},
        "cmc": [float(v) for v in scores["cmc"][:50]],
        # Images that could not be read, left out of the scores: {"query": [path, ...], "gallery": [...]}.
        "skipped_images": {split: [p for p, _ in bad] for split, bad in result.failed.items()},
    }
    with open(os.path.join(out, stem + ".json"), "w") as f:
        json.dump(record, f, indent=2)
    if plots:
        label = f"{state.get('algorithm', 'model')}, epoch {state.get('epoch')}" + (f" + re-ranking ({rerank_distance})" if rerank else "")
        plot_split(result, data, os.path.join(out, stem + "_"), label)
    record["written"] = os.path.join(out, stem + ".json")
    return record
