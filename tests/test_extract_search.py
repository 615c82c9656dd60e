"""pyreid extract and pyreid search on the tiny trained run: the evaluator's features and ranking, bad files,
the gallery cache, and unlabelled data sets (training works, evaluation says it needs labels)."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from trained_run import trained_run

import pyreid
from pyreid.cli import main
from pyreid.data import build_dataset
from pyreid.evaluation.protocol import UnlabelledSplitError, evaluate_split
from pyreid.evaluation.visualize import ranked_list_size
from pyreid.extract import load_features
from pyreid.inference import InferenceModel


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def data(run):
    return build_dataset("synthetic", run["data"])


def _best(run):
    return os.path.join(run["out"], "best.pth")


def _folder_with_bad_images(data, folder):
    """Six good gallery images in two sub-folders, a truncated JPEG and a text file named .jpg."""
    good = []
    for i, (path, _, _) in enumerate(data.gallery[:6]):
        dest = folder / f"sub{i % 2}" / os.path.basename(path)
        os.makedirs(dest.parent, exist_ok=True)
        shutil.copy(path, dest)
        good.append(str(dest))
    raw = open(data.gallery[6][0], "rb").read()
    (folder / "sub0" / "truncated.jpg").write_bytes(raw[: len(raw) // 3])
    (folder / "notes.jpg").write_text("not an image")
    return sorted(good)


def test_extract_folder_skips_corrupt_images(run, data, tmp_path, capsys):
    good = _folder_with_bad_images(data, tmp_path / "photos")
    out = tmp_path / "feats.npz"
    assert main(["extract", "--checkpoint", _best(run), "--images", str(tmp_path / "photos"), "--out", str(out),
                 "--device", "cpu", "--workers", "0", "--batch-size", "3", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "6 images x 512 features" in printed and "skipped 2 unreadable" in printed
    saved = load_features(str(out))
    assert saved["paths"] == good  # recursive, sorted, the bad ones left out
    assert sorted(os.path.basename(p) for p in saved["failed"]) == ["notes.jpg", "truncated.jpg"]
    model = pyreid.load_model(_best(run), device="cpu")
    np.testing.assert_allclose(saved["features"], model.embed(good).numpy(), atol=1e-5)


def test_extract_dataset_split_and_formats(run, data, tmp_path):
    model = pyreid.load_model(_best(run), device="cpu")
    expected = evaluate_split(model.network, data, height=128, width=64, workers=0, progress=False)
    for ext in (".pt", ".npy", ".npz"):
        out = str(tmp_path / f"q{ext}")
        assert main(["extract", "--checkpoint", _best(run), "--dataset", "synthetic", "--data-root", run["data"],
                     "--split", "query", "--out", out, "--device", "cpu", "--workers", "0", "--no-progress"]) == 0
        saved = load_features(out)
        assert saved["paths"] == [p for p, _, _ in data.query]
        np.testing.assert_allclose(saved["features"], F.normalize(expected.query_features, dim=1).numpy(),
                                   atol=1e-5)
        if ext != ".npy":
            assert list(saved["pids"]) == [pid for _, pid, _ in data.query]
            assert list(saved["camids"]) == [cam for _, _, cam in data.query]
            assert set(saved["splits"]) == {"query"}
    assert os.path.isfile(tmp_path / "q_paths.txt")


def test_extract_errors_keep_what_was_written(run, tmp_path, capsys):
    out = tmp_path / "feats.npz"
    out.write_bytes(b"an earlier result")
    os.makedirs(tmp_path / "empty" / "sub")
    assert main(["extract", "--checkpoint", _best(run), "--images", str(tmp_path / "empty"), "--out", str(out)]) == 2
    assert "no image files" in capsys.readouterr().err
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pth")
    (tmp_path / "one.jpg").write_bytes(b"")
    assert main(["extract", "--checkpoint", str(tmp_path / "other.pth"), "--images", str(tmp_path / "one.jpg"),
                 "--out", str(out)]) == 2
    assert "is not a pyreid" in capsys.readouterr().err
    assert main(["extract", "--checkpoint", _best(run), "--images", str(tmp_path / "one.jpg"),
                 "--out", str(tmp_path / "feats.csv")]) == 2
    assert "the extension chooses the format" in capsys.readouterr().err
    assert main(["extract", "--checkpoint", _best(run), "--images", str(tmp_path / "one.jpg"), "--out", str(out),
                 "--device", "cpu", "--workers", "0", "--no-progress"]) == 2
    assert "none of the 1 images could be read" in capsys.readouterr().err
    assert out.read_bytes() == b"an earlier result"


@pytest.mark.parametrize("rerank", [False, True])
def test_search_ranks_like_the_evaluator(run, data, tmp_path, rerank, capsys):
    # The data set's own lists (its gallery folder also holds junk images the protocol drops).
    (tmp_path / "gallery.txt").write_text("".join(p + "\n" for p, _, _ in data.gallery))
    (tmp_path / "query.txt").write_text("".join(p + "\n" for p, _, _ in data.query))
    out = tmp_path / "results"
    args = ["search", "--checkpoint", _best(run), "--query", str(tmp_path / "query.txt"), "--gallery",
            str(tmp_path / "gallery.txt"), "--topk", "5",
            "--out", str(out), "--device", "cpu", "--workers", "0", "--no-progress", "--no-cache"]
    assert main(args + (["--rerank"] if rerank else [])) == 0
    model = pyreid.load_model(_best(run), device="cpu")
    expected = evaluate_split(model.network, data, height=128, width=64, workers=0, rerank=rerank, progress=False)
    record = json.loads((out / "search.json").read_text())
    q_paths = [p for p, _, _ in data.query]
    g_paths = [p for p, _, _ in data.gallery]
    assert [r["query"] for r in record["results"]] == q_paths
    for result in record["results"]:
        row = expected.distmat[q_paths.index(result["query"])]
        order = torch.sort(row, stable=True).indices[:5].tolist()
        assert [m["path"] for m in result["matches"]] == [g_paths[j] for j in order]
        np.testing.assert_allclose([m["distance"] for m in result["matches"]], row[order].numpy(), atol=1e-4)
    with Image.open(out / "ranked_lists.png") as im:
        assert im.size == ranked_list_size(len(q_paths), 5)
    printed = capsys.readouterr().out
    assert f"{len(q_paths)} queries, {len(g_paths)} gallery images" in printed and "    1. " in printed


def test_search_caches_the_gallery(run, data, tmp_path, monkeypatch):
    from pyreid.search import search

    gallery = tmp_path / "gallery"
    os.makedirs(gallery)
    for path, _, _ in data.gallery[:8]:
        shutil.copy(path, gallery)
    calls = []
    original = InferenceModel.embed_files

    def counting(self, paths, *args, **kwargs):
        calls.append(kwargs.get("desc"))
        return original(self, paths, *args, **kwargs)

    monkeypatch.setattr(InferenceModel, "embed_files", counting)
    query = data.query[0][0]
    first = search(_best(run), query, str(gallery), topk=3, device="cpu", progress=False)
    second = search(_best(run), query, str(gallery), topk=3, device="cpu", progress=False)
    assert calls == ["gallery"] and not first.gallery_cached and second.gallery_cached
    assert second.matches == first.matches
    assert len(os.listdir(gallery / ".pyreid_cache")) == 1
    # A changed file (its time) or a new one means new features.
    os.utime(next(gallery.glob("*.jpg")), (1, 1))
    third = search(_best(run), query, str(gallery), topk=3, device="cpu", progress=False)
    assert not third.gallery_cached and calls == ["gallery", "gallery"]


def test_search_bad_query(run, data, tmp_path, capsys):
    out = tmp_path / "results"
    os.makedirs(out)
    (out / "search.json").write_text("{}")
    (tmp_path / "q.jpg").write_text("not an image")
    gallery_dir = os.path.dirname(data.gallery[0][0])
    assert main(["search", "--checkpoint", _best(run), "--query", str(tmp_path / "q.jpg"), "--gallery", gallery_dir,
                 "--out", str(out), "--device", "cpu", "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert "cannot read image" in err and "q.jpg" in err
    (tmp_path / "q.gif.bak").write_text("")
    assert main(["search", "--checkpoint", _best(run), "--query", str(tmp_path / "q.gif.bak"), "--gallery",
                 gallery_dir, "--out", str(out)]) == 2
    assert "not an image" in capsys.readouterr().err
    assert (out / "search.json").read_text() == "{}"


def _unlabelled_folder(data, root):
    """train/ without identities (images straight in it), query/ and gallery/ by identity."""
    for split, items in (("train", data.train), ("query", data.query), ("gallery", data.gallery)):
        for path, pid, _ in items:
            dest = root / split / ("" if split == "train" else str(pid)) / os.path.basename(path)
            os.makedirs(dest.parent, exist_ok=True)
            shutil.copy(path, dest)
    return root


def test_unsupervised_training_on_an_unlabelled_folder(run, data, tmp_path):
    from pyreid.training import train

    root = _unlabelled_folder(data, tmp_path / "mine")
    ds = build_dataset("folder", root)
    assert ds.num_train_pids == 0 and {pid for _, pid, _ in ds.train} == {-1}
    # Market-style names carry c<camera> tokens: the cameras come out as in the synthetic set.
    assert sorted({c for _, _, c in ds.query}) == sorted({c for _, _, c in data.query})
    result = train("cluster-contrast", config="cluster_contrast_synthetic_cpu", dataset="folder", data_root=str(root),
                   out=str(tmp_path / "cc"), epochs=1, iters=2, batch_size=8, num_instances=2, workers=0,
                   progress=False, plots=False, device="cpu", weights=_best(run), options={"eps": 0.6, "k1": 10})
    assert [h["epoch"] for h in result["history"]] == [0, 1]
    assert 0 <= result["final"]["mAP"] <= 1
    assert "ari" not in result["history"][-1]  # no identities to compare the pseudo labels with


def test_training_on_images_without_any_identity_trains_and_says_it_cannot_evaluate(run, data, tmp_path):
    from pyreid.training import train

    root = tmp_path / "nothing_labelled"
    for split, items in (("train", data.train), ("query", data.query[:3]), ("gallery", data.gallery[:5])):
        os.makedirs(root / split, exist_ok=True)
        for path, _, _ in items:
            shutil.copy(path, root / split)
    out = tmp_path / "cc_unlabelled"
    result = train("cluster-contrast", config="cluster_contrast_synthetic_cpu", dataset="folder", data_root=str(root),
                   out=str(out), epochs=1, iters=2, batch_size=8, num_instances=2, workers=0, progress=False,
                   plots=False, device="cpu", weights=_best(run), options={"eps": 0.6, "k1": 10})
    assert [h["epoch"] for h in result["history"]] == [0, 1] and result["final"] == {}
    assert not any("mAP" in h for h in result["history"]) and "loss" in result["history"][1]
    log = (out / "train.log").read_text()
    assert log.count("is not evaluated") == 1 and "needs identity labels" in log
    assert (out / "checkpoint.pth").is_file() and not (out / "best.pth").exists()


def test_evaluation_of_unlabelled_images_says_it_needs_labels(run, data, tmp_path, capsys):
    root = tmp_path / "plain"
    for split, items in (("query", data.query[:3]), ("gallery", data.gallery[:5])):
        for path, _, _ in items:
            os.makedirs(root / split, exist_ok=True)
            shutil.copy(path, root / split)
    ds = build_dataset("folder", root)
    model = pyreid.load_model(_best(run), device="cpu")
    with pytest.raises(UnlabelledSplitError, match="needs identity labels: 8 query/gallery images"):
        evaluate_split(model.network, ds, height=128, width=64, workers=0, progress=False)
    assert main(["eval", "--checkpoint", _best(run), "--dataset", "folder", "--data-root", str(root),
                 "--out", str(tmp_path / "ev"), "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "needs identity labels" in err and "nan" not in err.lower()
