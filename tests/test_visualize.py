"""The PNG pictures: written, non-empty, of the stated pixel size."""

import numpy as np
import pytest
from PIL import Image

from pyreid.evaluation import evaluate
from pyreid.evaluation.visualize import plot_cmc, plot_embedding, plot_ranked_lists, ranked_list_size


def _write_images(folder, colours):
    folder.mkdir()
    paths = []
    for i, colour in enumerate(colours):
        path = folder / f"{i:04d}.jpg"
        Image.new("RGB", (32, 64), tuple(int(c) for c in colour)).save(path)
        paths.append(str(path))
    return paths


def test_ranked_lists(tmp_path):
    rng = np.random.default_rng(0)
    q_pids, q_cams = np.array([0, 1, 2]), np.array([0, 0, 0])
    g_pids, g_cams = rng.integers(0, 4, 14), rng.integers(0, 3, 14)
    palette = rng.integers(0, 256, (4, 3))
    q_paths = _write_images(tmp_path / "q", palette[q_pids])
    g_paths = _write_images(tmp_path / "g", palette[g_pids])
    distmat = rng.random((3, 14)).astype(np.float32)
    out = tmp_path / "plots" / "ranked.png"
    plot_ranked_lists(distmat, q_paths, g_paths, q_pids, g_pids, q_cams, g_cams, out, query_indices=[0, 2], topk=10)
    assert out.stat().st_size > 1000
    with Image.open(out) as image:
        assert image.size == ranked_list_size(2, 10) == (11 * 64, 2 * (128 + 24))
        pixels = np.asarray(image.convert("RGB"))
    # Green and red frames are present.
    assert ((pixels[..., 1] > 150) & (pixels[..., 0] < 50)).any()
    assert ((pixels[..., 0] > 180) & (pixels[..., 1] < 50)).any()


def test_cmc_curve(tmp_path):
    rng = np.random.default_rng(1)
    curves = {}
    for name, noise in (("good", 0.1), ("poor", 1.0)):
        q, g = rng.integers(0, 20, 40), rng.integers(0, 20, 200)
        d = np.abs(q[:, None] - g[None, :]).astype(np.float32) + noise * 20 * rng.random((40, 200), dtype=np.float32)
        curves[name] = evaluate(d, q, g, np.zeros(40, int), np.ones(200, int), max_rank=20)["cmc"]
    out = plot_cmc(curves, tmp_path / "cmc.png", size=(500, 400))
    with Image.open(out) as image:
        assert image.size == (500, 400)
    assert (tmp_path / "cmc.png").stat().st_size > 1000


def test_embedding(tmp_path):
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(5), 12)
    labels[:4] = -1
    features = rng.normal(size=(5, 16))[np.maximum(labels, 0)] + 0.1 * rng.normal(size=(60, 16))
    out = plot_embedding(features, labels, tmp_path / "tsne.png", size=(400, 300))
    with Image.open(out) as image:
        assert image.size == (400, 300)
    with pytest.raises(ValueError, match="do not match"):
        plot_embedding(features, labels[:10], tmp_path / "bad.png")
