"""``pyreid search``: the gallery images nearest to each query image, printed, saved and drawn.

Distances are those of ``pyreid eval`` (Euclidean between unit-length
features, or k-reciprocal re-ranked), so a search ranks a gallery exactly as
the evaluator does; no identity is known, so nothing is filtered out. The
gallery's features are cached beside it (``GALLERY/.pyreid_cache/``, or beside
a list file), keyed by the checkpoint (path, size, time), the input size, flip
and every gallery file's path, size and time: a second search of the same
gallery with the same model reads them instead of extracting again.

Example:
    >>> from pyreid.search import search
    >>> result = search("runs/sup/best.pth", "query.jpg", "gallery/", topk=5)   # doctest: +SKIP
    >>> result.matches[0][:2]                                                    # doctest: +SKIP
    [('gallery/0003_c2.jpg', 0.41), ('gallery/0019_c5.jpg', 0.77)]
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch

__all__ = ["SearchResult", "search", "gallery_features", "cache_key"]

logger = logging.getLogger("pyreid.search")

CACHE_DIR = ".pyreid_cache"


@dataclass
class SearchResult:
    """Query and gallery paths (the readable ones), the Q x G distances, and each query's top-k
    ``(gallery path, distance)``; ``written`` lists the files saved, ``gallery_cached`` whether the
    gallery's features came from the cache."""

    query_paths: List[str]
    gallery_paths: List[str]
    distmat: torch.Tensor
    matches: List[List[Tuple[str, float]]]
    gallery_cached: bool = False
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    written: List[str] = field(default_factory=list)


def cache_key(model, paths: List[str]) -> str:
    """A digest of everything the gallery's features depend on."""
    ckpt = model.info.get("checkpoint", "")
    st = os.stat(ckpt) if ckpt and os.path.exists(ckpt) else None
    h = hashlib.sha256()
    h.update(json.dumps({"checkpoint": ckpt, "checkpoint_stat": [st.st_size, st.st_mtime_ns] if st else None,
                         "size": [model.height, model.width], "mean": model.mean, "std": model.std,
                         "flip": model.flip}).encode())
    for p in paths:
        s = os.stat(p)
        h.update(f"\n{os.path.abspath(p)}\t{s.st_size}\t{s.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


def _cache_folder(gallery: str) -> str:
    base = gallery if os.path.isdir(gallery) else os.path.dirname(os.path.abspath(gallery))
    return os.path.join(base, CACHE_DIR)


def gallery_features(model, gallery: str, paths: List[str], *, cache: bool = True, batch_size: int = 64,
                     workers: int = 0, progress: bool = True):
    """``(EmbedResult, cached)`` of the gallery's images, read from or written to the cache."""
    from pyreid.inference import EmbedResult

    path = None
    if cache:
        path = os.path.join(_cache_folder(gallery), f"features-{cache_key(model, paths)}.pt")
        if os.path.isfile(path):
            try:
                saved = torch.load(path, weights_only=True)
                return EmbedResult(saved["features"], saved["paths"], [tuple(f) for f in saved["failed"]],
                                   saved["rows"]), True
            except Exception as e:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
                logger.warning("gallery cache %s cannot be read (%s); extracting again", path, e)
    result = model.embed_files(paths, batch_size=batch_size, workers=workers, progress=progress, desc="gallery")
    if path is not None:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".features-", suffix=".tmp", dir=os.path.dirname(path))
            with os.fdopen(fd, "wb") as f:
                torch.save({"features": result.features, "paths": result.paths,
                            "failed": [list(x) for x in result.failed], "rows": result.rows}, f)
            os.replace(tmp, path)
        except OSError as e:  # a read-only gallery still searches, only slower next time
            logger.warning("cannot write the gallery cache in %s (%s); the next search extracts again",
                           os.path.dirname(path), e)
    return result, False


def search(checkpoint: str, query: str, gallery: str, *, topk: int = 10, rerank: bool = False,
           out: Optional[str] = None, cache: bool = True, device: str = "auto", batch_size: int = 64,
           workers: int = 0, flip: bool = False, progress: bool = True, max_plotted: int = 16) -> SearchResult:
    """Rank ``gallery`` (a folder, recursively, or a list file) for each image of ``query`` (an image, a
    folder or a list file) with the model of ``checkpoint``.

    With ``out``, writes ``OUT/search.json`` (every query's top-k paths and distances) and
    ``OUT/ranked_lists.png`` (the first ``max_plotted`` queries). A query that is not a readable image
    is an error when it is the only one, and skipped (with a warning) in a folder.
    """
    from pyreid.data.image_files import list_images
    from pyreid.evaluation.evaluator import Evaluator
    from pyreid.inference import EmbedResult, load_model

    if topk < 1:
        raise ValueError(f"search: --topk must be >= 1, got {topk}")
    query_files = list_images(query)  # errors for a missing query or one that is no image, before any work
    gallery_files = list_images(gallery)
    model = load_model(checkpoint, device=device, flip=flip)
    if len(query_files) == 1:
        # One query: an unreadable file is an error naming it, not a skip.
        q = EmbedResult(model.embed(query_files), query_files, [], [0])
    else:
        q = model.embed_files(query_files, batch_size=batch_size, workers=workers, progress=progress, desc="query")
    g, cached = gallery_features(model, gallery, gallery_files, cache=cache, batch_size=batch_size, workers=workers,
                                 progress=progress)
    distmat = Evaluator(model, [], [], rerank=rerank).distances(q.features, g.features)
    k = min(topk, distmat.shape[1])
    # Stable sort: ties go to the smaller gallery index, as in the evaluator and plot_ranked_lists.
    order = torch.sort(distmat, dim=1, stable=True).indices[:, :k]
    matches = [[(g.paths[j], float(distmat[i, j])) for j in row.tolist()] for i, row in enumerate(order)]
    result = SearchResult(list(q.paths), list(g.paths), distmat, matches, cached, list(q.failed) + list(g.failed))
    if out is not None:
        result.written = _write(result, out, topk=k, rerank=rerank, checkpoint=checkpoint, max_plotted=max_plotted)
    return result


def _write(result: SearchResult, out: str, *, topk: int, rerank: bool, checkpoint: str,
           max_plotted: int) -> List[str]:
    os.makedirs(out, exist_ok=True)
    record: Dict[str, Any] = {
        "checkpoint": os.path.abspath(checkpoint), "rerank": rerank, "topk": topk,
        "distance": "k-reciprocal re-ranked" if rerank else "euclidean (unit-length features)",
        "results": [{"query": qp, "matches": [{"path": p, "distance": d} for p, d in m]}
                    for qp, m in zip(result.query_paths, result.matches)],
        "skipped": [{"path": p, "reason": r} for p, r in result.skipped],
    }
    written = [os.path.join(out, "search.json")]
    tmp = f"{written[0]}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2)
    os.replace(tmp, written[0])
    from pyreid.evaluation.visualize import plot_ranked_lists

    shown = list(range(min(max_plotted, len(result.query_paths))))
    written.append(plot_ranked_lists(result.distmat, result.query_paths, result.gallery_paths, None, None, None,
                                     None, os.path.join(out, "ranked_lists.png"), query_indices=shown, topk=topk))
    return written
