"""Which files are images: a folder's (recursively), a list file's, or one file.

Only names are read here (no image is opened, no torch import), so the
folder and list data sets and ``pyreid extract|search`` share one notion of
"an image file".

Example:
    >>> paths = list_images("data/my_gallery")        # doctest: +SKIP
    >>> paths = list_images("gallery.txt")            # one path per line (first field), relative to the list
"""

from __future__ import annotations

import os
from typing import List

__all__ = ["IMAGE_EXTENSIONS", "LIST_EXTENSIONS", "is_image_file", "list_images", "walk_images"]

# What PIL reads out of the box and re-ID data sets ship in; compared case-insensitively.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
LIST_EXTENSIONS = (".txt", ".csv", ".lst")


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def walk_images(folder: str) -> List[str]:
    """Image files at any depth below ``folder``, sorted; hidden files and folders (``.pyreid_cache``,
    ``.ipynb_checkpoints``) are skipped."""
    found = []
    for here, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(here, f) for f in files if not f.startswith(".") and is_image_file(f))
    return sorted(found)


def _read_list(path: str) -> List[str]:
    """First field of every line (comma or tab separated, else space separated); relative paths are taken from the list's
    folder; blank lines, ``#`` comments and a ``path,...`` header are skipped."""
    base = os.path.dirname(os.path.abspath(path))
    paths = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            # Comma or tab separated; a line with neither is split on spaces (MSMT17's lists).
            first = (line.replace("\t", ",").split(",") if "," in line or "\t" in line else line.split())[0].strip()
            if first.lower() in ("path", "img_path", "image", "file"):
                continue
            paths.append(first if os.path.isabs(first) else os.path.join(base, first))
    return paths


def list_images(source: str) -> List[str]:
    """The image files ``source`` names: a folder (recursively, sorted), a list file
    (``.txt``/``.csv``/``.lst``: one path per line, order kept) or a single image file.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: it holds no image, or it is a file that is neither an image nor a list.
    """
    if os.path.isdir(source):
        paths = walk_images(source)
        if not paths:
            raise ValueError(f"{source}: no image files in this folder or below it "
                             f"(looked for {', '.join(IMAGE_EXTENSIONS)})")
        return paths
    if not os.path.exists(source):
        raise FileNotFoundError(f"{source}: no such file or folder")
    if is_image_file(source):
        return [source]
    if source.lower().endswith(LIST_EXTENSIONS):
        paths = _read_list(source)
        if not paths:
            raise ValueError(f"{source}: the list names no image")
        return paths
    raise ValueError(f"{source}: not an image ({', '.join(IMAGE_EXTENSIONS)}), a list file "
                     f"({', '.join(LIST_EXTENSIONS)}) or a folder")
