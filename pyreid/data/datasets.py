"""Re-ID data sets on disk: Market-1501, DukeMTMC-reID, MSMT17, VeRi-776, the synthetic set, and your own
(a folder per identity, or list files).

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from pyreid.data.synthetic import MARKER_FILE

__all__ = ["ReIDDataset", "build_dataset", "DATASETS", "CUSTOM_DATASETS", "CAMERA_TOKEN", "DatasetLayoutError"]

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
        """Labelled training identities (an unlabelled image's pid -1 is none)."""
        return len({pid for _, pid, _ in self.train if pid >= 0})

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


def _check_market_style(folder: str, pattern: re.Pattern, example: str,
                        splits: Sequence[str] = _MARKET_SPLITS) -> Optional[str]:
    """The three split folders, with train images (if any) named like ``pattern``."""
    verdict = _missing(folder, dirs=splits)
    if verdict != "":
        return verdict
    sample = _first_jpg(os.path.join(folder, splits[0]))
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
                        max_camera: Optional[int], splits: Sequence[str] = _MARKET_SPLITS) -> ReIDDataset:
    """``splits``: the train, query and gallery folders, in that order."""
    parsed = [_parse_market_folder(os.path.join(folder, s), pattern, name, layout, max_camera) for s in splits]
    # Junk (-1) is dropped everywhere; distractors (0) are people of no
    # identity: kept in the gallery only.
    train = [it for it in parsed[0] if it[1] > 0]
    query = [it for it in parsed[1] if it[1] > 0]
    gallery = [it for it in parsed[2] if it[1] >= 0]
    if not train:
        raise DatasetLayoutError(f"{name}: no training images in {os.path.join(folder, splits[0])!r}")
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


# ---------------------------------------------------------------------------
# VeRi-776 (vehicles): Market-1501 style folders under other names

_VERI_SPLITS = ("image_train", "image_query", "image_test")
_VERI_NAME = re.compile(r"^(\d+)_c(\d+)_(\d+)_(\d+)\.jpg$")
_VERI_LAYOUT = """  ROOT/[.../]VeRi/
      image_train/   0001_c001_00016450_0.jpg ...  (vehicle id_camera_frame_index)
      image_query/   0002_c002_00030600_0.jpg ...
      image_test/    0002_c003_00084760_0.jpg ...  (the gallery)"""


def _veri(root: str) -> ReIDDataset:
    folder = _find_dataset_dir(
        root, "veri", lambda f: _check_market_style(f, _VERI_NAME, "0002_c002_00030600_0.jpg", _VERI_SPLITS),
        _VERI_LAYOUT,
    )
    return _build_market_style("veri", folder, _VERI_NAME, _VERI_LAYOUT, max_camera=20, splits=_VERI_SPLITS)


# ---------------------------------------------------------------------------
# Your own data: a folder per identity (`folder`) or list files (`list`)

_SPLITS = ("train", "query", "gallery")
# The default camera token: "c<digits>" at the start of a file name or after a non-alphanumeric
# character (0002_c1s1_..., cam_c3.jpg, c12-0042.png), so "pic001.jpg" has none.
CAMERA_TOKEN = re.compile(r"(?<![A-Za-z0-9])c(\d+)")

_FOLDER_LAYOUT = """  ROOT/
      train/<pid>/<any name>.jpg     (or train/<any name>.jpg: unlabelled, for unsupervised training)
      query/<pid>/<any name>.jpg
      gallery/<pid>/<any name>.jpg
  <pid> is a folder name (numbers or any text). Images directly in a split folder have no identity (pid -1).
  Cameras: --camera-pattern REGEX on the path below the split folder, else a c<number> token in the file
  name (0002_c1s1_000451_03.jpg, cam_c3.jpg), else one camera per image (no same-camera filtering)."""
_LIST_LAYOUT = """  ROOT/
      train.txt  query.txt  gallery.txt   (or .csv), one image per line: path[,pid[,camid]]
  Fields are separated by commas or tabs (or spaces when there is neither); paths are relative to ROOT
  or absolute; a missing pid (or -1) means unlabelled; a missing camid is read from the path as in
  the folder layout. A header line "path,pid,camid" is skipped."""


def _check_splits(folder: str, entries: Dict[str, Sequence[str]]) -> Optional[str]:
    """Empty when ``folder`` holds train, or query and gallery; a reason for half a layout; else None."""
    present = {split for split, names in entries.items()
               if any(os.path.exists(os.path.join(folder, n)) for n in names)}
    if "train" in present and (("query" in present) == ("gallery" in present)):
        return ""
    if {"query", "gallery"} <= present:
        return ""
    if "query" in present or "gallery" in present:
        have, lack = ("query", "gallery") if "query" in present else ("gallery", "query")
        return f"has {entries[have][0]} but no {entries[lack][0]}"
    return None


def _sort_key(value: str):
    return (0, int(value), "") if value.lstrip("-").isdigit() else (1, 0, value)


def _label_map(names: Sequence[str]) -> Dict[str, int]:
    """Identity names to pids: the numbers themselves when every name is an integer, else the names'
    positions in sorted order. ``-1`` and ``""`` mean unlabelled (-1)."""
    named = sorted({n for n in names if n not in ("", "-1")}, key=_sort_key)
    if all(n.lstrip("-").isdigit() for n in named):
        table = {n: int(n) for n in named}
    else:
        table = {n: i for i, n in enumerate(named)}
    table.update({"": -1, "-1": -1})
    return table


def _cameras(name: str, relpaths: Dict[str, List[str]], given: Dict[str, List[Optional[str]]],
             pattern: Optional[str]) -> Dict[str, List[int]]:
    """0-based camids of every split's images: the given value, else ``pattern`` (searched in the path
    below the split folder: group 1, or the whole match), else the default c<number> token in the file
    name, else one camera per image. Cameras are numbered by their sorted values (c1, c2, c6 -> 0, 1, 2)."""
    regex = None
    if pattern is not None:
        try:
            regex = re.compile(pattern)
        except re.error as e:
            raise ValueError(f"{name}: camera_pattern {pattern!r} is not a regular expression: {e}") from e
    values: Dict[str, List[Optional[str]]] = {}
    for split, paths in relpaths.items():
        values[split] = []
        for rel, value in zip(paths, given[split]):
            if value is None and regex is not None:
                m = regex.search(rel)
                if m is None:
                    raise DatasetLayoutError(f"{name}: camera_pattern {pattern!r} does not match {rel!r} "
                                             f"(in {split}); it is searched in the path below the split folder")
                value = m.group(1) if regex.groups else m.group(0)
            elif value is None:
                m = CAMERA_TOKEN.search(os.path.basename(rel))
                value = m.group(1) if m else None
            values[split].append(value)
    found = [v for vs in values.values() for v in vs if v is not None]
    if not found:  # no camera anywhere: every image is its own camera, so evaluation filters nothing
        counter = iter(range(sum(len(v) for v in values.values())))
        return {split: [next(counter) for _ in vs] for split, vs in values.items()}
    for split, vs in values.items():
        if None in vs:
            rel = relpaths[split][vs.index(None)]
            raise DatasetLayoutError(
                f"{name}: some images name a camera (c<number>) and {rel!r} (in {split}) does not; name every "
                "image's camera, or pass a camera_pattern (--camera-pattern) that finds it")
    table = {v: i for i, v in enumerate(sorted(set(found), key=_sort_key))}
    return {split: [table[v] for v in vs] for split, vs in values.items()}


def _assemble(name: str, folder: str, paths: Dict[str, List[str]], relpaths: Dict[str, List[str]],
              labels: Dict[str, List[str]], cams: Dict[str, List[Optional[str]]],
              camera_pattern: Optional[str]) -> ReIDDataset:
    """A ReIDDataset from per-split paths, identity names and camera values; train pids relabelled
    0..P-1 (unlabelled stay -1), query and gallery pids shared."""
    camids = _cameras(name, relpaths, cams, camera_pattern)
    train_map = _label_map(labels["train"])
    test_map = _label_map(labels["query"] + labels["gallery"])
    train = [(p, train_map[n], c) for p, n, c in zip(paths["train"], labels["train"], camids["train"])]
    labelled = sorted({pid for _, pid, _ in train if pid >= 0})
    new = {pid: i for i, pid in enumerate(labelled)}
    train = [(p, new.get(pid, -1), c) for p, pid, c in train]
    query = [(p, test_map[n], c) for p, n, c in zip(paths["query"], labels["query"], camids["query"])]
    gallery = [(p, test_map[n], c) for p, n, c in zip(paths["gallery"], labels["gallery"], camids["gallery"])]
    if not (train or query or gallery):
        raise DatasetLayoutError(f"{name}: no image in {folder!r}")
    return ReIDDataset(name, folder, train, query, gallery, labelled)


def _folder(root: str, camera_pattern: Optional[str] = None) -> ReIDDataset:
    from pyreid.data.image_files import is_image_file, walk_images

    folder = _find_dataset_dir(root, "folder", lambda f: _check_splits(f, {s: (s + "/",) for s in _SPLITS}),
                               _FOLDER_LAYOUT)
    paths, relpaths, labels = {}, {}, {}
    for split in _SPLITS:
        paths[split], relpaths[split], labels[split] = [], [], []
        top = os.path.join(folder, split)
        if not os.path.isdir(top):
            continue
        with os.scandir(top) as it:
            entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        for entry in entries:
            if entry.is_dir():
                found, label = walk_images(entry.path), entry.name
            elif entry.is_file() and is_image_file(entry.name):
                found, label = [entry.path], ""  # directly in the split folder: no identity
            else:
                continue
            paths[split] += found
            relpaths[split] += [os.path.relpath(p, top).replace(os.sep, "/") for p in found]
            labels[split] += [label] * len(found)
    empty = [s for s in _SPLITS if os.path.isdir(os.path.join(folder, s)) and not paths[s]]
    if empty:
        raise DatasetLayoutError(f"folder: no image files in {', '.join(os.path.join(folder, s) for s in empty)}. "
                                 f"Expected layout:\n{_FOLDER_LAYOUT}")
    cams = {s: [None] * len(paths[s]) for s in _SPLITS}
    return _assemble("folder", folder, paths, relpaths, labels, cams, camera_pattern)


def _list_file(folder: str, split: str) -> Optional[str]:
    for ext in (".txt", ".csv"):
        if os.path.isfile(os.path.join(folder, split + ext)):
            return os.path.join(folder, split + ext)
    return None


def _parse_list(path: str, folder: str) -> Tuple[List[str], List[str], List[Optional[str]]]:
    paths, labels, cams = [], [], []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = [x.strip() for x in (line.replace("\t", ",").split(",") if "," in line or "\t" in line
                                          else line.split())]
            if lineno == 1 and fields[0].lower() in ("path", "img_path", "image", "file"):
                continue  # a header
            if len(fields) > 3 or not fields[0]:
                raise DatasetLayoutError(f"list: malformed line {lineno} of {path!r}: {line!r}. "
                                         f"Expected layout:\n{_LIST_LAYOUT}")
            camid = fields[2] if len(fields) > 2 and fields[2] != "" else None
            if camid is not None and not camid.isdigit():
                raise DatasetLayoutError(f"list: camid {camid!r} on line {lineno} of {path!r} is not a "
                                         "non-negative integer")
            paths.append(fields[0] if os.path.isabs(fields[0]) else os.path.join(folder, fields[0]))
            labels.append(fields[1] if len(fields) > 1 else "")
            cams.append(camid)
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DatasetLayoutError(f"list: {len(missing)} of the {len(paths)} images of {path!r} do not exist, e.g. "
                                 + ", ".join(repr(p) for p in missing[:3]) + " (paths are relative to the list's folder)")
    return paths, labels, cams


def _list(root: str, camera_pattern: Optional[str] = None) -> ReIDDataset:
    folder = _find_dataset_dir(
        root, "list", lambda f: _check_splits(f, {s: (s + ".txt", s + ".csv") for s in _SPLITS}), _LIST_LAYOUT)
    paths, relpaths, labels, cams = {}, {}, {}, {}
    for split in _SPLITS:
        path = _list_file(folder, split)
        paths[split], labels[split], cams[split] = _parse_list(path, folder) if path else ([], [], [])
        relpaths[split] = [os.path.relpath(p, folder).replace(os.sep, "/") for p in paths[split]]
    return _assemble("list", folder, paths, relpaths, labels, cams, camera_pattern)


DATASETS: Dict[str, Callable[..., ReIDDataset]] = {
    "market1501": _market1501,
    "dukemtmcreid": _dukemtmcreid,
    "msmt17": _msmt17,
    "synthetic": _synthetic,
    "veri": _veri,
    "folder": _folder,
    "list": _list,
}

# The data sets read from a layout the user chose, where a camera pattern applies.
CUSTOM_DATASETS = ("folder", "list")


def build_dataset(name: str, root: str, camera_pattern: Optional[str] = None) -> ReIDDataset:
    """Read data set ``name`` found at or below ``root``.

    Args:
        name: ``"market1501"``, ``"dukemtmcreid"``, ``"msmt17"``, ``"veri"``
            (VeRi-776 vehicles), ``"synthetic"``, or your own data: ``"folder"``
            (``ROOT/{train,query,gallery}/<pid>/*.jpg``) or ``"list"``
            (``ROOT/{train,query,gallery}.txt`` of ``path,pid,camid`` lines).
        root: the folder holding the split folders (or the list files), or
            any parent of exactly one such folder, up to 3 levels up.
        camera_pattern: ``folder`` and ``list`` only: a regular expression
            searched in each image's path below its split folder (group 1, or
            the whole match, names the camera). Default: a ``c<number>`` token
            in the file name, else one camera per image (then evaluation
            filters no same-camera matches).

    Returns:
        a :class:`ReIDDataset` (``.train``, ``.query``, ``.gallery``: lists of
        ``(img_path, pid, camid)``; train pids relabelled ``0..P-1``, pid -1 for
        an unlabelled image; camids 0-based).

    Raises:
        ValueError: unknown name, or a camera pattern for a data set with fixed names.
        DatasetLayoutError: no such folder, several candidates, or a malformed
            layout; the message shows the layout expected.

    Example:
        >>> ds = build_dataset("folder", "data/shop", camera_pattern=r"cam(\\d+)")   # doctest: +SKIP
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if key in CUSTOM_DATASETS:
        return DATASETS[key](os.fspath(root), camera_pattern)
    if camera_pattern is not None:
        raise ValueError(f"camera_pattern applies to the {' and '.join(CUSTOM_DATASETS)} data sets; {name} names "
                         "its cameras in its file names")
    return DATASETS[key](os.fspath(root))
