"""Pictures of an evaluation, saved as PNG: ranked lists, CMC curves, a 2-D embedding.

matplotlib (Agg backend, no display needed) and scikit-learn are imported
inside the functions, so ``import pyreid`` does not need them. Every figure is
sized in pixels and saved without ``bbox_inches="tight"``, so the PNG has
exactly the size the docstring states.
"""

import os
from collections.abc import Sequence
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch

__all__ = ["plot_ranked_lists", "plot_cmc", "plot_embedding", "pyplot", "ranked_list_size"]

PathLike = Union[str, os.PathLike]

_DPI = 100
_LABEL_HEIGHT = 24  # pixels above each row of images for the query/rank captions
_BORDER = 4  # pixels of the green/red frame


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (imported when first drawn)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _load_image(path: PathLike, size: Tuple[int, int]) -> np.ndarray:
    from PIL import Image  # a torchvision dependency

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB").resize(size, Image.BILINEAR))
    except OSError as exc:
        raise OSError(f"plot_ranked_lists: cannot read image '{path}': {exc}") from exc


def _framed(image: np.ndarray, colour: Optional[Tuple[int, int, int]]) -> np.ndarray:
    if colour is None:
        return image
    out = image.copy()
    out[:_BORDER], out[-_BORDER:], out[:, :_BORDER], out[:, -_BORDER:] = colour, colour, colour, colour
    return out


def ranked_list_size(num_queries: int, topk: int = 10, cell_size: Tuple[int, int] = (64, 128)) -> Tuple[int, int]:
    """(width, height) in pixels of the PNG :func:`plot_ranked_lists` writes."""
    return (topk + 1) * cell_size[0], num_queries * (cell_size[1] + _LABEL_HEIGHT)


def plot_ranked_lists(distmat, query_paths: Sequence[PathLike], gallery_paths: Sequence[PathLike], q_pids, g_pids,
                      q_camids, g_camids, out_path: PathLike, query_indices: Optional[Sequence[int]] = None,
                      topk: int = 10, cell_size: Tuple[int, int] = (64, 128)) -> str:
    """Each query (left) next to its ``topk`` nearest gallery images.

    The ranking follows the evaluation protocol: gallery images of the query's
    identity taken by the query's own camera are left out, the rest is sorted
    by distance (ties by gallery index). Correct matches get a green frame,
    others a red one; captions give the rank and distance. Without identities
    (``q_pids`` and ``g_pids`` None: a search of unlabelled images) nothing is
    left out and no frame is drawn.

    Args:
        distmat: Q x G distances (numpy or tensor).
        query_paths, gallery_paths: image files of the Q queries and G gallery items.
        q_pids, g_pids, q_camids, g_camids: identities and cameras (all four None: unknown).
        out_path: PNG file to write (folders are created).
        query_indices: which queries to draw (default: the first 8).
        topk: gallery images per query.
        cell_size: (width, height) of each image in pixels.

    Returns:
        ``out_path`` as a string. The image is ``ranked_list_size(len(query_indices), topk, cell_size)`` pixels.
    """
    plt = pyplot()
    distmat = _numpy(distmat)
    labelled = q_pids is not None and g_pids is not None
    if labelled:
        q_pids, g_pids, q_camids, g_camids = map(_numpy, (q_pids, g_pids, q_camids, g_camids))
    if query_indices is None:
        query_indices = list(range(min(8, distmat.shape[0])))
    if len(query_indices) == 0:
        raise ValueError("plot_ranked_lists: no query to draw")
    width, height = ranked_list_size(len(query_indices), topk, cell_size)
    fig = plt.figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI)
    cell_w, cell_h = cell_size
    row_h = cell_h + _LABEL_HEIGHT
    try:
        for row, q in enumerate(query_indices):
            if labelled:
                kept = ~((g_pids == q_pids[q]) & (g_camids == q_camids[q]))
            else:
                kept = np.ones(distmat.shape[1], dtype=bool)
            candidates = np.nonzero(kept)[0]
            order = candidates[np.argsort(distmat[q, candidates], kind="stable")][:topk]
            cells = [(_load_image(query_paths[q], cell_size), None, f"query {q_pids[q] if labelled else q}")]
            for rank, g in enumerate(order, start=1):
                colour = None if not labelled else (0, 200, 0) if g_pids[g] == q_pids[q] else (220, 0, 0)
                cells.append((_load_image(gallery_paths[g], cell_size), colour, f"{rank}: {distmat[q, g]:.2f}"))
            for col, (image, colour, caption) in enumerate(cells):
                # Axes placed in figure fractions from pixel positions, top row first.
                left, bottom = col * cell_w / width, 1 - (row * row_h + _LABEL_HEIGHT + cell_h) / height
                ax = fig.add_axes((left, bottom, cell_w / width, cell_h / height))
                ax.imshow(_framed(image, colour), interpolation="nearest")
                ax.set_axis_off()
                fig.text(left + 0.5 * cell_w / width, 1 - (row * row_h + _LABEL_HEIGHT / 2) / height, caption,
                         ha="center", va="center", fontsize=7, color="black" if colour is None else
                         tuple(c / 255 for c in colour))
        _save(fig, out_path)
    finally:
        plt.close(fig)
    return str(out_path)


def plot_cmc(curves: Dict[str, Sequence[float]], out_path: PathLike, max_rank: Optional[int] = None,
             size: Tuple[int, int] = (640, 480), title: str = "CMC") -> str:
    """CMC curves of one or several methods (``{"name": cmc}``, values in [0, 1]), ``size`` pixels."""
    if not curves:
        raise ValueError("plot_cmc: no curve to draw")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(size[0] / _DPI, size[1] / _DPI), dpi=_DPI)
    try:
        for name, cmc in curves.items():
            cmc = _numpy(cmc).astype(np.float64).reshape(-1)
            if max_rank is not None:
                cmc = cmc[:max_rank]
            ranks = np.arange(1, cmc.size + 1)
            ax.plot(ranks, 100 * cmc, marker="o" if cmc.size <= 20 else None, markersize=3,
                    label=f"{name} (rank-1 {100 * cmc[0]:.1f}%)")
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("rank")
        ax.set_ylabel("matching rate (%)")
        ax.set_title(title)
        ax.set_ylim(0, 100)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right")
        fig.tight_layout()  # rearranges inside the figure; the canvas size stays fixed
        _save(fig, out_path)
    finally:
        plt.close(fig)
    return str(out_path)


def plot_embedding(features, labels, out_path: PathLike, size: Tuple[int, int] = (800, 800),
                   perplexity: float = 30.0, seed: int = 0, title: str = "t-SNE of features",
                   max_points: int = 5000) -> str:
    """2-D t-SNE (scikit-learn) of N x D features, points coloured by identity or pseudo label.

    Label -1 (DBSCAN outliers) is drawn in grey. At most ``max_points`` points
    (a seeded random subset) are embedded, t-SNE being quadratic-ish in N.
    The perplexity is lowered for small N, as t-SNE requires it below N.
    """
    from sklearn.manifold import TSNE

    features = _numpy(features).astype(np.float32)
    labels = _numpy(labels).reshape(-1)
    if features.ndim != 2 or features.shape[0] != labels.shape[0]:
        raise ValueError(f"plot_embedding: features {features.shape} and labels {labels.shape} do not match")
    if features.shape[0] < 3:
        raise ValueError(f"plot_embedding: need at least 3 points, got {features.shape[0]}")
    rng = np.random.default_rng(seed)
    if features.shape[0] > max_points:
        keep = np.sort(rng.choice(features.shape[0], max_points, replace=False))
        features, labels = features[keep], labels[keep]
    perplexity = min(perplexity, (features.shape[0] - 1) / 3)
    points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(size[0] / _DPI, size[1] / _DPI), dpi=_DPI)
    try:
        outlier = labels == -1
        ax.scatter(points[outlier, 0], points[outlier, 1], s=6, c="lightgrey", label="outlier (-1)")
        # Map labels to consecutive integers so a cyclic colour map spreads them.
        _, codes = np.unique(labels[~outlier], return_inverse=True)
        ax.scatter(points[~outlier, 0], points[~outlier, 1], s=8, c=codes % 20, cmap="tab20", vmin=0, vmax=19)
        ax.set_title(f"{title} ({len(np.unique(labels[~outlier]))} labels, {len(labels)} points)")
        ax.set_xticks([])
        ax.set_yticks([])
        fig.tight_layout()
        _save(fig, out_path)
    finally:
        plt.close(fig)
    return str(out_path)


def _save(fig, out_path: PathLike) -> None:
    folder = os.path.dirname(os.fspath(out_path))
    if folder:
        os.makedirs(folder, exist_ok=True)
    fig.savefig(out_path, dpi=_DPI, format="png")
