"""Re-ID data sets on disk: Market-1501, DukeMTMC-reID, MSMT17 and the synthetic set.

:func:`build_dataset` finds a data set under a root folder, parses its file
names (or list files) and returns a :class:`ReIDDataset` whose ``train``,
``query`` and ``gallery`` are lists of ``(img_path, pid, camid)``:

* train pids are relabelled ``0 .. P-1`` in sorted order of the original pids
  (what a classifier needs); query and gallery keep the original pids, so
  a query and its gallery matches share a pid;
* camids are 0-based (``c1`` in a name is camid 0);
* Market-1501 junk boxes (pid ``-1``) are dropped everywhere; its distractors
  (pid ``0000``) are kept in the gallery, where the protocol counts them as
  wrong answers.

Only names are read here (no image is opened), so building MSMT17's
126,441-image lists takes a fraction of a second.

Example:
    >>> from pyreid.data import build_dataset
    >>> ds = build_dataset("synthetic", "/tmp/synth")   # written by `pyreid synth --out /tmp/synth`
    >>> path, pid, camid = ds.train[0]
    >>> ds.print_summary()
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from pyreid.data.synthetic import MARKER_FILE

__all__ = ["ReIDDataset", "build_dataset", "DATASETS", "DatasetLayoutError"]

Item = Tuple[str, int, int]

# How deep below `root` to look for the data set folder: enough for
# root/Market-1501-v15.09.15 or data/market1501/Market-1501-v15.09.15.
SEARCH_DEPTH = 3


class DatasetLayoutError(FileNotFoundError):
    """The folder does not hold the expected data set layout."""


@dataclass
class ReIDDataset:
    """A re-ID data set's three splits, each a list of ``(img_path, pid, camid)``."""

    name: str
    root: str  # the folder holding the split folders / list files
    train: List[Item]
    query: List[Item]
    gallery: List[Item]
    # original pid of each relabelled train pid (train pid i was original_train_pids[i])
    original_train_pids: List[int] = field(default_factory=list)

    @property
    def num_train_pids(self) -> int:
        return len({pid for _, pid, _ in self.train})

    @property
    def num_cameras(self) -> int:
        return len({cam for split in (self.train, self.query, self.gallery) for _, _, cam in split})

    def stats(self) -> Dict[str, Dict[str, int]]:
        """``{split: {"ids": ..., "images": ..., "cameras": ...}}`` for train, query and gallery."""
        return {
            split: {
                "ids": len({pid for _, pid, _ in items}),
                "images": len(items),
                "cameras": len({cam for _, _, cam in items}),
            }
            for split, items in (("train", self.train), ("query", self.query), ("gallery", self.gallery))
        }

    def summary(self) -> str:
        """The stats as a small text table."""
        lines = [
            f"{self.name} ({self.root})",
            "  ----------------------------------------",
            "  subset   | # ids | # images | # cameras",
            "  ----------------------------------------",
        ]
        for split, s in self.stats().items():
            lines.append(f"  {split:<8} | {s['ids']:5d} | {s['images']:8d} | {s['cameras']:9d}")
        lines.append("  ----------------------------------------")
        return "\n".join(lines)

    def print_summary(self) -> None:
        print(self.summary())


# ---------------------------------------------------------------------------
# Finding the data set folder under `root`


def _find_dataset_dir(root: str, name: str, check: Callable[[str], Optional[str]], layout: str,
                      prefer: Optional[Callable[[str], bool]] = None) -> str:
    """The one folder at or below ``root`` (``SEARCH_DEPTH`` levels) that ``check`` accepts.

    ``check(folder)`` returns ``""`` for a data set folder, a reason for a
    near miss (some split folders missing, foreign file names), reported if
    nothing is found, and None otherwise. Candidates are not searched inside.
    With several candidates, ``prefer`` (if given) may single one out;
    otherwise the error names them all.
    """
    if not os.path.isdir(root):
        raise DatasetLayoutError(f"{name}: root folder {root!r} does not exist. Expected layout:\n{layout}")
    candidates: List[str] = []
    near_misses: List[str] = []
    level = [os.path.abspath(root)]
    for _ in range(SEARCH_DEPTH + 1):
        below = []
        for folder in level:
            verdict = check(folder)
            if verdict == "":
                candidates.append(folder)
                continue
            if verdict:
                near_misses.append(f"{folder}: {verdict}")
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                continue
            below.extend(e.path for e in entries if e.is_dir() and not e.name.startswith("."))
        level = below
    if len(candidates) > 1 and prefer is not None:
        preferred = [c for c in candidates if prefer(c)]
        if len(preferred) == 1:
            return preferred[0]
    if len(candidates) > 1:
        raise DatasetLayoutError(
            f"{name}: found several data set folders under {root!r}: " + ", ".join(candidates)
            + "; pass the one you mean as root"
        )
    if not candidates:
        found = "".join(f"\n  {m}" for m in near_misses[:5])
        raise DatasetLayoutError(
            f"{name}: no data set folder found at or up to {SEARCH_DEPTH} levels below {root!r}."
            + (f" Folders that almost match:{found}\n" if found else " ")
            + f"Expected layout:\n{layout}"
        )
    return candidates[0]


def _missing(folder: str, dirs: Sequence[str] = (), files: Sequence[str] = ()) -> Optional[str]:
    """None if none of the entries exist, "" if all do, else which are missing."""
    missing = [d + "/" for d in dirs if not os.path.isdir(os.path.join(folder, d))]
    missing += [f for f in files if not os.path.isfile(os.path.join(folder, f))]
    if len(missing) == len(dirs) + len(files):
        return None
    return f"missing {', '.join(missing)}" if missing else ""


def _first_jpg(folder: str) -> Optional[str]:
    with os.scandir(folder) as it:
        for e in it:
            if e.name.endswith(".jpg"):
                return e.name
    return None


# ---------------------------------------------------------------------------
# Market-1501 style folders (Market-1501, DukeMTMC-reID, synthetic)

_MARKET_SPLITS = ("bounding_box_train", "query", "bounding_box_test")
_MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)s(\d+)_(\d+)_(\d+)\.jpg$")
_DUKE_NAME = re.compile(r"^(-?\d+)_c(\d+)_f(\d+)\.jpg$")

_MARKET_LAYOUT = """  ROOT/[.../]Market-1501-v15.09.15/
      bounding_box_train/   0002_c1s1_000451_03.jpg ...  (pid_camera+sequence_frame_box)
      query/                0001_c1s1_001051_00.jpg ...
      bounding_box_test/    0000_c1s1_000151_01.jpg ...  (0000 distractors, -1 junk)"""
_DUKE_LAYOUT = """  ROOT/[.../]DukeMTMC-reID/
      bounding_box_train/   0005_c2_f0046985.jpg ...  (pid_camera_frame)
      query/                0005_c2_f0046985.jpg ...
      bounding_box_test/    0005_c2_f0046985.jpg ..."""
_SYNTH_LAYOUT = """  ROOT/[.../]DIR/   as written by `pyreid synth --out DIR` (Market-1501 names)
      bounding_box_train/   query/   bounding_box_test/   synthetic.json"""


def _check_market_style(folder: str, pattern: re.Pattern, example: str) -> Optional[str]:
    """The three split folders, with train images (if any) named like ``pattern``."""
    verdict = _missing(folder, dirs=_MARKET_SPLITS)
    if verdict != "":
        return verdict
    sample = _first_jpg(os.path.join(folder, "bounding_box_train"))
    if sample is not None and not pattern.match(sample):
        return f"image names like {sample!r} are not of the form {example!r}"
    return ""


def _parse_market_folder(folder: str, pattern: re.Pattern, name: str, layout: str,
                         max_camera: Optional[int]) -> List[Item]:
    items = []
    with os.scandir(folder) as it:
        files = sorted(e.name for e in it if e.is_file())
    for fname in files:
        if not fname.endswith(".jpg"):
            continue  # Thumbs.db and friends
        m = pattern.match(fname)
        if m is None:
            raise DatasetLayoutError(
                f"{name}: unexpected file name {os.path.join(folder, fname)!r}. Expected layout:\n{layout}"
            )
        pid, cam = int(m.group(1)), int(m.group(2))
        if cam < 1 or (max_camera is not None and cam > max_camera):
            raise DatasetLayoutError(
                f"{name}: camera c{cam} in {os.path.join(folder, fname)!r} is outside c1..c{max_camera or '?'}"
            )
        if pid < -1:
            raise DatasetLayoutError(f"{name}: negative pid in {os.path.join(folder, fname)!r}")
        items.append((os.path.join(folder, fname), pid, cam - 1))
    return items


def _relabel(items: List[Item]) -> Tuple[List[Item], List[int]]:
    original = sorted({pid for _, pid, _ in items})
    new = {pid: i for i, pid in enumerate(original)}
    return [(path, new[pid], cam) for path, pid, cam in items], original


def _build_market_style(name: str, folder: str, pattern: re.Pattern, layout: str,
                        max_camera: Optional[int]) -> ReIDDataset:
    splits = {
        s: _parse_market_folder(os.path.join(folder, s), pattern, name, layout, max_camera) for s in _MARKET_SPLITS
    }
    # Junk (-1) is dropped everywhere; distractors (0) are people of no
    # identity: kept in the gallery only.
    train = [it for it in splits["bounding_box_train"] if it[1] > 0]
    query = [it for it in splits["query"] if it[1] > 0]
    gallery = [it for it in splits["bounding_box_test"] if it[1] >= 0]
    if not train:
        raise DatasetLayoutError(f"{name}: no training images in {os.path.join(folder, 'bounding_box_train')!r}")
    train, original = _relabel(train)
    return ReIDDataset(name, folder, train, query, gallery, original)


def _market1501(root: str) -> ReIDDataset:
    folder = _find_dataset_dir(
        root, "market1501", lambda f: _check_market_style(f, _MARKET_NAME, "0002_c1s1_000451_03.jpg"), _MARKET_LAYOUT,
        prefer=lambda f: not os.path.exists(os.path.join(f, MARKER_FILE)),
    )
    return _build_market_style("market1501", folder, _MARKET_NAME, _MARKET_LAYOUT, max_camera=None)


def _dukemtmcreid(root: str) -> ReIDDataset:
    folder = _find_dataset_dir(
        root, "dukemtmcreid", lambda f: _check_market_style(f, _DUKE_NAME, "0005_c2_f0046985.jpg"), _DUKE_LAYOUT
    )
    return _build_market_style("dukemtmcreid", folder, _DUKE_NAME, _DUKE_LAYOUT, max_camera=8)


def _synthetic(root: str) -> ReIDDataset:
    folder = _find_dataset_dir(
        root, "synthetic", lambda f: _check_market_style(f, _MARKET_NAME, "0002_c1s1_000451_01.jpg"), _SYNTH_LAYOUT,
        prefer=lambda f: os.path.exists(os.path.join(f, MARKER_FILE)),
    )
    return _build_market_style("synthetic", folder, _MARKET_NAME, _SYNTH_LAYOUT, max_camera=None)


# ---------------------------------------------------------------------------
# MSMT17: list files

_MSMT_LISTS = ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")
_MSMT_LAYOUT = """  ROOT/[.../]MSMT17_V1/
      train/0000/0000_000_01_0303morning_0015_0.jpg ...
      test/0000/0000_000_01_0303morning_0036_1.jpg ...
      list_train.txt  list_val.txt     lines "0000/0000_000_01_0303morning_0015_0.jpg 0" (path under train/, pid)
      list_query.txt  list_gallery.txt lines "0000/0000_000_01_0303morning_0036_1.jpg 0" (path under test/, pid)
  The camera is the third "_" field of the file name (01 .. 15)."""


def _check_msmt(folder: str) -> Optional[str]:
    return _missing(folder, dirs=("train", "test"), files=_MSMT_LISTS)


def _parse_msmt_list(list_path: str, image_dir: str) -> List[Item]:
    items = []
    with open(list_path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split()
            fields = os.path.basename(parts[0]).split("_")
            if len(parts) != 2 or len(fields) < 3 or not parts[1].lstrip("-").isdigit() or not fields[2].isdigit():
                raise DatasetLayoutError(
                    f"msmt17: malformed line {lineno} of {list_path!r}: {line!r}. Expected layout:\n{_MSMT_LAYOUT}"
                )
            cam = int(fields[2])
            if cam < 1:
                raise DatasetLayoutError(f"msmt17: camera {fields[2]} on line {lineno} of {list_path!r} must be >= 1")
            items.append((os.path.join(image_dir, parts[0]), int(parts[1]), cam - 1))
    # Catch a list that points at the wrong folder without statting every file.
    if items and not os.path.isfile(items[0][0]):
        raise DatasetLayoutError(f"msmt17: {items[0][0]!r} (first entry of {list_path!r}) does not exist")
    return items


def _msmt17(root: str) -> ReIDDataset:
    folder = _find_dataset_dir(root, "msmt17", _check_msmt, _MSMT_LAYOUT)
    train_dir, test_dir = os.path.join(folder, "train"), os.path.join(folder, "test")
    # The validation list holds more images of the training identities
    # (same labels): the usual protocol trains on both.
    train = _parse_msmt_list(os.path.join(folder, "list_train.txt"), train_dir)
    train += _parse_msmt_list(os.path.join(folder, "list_val.txt"), train_dir)
    query = _parse_msmt_list(os.path.join(folder, "list_query.txt"), test_dir)
    gallery = _parse_msmt_list(os.path.join(folder, "list_gallery.txt"), test_dir)
    if not train:
        raise DatasetLayoutError(f"msmt17: list_train.txt and list_val.txt in {folder!r} are empty")
    train, original = _relabel(train)
    return ReIDDataset("msmt17", folder, train, query, gallery, original)


DATASETS: Dict[str, Callable[[str], ReIDDataset]] = {
    "market1501": _market1501,
    "dukemtmcreid": _dukemtmcreid,
    "msmt17": _msmt17,
    "synthetic": _synthetic,
}


def build_dataset(name: str, root: str) -> ReIDDataset:
    """Read data set ``name`` found at or below ``root``.

    Args:
        name: ``"market1501"``, ``"dukemtmcreid"``, ``"msmt17"`` or ``"synthetic"``.
        root: the folder holding the split folders (or MSMT17's list files), or
            any parent of exactly one such folder, up to 3 levels up.

    Returns:
        a :class:`ReIDDataset` (``.train``, ``.query``, ``.gallery``: lists of
        ``(img_path, pid, camid)``; train pids relabelled ``0..P-1``; camids 0-based).

    Raises:
        ValueError: unknown name.
        DatasetLayoutError: no such folder, several candidates, or a malformed
            layout; the message shows the layout expected.
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[key](os.fspath(root))
