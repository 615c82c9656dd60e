"""build_dataset on tiny trees written by the tests, for every layout, plus ImageDataset."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from pyreid.data import DatasetLayoutError, ImageDataset, build_dataset, build_transforms
from pyreid.data.synthetic import MARKER_FILE


def _touch_image(path, colour=(120, 60, 30)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (16, 32), colour).save(path)


def _write_tree(folder, files):
    """files: {split_folder: [file names]}"""
    for split, names in files.items():
        os.makedirs(os.path.join(folder, split), exist_ok=True)
        for name in names:
            _touch_image(os.path.join(folder, split, name))
    return str(folder)


MARKET_FILES = {
    "bounding_box_train": [
        "0002_c1s1_000451_03.jpg",
        "0002_c2s1_000301_01.jpg",
        "0007_c3s1_000551_01.jpg",
        "0010_c6s2_000101_02.jpg",
        "0010_c1s1_000101_02.jpg",
    ],
    "query": ["0001_c1s1_001051_00.jpg", "0003_c4s1_000151_00.jpg"],
    "bounding_box_test": [
        "0001_c2s1_000301_01.jpg",
        "0003_c5s1_000401_01.jpg",
        "0000_c1s1_000151_01.jpg",  # distractor: kept
        "-1_c3s1_000401_03.jpg",  # junk: dropped
    ],
}

DUKE_FILES = {
    "bounding_box_train": ["0005_c2_f0046985.jpg", "0005_c5_f0051341.jpg", "0008_c8_f0030000.jpg"],
    "query": ["0001_c1_f0001000.jpg"],
    "bounding_box_test": ["0001_c7_f0002000.jpg", "0002_c3_f0003000.jpg"],
}


def _names(items):
    return sorted((os.path.basename(p), pid, cam) for p, pid, cam in items)


def test_market1501_parsing(tmp_path):
    root = _write_tree(tmp_path / "Market-1501-v15.09.15", MARKET_FILES)
    ds = build_dataset("market1501", root)
    # train pids 2, 7, 10 -> 0, 1, 2 in sorted order; cameras c1..c6 -> 0..5
    assert _names(ds.train) == [
        ("0002_c1s1_000451_03.jpg", 0, 0),
        ("0002_c2s1_000301_01.jpg", 0, 1),
        ("0007_c3s1_000551_01.jpg", 1, 2),
        ("0010_c1s1_000101_02.jpg", 2, 0),
        ("0010_c6s2_000101_02.jpg", 2, 5),
    ]
    assert ds.original_train_pids == [2, 7, 10]
    assert _names(ds.query) == [("0001_c1s1_001051_00.jpg", 1, 0), ("0003_c4s1_000151_00.jpg", 3, 3)]
    assert _names(ds.gallery) == [
        ("0000_c1s1_000151_01.jpg", 0, 0),
        ("0001_c2s1_000301_01.jpg", 1, 1),
        ("0003_c5s1_000401_01.jpg", 3, 4),
    ]
    assert all(os.path.isfile(p) for p, _, _ in ds.train + ds.query + ds.gallery)
    assert ds.stats() == {
        "train": {"ids": 3, "images": 5, "cameras": 4},
        "query": {"ids": 2, "images": 2, "cameras": 2},
        "gallery": {"ids": 3, "images": 3, "cameras": 3},
    }
    assert ds.num_train_pids == 3
    table = ds.summary()
    assert "train" in table and "gallery" in table and "# cameras" in table


def test_market1501_ignores_non_images(tmp_path):
    root = _write_tree(tmp_path, MARKET_FILES)
    open(os.path.join(root, "bounding_box_train", "Thumbs.db"), "w").close()
    assert len(build_dataset("market1501", root).train) == 5


def test_dukemtmcreid_parsing(tmp_path):
    root = _write_tree(tmp_path / "DukeMTMC-reID", DUKE_FILES)
    ds = build_dataset("dukemtmcreid", root)
    assert _names(ds.train) == [
        ("0005_c2_f0046985.jpg", 0, 1),
        ("0005_c5_f0051341.jpg", 0, 4),
        ("0008_c8_f0030000.jpg", 1, 7),
    ]
    assert _names(ds.query) == [("0001_c1_f0001000.jpg", 1, 0)]
    assert _names(ds.gallery) == [("0001_c7_f0002000.jpg", 1, 6), ("0002_c3_f0003000.jpg", 2, 2)]


def test_duke_rejects_ninth_camera(tmp_path):
    files = {**DUKE_FILES, "query": ["0001_c9_f0001000.jpg"]}
    root = _write_tree(tmp_path, files)
    with pytest.raises(DatasetLayoutError, match="c9.*outside c1..c8"):
        build_dataset("dukemtmcreid", root)


def _write_msmt(folder, val=True):
    train = ["0000/0000_000_01_0303morning_0015_0.jpg 0", "0000/0000_001_05_0303morning_0016_0.jpg 0",
             "0003/0003_000_15_0303noon_0100_1.jpg 3"]
    val_lines = ["0001/0001_000_02_0303afternoon_0020_0.jpg 1"]
    query = ["0000/0000_000_07_0303morning_0036_1.jpg 0"]
    gallery = ["0000/0000_003_11_0303morning_0040_0.jpg 0", "0002/0002_000_03_0303noon_0041_0.jpg 2"]
    for sub, lines in (("train", train + val_lines), ("test", query + gallery)):
        for line in lines:
            _touch_image(os.path.join(folder, sub, line.split()[0]))
    for name, lines in (("list_train.txt", train), ("list_val.txt", val_lines if val else []),
                        ("list_query.txt", query), ("list_gallery.txt", gallery)):
        with open(os.path.join(folder, name), "w") as f:
            f.write("\n".join(lines) + "\n")
    return str(folder)


def test_msmt17_parsing(tmp_path):
    root = _write_msmt(tmp_path / "MSMT17_V1")
    ds = build_dataset("msmt17", root)
    # train = train + val lists; labels 0, 1, 3 -> 0, 1, 2; camera = third "_" field, 1-based -> 0-based
    assert _names(ds.train) == [
        ("0000_000_01_0303morning_0015_0.jpg", 0, 0),
        ("0000_001_05_0303morning_0016_0.jpg", 0, 4),
        ("0001_000_02_0303afternoon_0020_0.jpg", 1, 1),
        ("0003_000_15_0303noon_0100_1.jpg", 2, 14),
    ]
    assert ds.original_train_pids == [0, 1, 3]
    assert _names(ds.query) == [("0000_000_07_0303morning_0036_1.jpg", 0, 6)]
    assert _names(ds.gallery) == [("0000_003_11_0303morning_0040_0.jpg", 0, 10),
                                  ("0002_000_03_0303noon_0041_0.jpg", 2, 2)]
    assert all(os.path.isfile(p) for p, _, _ in ds.train + ds.query + ds.gallery)
    assert all(os.sep + "train" + os.sep in p for p, _, _ in ds.train)
    assert all(os.sep + "test" + os.sep in p for p, _, _ in ds.query + ds.gallery)


def test_msmt17_malformed_line(tmp_path):
    root = _write_msmt(tmp_path / "MSMT17_V1")
    with open(os.path.join(root, "list_query.txt"), "a") as f:
        f.write("0004/garbage.jpg\n")
    with pytest.raises(DatasetLayoutError, match=r"malformed line 2 of .*list_query.txt"):
        build_dataset("msmt17", root)


def test_msmt17_list_pointing_nowhere(tmp_path):
    root = _write_msmt(tmp_path / "MSMT17_V1")
    with open(os.path.join(root, "list_gallery.txt"), "w") as f:
        f.write("9999/9999_000_01_0303morning_0001_0.jpg 9999\n")
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        build_dataset("msmt17", root)


def test_msmt17_missing_list_names_layout(tmp_path):
    root = _write_msmt(tmp_path / "MSMT17_V1")
    os.remove(os.path.join(root, "list_val.txt"))
    with pytest.raises(DatasetLayoutError, match=r"(?s)missing list_val.txt.*list_train.txt"):
        build_dataset("msmt17", str(tmp_path))


def test_root_may_be_a_parent(tmp_path):
    _write_tree(tmp_path / "data" / "market" / "Market-1501-v15.09.15", MARKET_FILES)
    _write_tree(tmp_path / "data" / "duke" / "DukeMTMC-reID", DUKE_FILES)
    _write_msmt(tmp_path / "data" / "MSMT17_V1")
    # Market and Duke share the folder layout; file names tell them apart.
    market = build_dataset("market1501", tmp_path)
    assert market.root.endswith("Market-1501-v15.09.15") and len(market.train) == 5
    duke = build_dataset("dukemtmcreid", tmp_path / "data")
    assert duke.root.endswith("DukeMTMC-reID") and len(duke.train) == 3
    assert build_dataset("msmt17", tmp_path).root.endswith("MSMT17_V1")


def test_two_candidates_is_an_error_naming_both(tmp_path):
    _write_tree(tmp_path / "a" / "Market-1501", MARKET_FILES)
    _write_tree(tmp_path / "b" / "Market-1501", MARKET_FILES)
    with pytest.raises(DatasetLayoutError, match=r"several data set folders.*a.Market-1501.*b.Market-1501"):
        build_dataset("market1501", tmp_path)


def test_synthetic_and_market_side_by_side(tmp_path):
    # A synthetic tree (Market names + marker file) next to a real Market one.
    _write_tree(tmp_path / "Market-1501", MARKET_FILES)
    synth = _write_tree(tmp_path / "synth", MARKET_FILES)
    open(os.path.join(synth, MARKER_FILE), "w").close()
    assert build_dataset("synthetic", tmp_path).root == os.path.abspath(synth)
    assert build_dataset("market1501", tmp_path).root.endswith("Market-1501")


def test_missing_root(tmp_path):
    with pytest.raises(DatasetLayoutError, match=r"(?s)does not exist.*bounding_box_train"):
        build_dataset("market1501", tmp_path / "nowhere")


def test_empty_root_names_expected_layout(tmp_path):
    with pytest.raises(DatasetLayoutError, match=r"(?s)no data set folder found.*bounding_box_train/.*query/.*bounding_box_test/"):
        build_dataset("market1501", tmp_path)


def test_missing_split_folder_is_reported(tmp_path):
    files = {k: v for k, v in MARKET_FILES.items() if k != "query"}
    _write_tree(tmp_path / "Market-1501", files)
    with pytest.raises(DatasetLayoutError, match=r"(?s)Market-1501: missing query/.*Expected layout"):
        build_dataset("market1501", tmp_path)


def test_wrong_names_for_the_data_set(tmp_path):
    root = _write_tree(tmp_path / "DukeMTMC-reID", DUKE_FILES)
    with pytest.raises(DatasetLayoutError, match=r"not of the form '0002_c1s1_000451_03.jpg'"):
        build_dataset("market1501", root)


def test_malformed_file_name(tmp_path):
    files = {**MARKET_FILES, "query": MARKET_FILES["query"] + ["0004_cXs1_0001.jpg"]}
    root = _write_tree(tmp_path, files)
    with pytest.raises(DatasetLayoutError, match=r"unexpected file name .*0004_cXs1_0001.jpg"):
        build_dataset("market1501", root)


def test_no_training_images(tmp_path):
    root = _write_tree(tmp_path, {**MARKET_FILES, "bounding_box_train": []})
    with pytest.raises(DatasetLayoutError, match="no training images"):
        build_dataset("market1501", root)


def test_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="unknown data set 'cuhk03'.*market1501"):
        build_dataset("cuhk03", tmp_path)


def test_name_spelling_is_forgiving(tmp_path):
    root = _write_tree(tmp_path, MARKET_FILES)
    assert len(build_dataset("Market-1501", root).train) == 5


def test_image_dataset_returns_image_pid_camid_index(tmp_path):
    root = _write_tree(tmp_path, MARKET_FILES)
    ds = build_dataset("market1501", root)
    data = ImageDataset(ds.train, build_transforms(64, 32, train=False))
    assert len(data) == 5
    img, pid, camid, index = data[3]
    assert img.shape == (3, 64, 32) and img.dtype == torch.float32
    assert (pid, camid, index) == (ds.train[3][1], ds.train[3][2], 3)
    # Without a transform the PIL RGB image comes back.
    pil, _, _, _ = ImageDataset(ds.train)[0]
    assert pil.mode == "RGB" and pil.size == (16, 32)
    assert np.abs(np.asarray(pil)[0, 0].astype(int) - [120, 60, 30]).max() <= 2  # JPEG rounding


def test_unreadable_image_names_the_file(tmp_path):
    root = _write_tree(tmp_path, MARKET_FILES)
    ds = build_dataset("market1501", root)
    bad = ds.train[1][0]
    with open(bad, "wb") as f:
        f.write(b"not a jpeg")
    data = ImageDataset(ds.train)
    with pytest.raises(OSError, match="cannot read image .*0002_c2s1_000301_01.jpg"):
        data[1]
    os.remove(bad)
    with pytest.raises(OSError, match="cannot read image .*0002_c2s1_000301_01.jpg"):
        data[1]
