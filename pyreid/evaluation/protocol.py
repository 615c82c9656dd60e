"""The one evaluation path: a model scored on a data set's query/gallery split, and its pictures.

The training engine and ``pyreid eval`` both call :func:`evaluate_split`
(features by :func:`pyreid.evaluation.sharded.extract_items`, sharded across
the processes of a distributed run; distances or re-ranking by
:meth:`Evaluator.distances`; scores by :func:`evaluate`) and draw with
:func:`plot_split`.

Example:
    >>> result = evaluate_split(model, build_dataset("market1501", "~/data"), height=256, width=128)  # doctest: +SKIP
    >>> result.scores["mAP"], result.scores["rank1"]                                                  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from pyreid.distributed import DistInfo
from pyreid.evaluation.evaluator import Evaluator
from pyreid.evaluation.rank import evaluate
from pyreid.evaluation.sharded import extract_readable

logger = logging.getLogger("pyreid.evaluation")

__all__ = ["SCORE_KEYS", "SplitResult", "UnlabelledSplitError", "check_labelled", "evaluate_split", "plot_split"]

# The scalar scores of an evaluation, as fractions in [0, 1].
SCORE_KEYS = ("mAP", "rank1", "rank5", "rank10", "mINP")


class UnlabelledSplitError(ValueError):
    """The query/gallery split has no images or images without identity labels: there is nothing to score."""


def check_labelled(dataset: Any) -> None:
    """Raise :class:`UnlabelledSplitError` unless every query and gallery image has an identity (pid >= 0).

    Scores of unlabelled images would be meaningless (or NaN); the folder and
    list data sets mark an image without identity with pid -1."""
    name = f"{getattr(dataset, 'name', 'the data set')} at {getattr(dataset, 'root', '?')}"
    missing = [split for split in ("query", "gallery") if not getattr(dataset, split)]
    if missing:
        raise UnlabelledSplitError(f"evaluation needs labelled query and gallery images; {name} has no "
                                   f"{' and no '.join(missing)} images")
    unlabelled = [path for split in ("query", "gallery") for path, pid, _ in getattr(dataset, split) if pid < 0]
    if unlabelled:
        raise UnlabelledSplitError(
            f"evaluation needs identity labels: {len(unlabelled)} query/gallery images of {name} have none "
            f"(e.g. {unlabelled[0]}); put them in <pid>/ folders (folder data set) or give a pid (list data set). "
            "To rank unlabelled images use `pyreid search`")


@dataclass
class SplitResult:
    """Features, distances and scores of one evaluation (all CPU tensors)."""

    query_features: torch.Tensor
    gallery_features: torch.Tensor
    query_pids: torch.Tensor
    gallery_pids: torch.Tensor
    query_camids: torch.Tensor
    gallery_camids: torch.Tensor
    distmat: torch.Tensor
    scores: Dict[str, Any]
    # Which query/gallery items the rows are (None: all of them, in order) and the images that could not be
    # read, by split: {"query": [(path, reason), ...], "gallery": [...]}.
    query_rows: Optional[torch.Tensor] = None
    gallery_rows: Optional[torch.Tensor] = None
    failed: Dict[str, List[Tuple[str, str]]] = field(default_factory=dict)

    def summary(self) -> Dict[str, float]:
        """The scalar scores (``SCORE_KEYS``) as floats."""
        return {key: float(self.scores[key]) for key in SCORE_KEYS}


def evaluate_split(model: torch.nn.Module, dataset: Any, *, height: int, width: int, batch_size: int = 128,
                   workers: int = 4, device: Union[str, torch.device] = "cpu", flip: bool = False,
                   rerank: bool = False, rerank_distance: str = "euclidean", progress: bool = True,
                   dist: DistInfo = DistInfo(), skip_bad: bool = True, crops: str = "none") -> SplitResult:
    """Score ``model`` on ``dataset.query`` against ``dataset.gallery`` (Market-1501 protocol).

    Features are extracted in eval mode with the test transform (``flip``
    averages each image with its mirror; ``crops="five"`` averages five crops
    of the image resized to 9/8, see :func:`extract_readable`), L2-normalised and compared with the
    Euclidean distance, or k-reciprocal re-ranked (``rerank``; see
    :class:`Evaluator` for ``rerank_distance``). A split without labels raises
    :class:`UnlabelledSplitError` before any extraction. With ``skip_bad``
    images that cannot be read are left out of the scores and listed in
    ``result.failed`` by split (the caller says so); without, the first one raises ``OSError``."""
    check_labelled(dataset)
    common = dict(height=height, width=width, batch_size=batch_size, num_workers=workers, device=device, flip=flip,
                  progress=progress, dist=dist, skip_bad=skip_bad, crops=crops)
    query = extract_readable(model, dataset.query, desc="query", **common)
    gallery = extract_readable(model, dataset.gallery, desc="gallery", **common)
    failed = {split: part.failed for split, part in (("query", query), ("gallery", gallery)) if part.failed}
    q_feat, q_pids, q_cams = query.features, query.pids, query.camids
    g_feat, g_pids, g_cams = gallery.features, gallery.pids, gallery.camids
    evaluator = Evaluator(model, [], [], rerank=rerank, rerank_distance=rerank_distance)
    distmat = evaluator.distances(q_feat, g_feat)
    scores = evaluate(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=min(50, distmat.shape[1]))
    return SplitResult(q_feat, g_feat, q_pids, g_pids, q_cams, g_cams, distmat, scores, query.rows, gallery.rows,
                       failed)


def plot_split(result: SplitResult, dataset: Any, prefix: str, label: str, embedding: bool = False) -> List[str]:
    """Draw ``PREFIX cmc.png`` and ``PREFIX ranked_lists.png`` (six queries spread over the split) and,
    with ``embedding``, ``PREFIX embedding.png`` (t-SNE of the test images of at most 30 identities);
    returns the files written. ``prefix`` is a path stem such as ``runs/x/`` or ``runs/x/eval_``."""
    from pyreid.evaluation.visualize import plot_cmc, plot_embedding, plot_ranked_lists

    folder = os.path.dirname(prefix)
    if folder:
        os.makedirs(folder, exist_ok=True)
    written = [prefix + "cmc.png", prefix + "ranked_lists.png"]
    plot_cmc({label: result.scores["cmc"]}, written[0], max_rank=20)
    # The rows are the readable images only: take their paths through the row numbers.
    query_paths = _paths(dataset.query, result.query_rows)
    gallery_paths = _paths(dataset.gallery, result.gallery_rows)
    step = max(1, len(query_paths) // 6)
    plot_ranked_lists(result.distmat, query_paths, gallery_paths,
                      result.query_pids, result.gallery_pids, result.query_camids, result.gallery_camids,
                      written[1], query_indices=list(range(0, len(query_paths), step))[:6])
    if embedding:
        features = torch.cat([result.query_features, result.gallery_features])
        pids = torch.cat([result.query_pids, result.gallery_pids])
        chosen = torch.unique(pids[pids > 0])[:30]
        keep = torch.isin(pids, chosen)
        if int(keep.sum()) >= 3:
            logger.info("drawing the t-SNE of %d test features (%d identities)...", int(keep.sum()), len(chosen))
            written.append(prefix + "embedding.png")
            plot_embedding(F.normalize(features[keep], dim=1), pids[keep], written[-1],
                           title="t-SNE of the final test features")
    return written


def _paths(items: Any, rows: Optional[torch.Tensor]) -> List[str]:
    paths = [p for p, _, _ in items]
    return paths if rows is None else [paths[i] for i in rows.tolist()]
