"""``pyreid extract``: the features of a folder, a list of images or a data set split, saved to one file.

The file format follows the extension of ``out``:

* ``.npz`` (numpy): ``features`` (N x D float32, unit length), ``paths`` (N strings) and, for a
  data set, ``pids``, ``camids`` and ``splits``;
* ``.pt`` (torch): the same keys in a dict (``features`` a tensor, ``paths`` a list);
* ``.npy``: the features alone, with the paths one per line in ``<stem>_paths.txt`` beside it.

Rows follow the input order; images that cannot be read are skipped (named
in the log and under ``failed`` in ``.npz``/``.pt``). The file is written to a
temporary name and renamed, so an error never destroys an earlier result.

Example:
    >>> from pyreid.extract import extract_to_file, load_features
    >>> extract_to_file("runs/sup/best.pth", "feats.npz", images="photos/")   # doctest: +SKIP
    >>> load_features("feats.npz")["features"].shape                            # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

__all__ = ["FORMATS", "extract_to_file", "save_features", "load_features"]

logger = logging.getLogger("pyreid.extract")

FORMATS = (".npz", ".pt", ".npy")
SPLITS = ("query", "gallery", "train", "test", "all")


def _format(out: str) -> str:
    ext = os.path.splitext(out)[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"--out {out}: the extension chooses the format: {', '.join(FORMATS)}")
    return ext


def _atomic(out: str, write) -> None:
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(out)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_features(out: str, features: torch.Tensor, paths: Sequence[str], *, pids: Optional[Sequence[int]] = None,
                  camids: Optional[Sequence[int]] = None, splits: Optional[Sequence[str]] = None,
                  failed: Sequence[str] = ()) -> List[str]:
    """Write features and their paths as ``.npz``, ``.pt`` or ``.npy`` (by extension); returns the files written."""
    ext = _format(out)
    feats = features.detach().float().cpu()
    record: Dict[str, Any] = {"features": feats.numpy(), "paths": np.asarray(list(paths), dtype=str)}
    if pids is not None:
        record["pids"] = np.asarray(pids, dtype=np.int64)
        record["camids"] = np.asarray(camids, dtype=np.int64)
        record["splits"] = np.asarray(list(splits), dtype=str)
    record["failed"] = np.asarray(list(failed), dtype=str)
    if ext == ".npz":
        _atomic(out, lambda f: np.savez(f, **record))
        return [out]
    if ext == ".pt":
        obj = {k: (torch.from_numpy(v) if v.dtype.kind in "fi" else v.tolist()) for k, v in record.items()}
        _atomic(out, lambda f: torch.save(obj, f))
        return [out]
    listing = os.path.splitext(out)[0] + "_paths.txt"
    _atomic(out, lambda f: np.save(f, record["features"]))
    _atomic(listing, lambda f: f.write("".join(p + "\n" for p in paths).encode()))
    return [out, listing]


def load_features(path: str) -> Dict[str, Any]:
    """What :func:`save_features` wrote, as numpy arrays and lists (``.npy``: features and paths)."""
    ext = _format(path)
    if ext == ".npz":
        with np.load(path) as data:
            return {k: (data[k].tolist() if data[k].dtype.kind == "U" else data[k]) for k in data.files}
    if ext == ".pt":
        obj = torch.load(path, weights_only=True)
        return {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in obj.items()}
    listing = os.path.splitext(path)[0] + "_paths.txt"
    with open(listing) as f:
        paths = [line.rstrip("\n") for line in f]
    return {"features": np.load(path), "paths": paths}


def extract_to_file(checkpoint: str, out: str, *, images: Optional[str] = None, dataset: Optional[str] = None,
                    data_root: Optional[str] = None, split: str = "all", camera_pattern: Optional[str] = None,
                    device: str = "auto", batch_size: int = 64, workers: int = 0, flip: bool = False,
                    progress: bool = True) -> Dict[str, Any]:
    """Extract features of ``images`` (a folder, recursively; a list file; one image) or of a data set's
    ``split`` (``query``, ``gallery``, ``train``, ``test`` = query + gallery, ``all``) and save them to ``out``.

    Returns ``{"written", "num_images", "num_failed", "feature_dim", "device"}``.
    """
    from pyreid.data.image_files import list_images
    from pyreid.inference import load_model

    _format(out)  # before any work
    if (images is None) == (dataset is None):
        raise ValueError("extract: give --images DIR_OR_LIST, or --dataset NAME with --data-root DIR")
    labels = None
    if images is not None:
        paths = list_images(images)
    else:
        from pyreid.data.datasets import build_dataset

        if split not in SPLITS:
            raise ValueError(f"extract: --split must be one of {', '.join(SPLITS)}, got {split!r}")
        if data_root is None:
            raise ValueError("extract: --dataset needs --data-root")
        data = build_dataset(dataset, data_root, camera_pattern=camera_pattern)
        chosen = {"all": ("train", "query", "gallery"), "test": ("query", "gallery")}.get(split, (split,))
        items = [(p, pid, cam, s) for s in chosen for p, pid, cam in getattr(data, s)]
        if not items:
            raise ValueError(f"extract: the {split} split of {dataset} at {data_root} holds no image")
        paths = [it[0] for it in items]
        labels = items
    model = load_model(checkpoint, device=device, flip=flip)
    logger.info("extracting %d images with %s on %s", len(paths), checkpoint, model.device)
    result = model.embed_files(paths, batch_size=batch_size, workers=workers, progress=progress)
    extra: Dict[str, Any] = {}
    if labels is not None:
        kept = [labels[i] for i in result.rows]
        extra = {"pids": [it[1] for it in kept], "camids": [it[2] for it in kept], "splits": [it[3] for it in kept]}
    written = save_features(out, result.features, result.paths, failed=[p for p, _ in result.failed], **extra)
    return {"written": written, "num_images": len(result.paths), "num_failed": len(result.failed),
            "failed": result.failed, "feature_dim": int(result.features.shape[1]), "device": str(model.device)}
