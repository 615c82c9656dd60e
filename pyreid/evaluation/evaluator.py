"""Feature extraction and the query/gallery evaluation of a model."""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F

import pyreid.ops
from pyreid.data.transforms import five_crops
from pyreid.evaluation.rank import evaluate

__all__ = ["extract_features", "Evaluator"]

logger = logging.getLogger(__name__)


def _unpack_batch(batch) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images, pids, camids) of a loader batch: a tuple/list ``(img, pid, camid, ...)`` or a dict."""
    if isinstance(batch, dict):
        return batch["img"], torch.as_tensor(batch["pid"]), torch.as_tensor(batch["camid"])
    if isinstance(batch, (tuple, list)) and len(batch) >= 3:
        return batch[0], torch.as_tensor(batch[1]), torch.as_tensor(batch[2])
    raise TypeError(
        "extract_features: a loader batch must be (img, pid, camid, index) or a dict with keys "
        f"'img', 'pid', 'camid'; got {type(batch).__name__}"
    )


@torch.no_grad()
def extract_features(model: torch.nn.Module, loader: Iterable, device: Union[str, torch.device] = "cpu",
                     flip: bool = False, progress: bool = True, desc: str = "features",
                     crop: Optional[Tuple[int, int]] = None):
    """Features of every image of a loader, in loader order.

    The model runs in eval mode (its previous mode is restored afterwards)
    without autograd. With ``flip=True`` the features of each image and of its
    horizontal mirror are averaged (a common test-time augmentation). With
    ``crop=(h, w)`` the loader's (larger) images are cut into their four corner
    and centre h x w crops (:func:`pyreid.data.transforms.five_crops`) and the
    features of the five (ten with ``flip``) views averaged: TriNet's test-time
    augmentation (Hermans et al. 2017) when the images were resized to 9/8 of
    h x w.

    Args:
        model: maps a B x 3 x H x W batch to B x D features in eval mode
            (a :func:`pyreid.models.build_model` model does).
        loader: yields ``(img, pid, camid, index)`` tuples (or dicts with
            ``img``, ``pid``, ``camid``).
        device: where the model runs; the batches are moved there.
        flip: average with the horizontally flipped images.
        crop: ``(h, w)`` of the five crops to average (None: the whole image).
        progress: show a tqdm progress bar.

    Returns:
        ``(features, pids, camids)``: N x D float32 CPU tensor and two int64
        CPU tensors of length N.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 2, 5))
        >>> loader = [(torch.randn(2, 3, 4, 2), torch.tensor([0, 1]), torch.tensor([0, 0]), torch.tensor([0, 1]))]
        >>> f, pids, cams = extract_features(model, loader, progress=False)
        >>> tuple(f.shape), pids.tolist()
        ((2, 5), [0, 1])
    """
    from tqdm import tqdm  # a declared dependency; imported here to keep `import pyreid` light

    was_training = model.training
    model.eval()
    features, pids, camids = [], [], []
    try:
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
            images, pid, camid = _unpack_batch(batch)
            images = images.to(device, non_blocking=True)
            views = five_crops(images, *crop) if crop is not None else [images]
            if flip:
                views += [torch.flip(view, dims=[3]) for view in views]
            out = sum(model(view) for view in views) / len(views)
            features.append(out.float().cpu())
            pids.append(pid.reshape(-1).long())
            camids.append(camid.reshape(-1).long())
    finally:
        model.train(was_training)
    if not features:
        raise ValueError("extract_features: the loader yielded no batch")
    return torch.cat(features), torch.cat(pids), torch.cat(camids)


@dataclass
class Evaluator:
    """Evaluates a model on a query/gallery split.

    Features are extracted with :func:`extract_features`, L2-normalised when
    ``normalize`` is set, compared with :func:`pyreid.ops.pairwise_distance`
    (``metric`` "euclidean" or "cosine"; on normalised features both rank
    identically) or re-ranked with :func:`pyreid.ops.re_ranking`
    (``rerank=True``, Zhong et al. CVPR 2017), and scored with
    :func:`pyreid.evaluation.evaluate`.

    ``rerank_distance`` is what the original re-ranking is taken to be fed:
    ``"euclidean"`` (the paper and its authors' code) or ``"sqeuclidean"``
    (torchreid's engine and Cluster-Contrast's evaluator pass squared
    distances; use it to compare with the scores those pipelines report).

    Example:
        >>> evaluator = Evaluator(model, query_loader, gallery_loader, device="cuda")  # doctest: +SKIP
        >>> scores = evaluator.run()                                                   # doctest: +SKIP
        >>> scores["mAP"], scores["rank1"]                                             # doctest: +SKIP
    """

    model: torch.nn.Module
    query_loader: Iterable
    gallery_loader: Iterable
    device: Union[str, torch.device] = "cpu"
    metric: str = "euclidean"
    normalize: bool = True
    flip: bool = False
    rerank: bool = False
    rerank_distance: str = "euclidean"
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3
    max_rank: int = 50
    ap: str = "standard"
    progress: bool = True

    def distances(self, query: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
        """Q x G distances between query and gallery features, as configured."""
        if self.metric not in ("euclidean", "cosine"):
            raise ValueError(f"Evaluator: unknown metric '{self.metric}'; expected 'euclidean' or 'cosine'")
        if self.normalize:
            query, gallery = F.normalize(query, dim=1), F.normalize(gallery, dim=1)
        if self.rerank:
            return pyreid.ops.re_ranking(query, gallery, k1=self.k1, k2=self.k2, lambda_value=self.lambda_value,
                                         distance=self.rerank_distance)
        return pyreid.ops.pairwise_distance(query, gallery, metric=self.metric)

    def run(self, return_distmat: bool = False) -> Dict[str, object]:
        """Extract features, compute distances and return the scores of :func:`evaluate`."""
        q_feat, q_pids, q_cams = extract_features(self.model, self.query_loader, self.device, self.flip,
                                                  self.progress, desc="query")
        g_feat, g_pids, g_cams = extract_features(self.model, self.gallery_loader, self.device, self.flip,
                                                  self.progress, desc="gallery")
        distmat = self.distances(q_feat, g_feat)
        scores = evaluate(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=self.max_rank, ap=self.ap)
        logger.info("mAP %.1f%%  rank-1 %.1f%%  rank-5 %.1f%%  rank-10 %.1f%%  mINP %.1f%%",
                    100 * scores["mAP"], 100 * scores["rank1"], 100 * scores["rank5"],
                    100 * scores["rank10"], 100 * scores["mINP"])
        if return_distmat:
            scores["distmat"] = distmat
        return scores

