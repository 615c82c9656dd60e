"""Your own data (`folder`, `list`), VeRi-776, and the image listing they share: on tiny trees."""

import os

import pytest
from PIL import Image

from pyreid.data import DatasetLayoutError, build_dataset
from pyreid.data.image_files import list_images


def _image(path, colour=(120, 60, 30)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (16, 32), colour).save(path)
    return str(path)


def _names(items):
    return sorted((os.path.basename(p), pid, cam) for p, pid, cam in items)


def test_veri_names_parsed(tmp_path):
    root = tmp_path / "data" / "VeRi"
    for split, names in {"image_train": ["0001_c001_00016450_0.jpg", "0001_c012_00016455_1.jpg",
                                         "0776_c020_00000001_0.jpg"],
                         "image_query": ["0002_c002_00030600_0.jpg"],
                         "image_test": ["0002_c003_00084760_0.jpg", "0005_c002_00010000_1.jpg"]}.items():
        for n in names:
            _image(root / split / n)
    ds = build_dataset("veri", tmp_path / "data")  # found one level down
    assert _names(ds.train) == [("0001_c001_00016450_0.jpg", 0, 0), ("0001_c012_00016455_1.jpg", 0, 11),
                                ("0776_c020_00000001_0.jpg", 1, 19)]
    assert ds.original_train_pids == [1, 776]
    assert _names(ds.query) == [("0002_c002_00030600_0.jpg", 2, 1)]
    assert _names(ds.gallery) == [("0002_c003_00084760_0.jpg", 2, 2), ("0005_c002_00010000_1.jpg", 5, 1)]
    _image(root / "image_test" / "0003_c021_00000001_0.jpg")
    with pytest.raises(DatasetLayoutError, match="camera c21"):
        build_dataset("veri", root)


def _folder_tree(root, names):
    for rel in names:
        _image(root / rel)
    return root


def test_folder_with_camera_tokens(tmp_path):
    root = _folder_tree(tmp_path / "shop", [
        "train/alice/x_c1_01.jpg", "train/alice/c2-02.png", "train/bob/deep/er/c3_1.jpg",
        "query/7/a_c1.jpg", "gallery/7/b_c2.jpg", "gallery/0012/c3_b.jpg"])
    ds = build_dataset("folder", root)
    # train identity names -> 0..P-1 in sorted order; images found at any depth
    assert _names(ds.train) == [("c2-02.png", 0, 1), ("c3_1.jpg", 1, 2), ("x_c1_01.jpg", 0, 0)]
    # numeric names keep their numbers, shared by query and gallery; cameras c1, c2, c3 -> 0, 1, 2
    assert _names(ds.query) == [("a_c1.jpg", 7, 0)]
    assert _names(ds.gallery) == [("b_c2.jpg", 7, 1), ("c3_b.jpg", 12, 2)]


def test_folder_without_cameras_is_one_camera_per_image(tmp_path):
    root = _folder_tree(tmp_path / "d", ["train/1/a.jpg", "train/2/b.jpg", "query/1/q.jpg", "gallery/1/g.jpg",
                                         "gallery/2/pic001.jpg"])  # "pic001" is no c<number> token
    ds = build_dataset("folder", root)
    cams = [c for split in (ds.train, ds.query, ds.gallery) for _, _, c in split]
    assert sorted(cams) == list(range(5))


def test_folder_camera_pattern(tmp_path):
    root = _folder_tree(tmp_path / "d", ["train/1/cam3/a.jpg", "train/1/cam10/b.jpg",
                                         "query/4/cam3/q.jpg", "gallery/4/cam10/g.jpg"])
    ds = build_dataset("folder", root, camera_pattern=r"cam(\d+)/")
    assert _names(ds.train) == [("a.jpg", 0, 0), ("b.jpg", 0, 1)]  # 3 < 10 numerically
    assert _names(ds.gallery) == [("g.jpg", 4, 1)]
    with pytest.raises(DatasetLayoutError, match=r"does not match '1/cam10/b.jpg'"):
        build_dataset("folder", root, camera_pattern=r"camera(\d+)")
    with pytest.raises(ValueError, match="not a regular expression"):
        build_dataset("folder", root, camera_pattern="cam(")
    with pytest.raises(ValueError, match="camera_pattern applies to the folder and list"):
        build_dataset("market1501", root, camera_pattern="c(\\d)")


def test_folder_unlabelled_train_and_errors(tmp_path):
    root = _folder_tree(tmp_path / "d", ["train/a_c1.jpg", "train/b_c2.jpg"])
    ds = build_dataset("folder", root)
    assert [pid for _, pid, _ in ds.train] == [-1, -1] and ds.num_train_pids == 0
    assert ds.query == [] and ds.gallery == []
    # Some images with a camera token and some without: ambiguous, named.
    _image(root / "train" / "nocam.jpg")
    with pytest.raises(DatasetLayoutError, match="'nocam.jpg'"):
        build_dataset("folder", root)
    empty = tmp_path / "e"
    os.makedirs(empty / "train")
    with pytest.raises(DatasetLayoutError, match="no image files in"):
        build_dataset("folder", empty)
    half = tmp_path / "h"
    _image(half / "query" / "1" / "q.jpg")
    with pytest.raises(DatasetLayoutError, match="has query/ but no gallery/"):
        build_dataset("folder", half)


def test_list_dataset(tmp_path):
    root = tmp_path / "lists"
    for rel in ("img/a.jpg", "img/b.jpg", "img/c.jpg", "img/q_c4.jpg", "img/g_c5.jpg"):
        _image(root / rel)
    (root / "train.csv").write_text("path,pid,camid\nimg/a.jpg,10,3\nimg/b.jpg,12,1\n"
                                    f"{root / 'img' / 'c.jpg'},10,1\n")
    (root / "query.txt").write_text("img/q_c4.jpg 5\n")  # space separated, no camid: the c<number> token
    (root / "gallery.txt").write_text("img/g_c5.jpg\t5\n")
    ds = build_dataset("list", root)
    # train pids 10, 12 -> 0, 1 (an absolute path works too); camids 1, 3 (given), 4, 5 (tokens) -> 0..3
    assert _names(ds.train) == [("a.jpg", 0, 1), ("b.jpg", 1, 0), ("c.jpg", 0, 0)]
    assert _names(ds.query) == [("q_c4.jpg", 5, 2)] and _names(ds.gallery) == [("g_c5.jpg", 5, 3)]
    (root / "train.csv").write_text("path,pid,camid\nimg/a.jpg,10,3\nimg/b.jpg,12,1\n")
    (root / "query.txt").write_text("img/q_c4.jpg,5,4\n")
    (root / "gallery.txt").write_text("img/g_c5.jpg,5,5\n")
    ds = build_dataset("list", root)
    assert _names(ds.train) == [("a.jpg", 0, 1), ("b.jpg", 1, 0)]  # camids 1, 3, 4, 5 -> 0..3
    assert ds.original_train_pids == [10, 12]
    assert _names(ds.query) == [("q_c4.jpg", 5, 2)] and _names(ds.gallery) == [("g_c5.jpg", 5, 3)]
    (root / "train.csv").write_text("img/a.jpg,10,3\nimg/b.jpg,12,x\n")
    with pytest.raises(DatasetLayoutError, match="camid 'x' on line 2"):
        build_dataset("list", root)
    (root / "train.csv").write_text("img/a.jpg,10,3\n")
    (root / "gallery.txt").write_text("img/g_c5.jpg,5,5\nimg/missing.jpg,5,5\n")
    with pytest.raises(DatasetLayoutError, match="1 of the 2 images .* do not exist.*missing.jpg"):
        build_dataset("list", root)


def test_list_unlabelled_without_cameras(tmp_path):
    root = tmp_path / "u"
    for rel in ("a.jpg", "b.jpg"):
        _image(root / rel)
    (root / "train.txt").write_text("a.jpg\nb.jpg\n")
    ds = build_dataset("list", root)
    assert [(pid, cam) for _, pid, cam in ds.train] == [(-1, 0), (-1, 1)]


def test_list_images(tmp_path):
    a = _image(tmp_path / "g" / "b" / "2.PNG")
    b = _image(tmp_path / "g" / "a.jpg")
    _image(tmp_path / "g" / ".pyreid_cache" / "x.jpg")  # hidden: skipped
    (tmp_path / "g" / "notes.txt").write_text("not an image")
    assert list_images(str(tmp_path / "g")) == sorted([a, b])
    (tmp_path / "l.txt").write_text("g/a.jpg,1\ng/b/2.PNG\n")
    assert list_images(str(tmp_path / "l.txt")) == [str(tmp_path / "g" / "a.jpg"), str(tmp_path / "g" / "b" / "2.PNG")]
    assert list_images(a) == [a]
    os.makedirs(tmp_path / "empty" / "sub")
    with pytest.raises(ValueError, match="no image files"):
        list_images(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="nope"):
        list_images(str(tmp_path / "nope"))
