"""pyreid.load_model(...).embed(...): the evaluator's features from paths, PIL images, arrays and tensors."""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from trained_run import trained_run

import pyreid
from pyreid.data import build_dataset
from pyreid.evaluation.protocol import evaluate_split
from pyreid.evaluation.sharded import extract_items
from pyreid.training.checkpoint import CheckpointError
from pyreid.training.evaluate import model_from_checkpoint


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def data(run):
    return build_dataset("synthetic", run["data"])


def test_load_model_takes_the_runs_settings(run):
    model = pyreid.load_model(os.path.join(run["out"], "best.pth"), device="cpu")
    assert (model.height, model.width) == (128, 64)
    assert not model.training and not model.network.training
    assert model.device == torch.device("cpu")
    assert model.info["algorithm"] == "supervised" and model.info["config"]["arch"] == "resnet18"


@pytest.mark.parametrize("flip", [False, True])
def test_embed_paths_equals_the_evaluator(run, data, flip):
    model = pyreid.load_model(os.path.join(run["out"], "best.pth"), device="cpu", flip=flip)
    result = evaluate_split(model.network, data, height=128, width=64, batch_size=16, workers=0, flip=flip,
                            progress=False)
    paths = [p for p, _, _ in data.query]
    feats = model.embed(paths, batch_size=7)  # another batching than the evaluator's
    assert feats.shape == (len(paths), model.feature_dim)
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(len(paths)))
    torch.testing.assert_close(feats, F.normalize(result.query_features, dim=1), atol=1e-5, rtol=1e-4)
    # ... so the ranking the evaluator scores is the one these features give
    gallery = model.embed([p for p, _, _ in data.gallery])
    assert torch.equal(torch.cdist(feats, gallery).argsort(dim=1)[:, :3], result.distmat.argsort(dim=1)[:, :3])


def test_embed_pil_numpy_and_tensors_agree_with_paths(run, data):
    model = pyreid.load_model(os.path.join(run["out"], "best.pth"), device="cpu")
    paths = [p for p, _, _ in data.gallery[:6]]
    by_path = model.embed(paths)
    assert torch.cdist(by_path, by_path).triu(1).max() > 1e-3  # different images, different features
    pil = [Image.open(p).convert("RGB") for p in paths]
    torch.testing.assert_close(model.embed(pil), by_path, atol=1e-5, rtol=1e-4)
    arrays = [np.asarray(im) for im in pil]  # H x W x 3 uint8, already at the run's 128 x 64
    torch.testing.assert_close(model.embed(arrays), by_path, atol=1e-5, rtol=1e-4)
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # B x 3 x H x W uint8
    torch.testing.assert_close(model.embed(batch), by_path, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(model.embed(batch.float() / 255), by_path, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(model.embed(batch[0]), by_path[:1], atol=1e-5, rtol=1e-4)
    # Another size is resized (bicubic, antialiased, like PIL): nearly the same features
    big = [im.resize((128, 256), Image.BICUBIC) for im in pil]
    big_batch = torch.from_numpy(np.stack([np.asarray(im) for im in big])).permute(0, 3, 1, 2)
    cos = (model.embed(big_batch) * model.embed(big)).sum(dim=1)
    assert cos.min() > 0.99


def test_checkpoint_pth_gives_the_evaluated_model(run, data):
    path = os.path.join(run["out"], "checkpoint.pth")
    model = pyreid.load_model(path, device="cpu")
    reference = model_from_checkpoint(path)
    feats, _, _ = extract_items(reference, data.query, height=128, width=64, num_workers=0, progress=False)
    torch.testing.assert_close(model.embed([p for p, _, _ in data.query]), F.normalize(feats, dim=1),
                               atol=1e-5, rtol=1e-4)


def test_bad_inputs(run, tmp_path, data):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"load_model: .*other.pth is not a pyreid"):
        pyreid.load_model(tmp_path / "other.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth .* cannot be read"):
        pyreid.load_model(tmp_path / "junk.pth")
    model = pyreid.load_model(os.path.join(run["out"], "best.pth"), device="cpu")
    (tmp_path / "notes.jpg").write_text("hello")
    with pytest.raises(OSError, match="notes.jpg"):
        model.embed(str(tmp_path / "notes.jpg"))
    with pytest.raises(ValueError, match="3 x H x W"):
        model.embed(torch.zeros(2, 4, 8, 8))
    with pytest.raises(TypeError, match="cannot read an image from a dict"):
        model.embed([{}])
    # embed_files skips what it cannot read and says which
    paths = [data.query[0][0], str(tmp_path / "notes.jpg"), data.query[1][0]]
    result = model.embed_files(paths, batch_size=2)
    assert result.paths == [paths[0], paths[2]] and result.rows == [0, 2]
    assert [p for p, _ in result.failed] == [paths[1]]
    torch.testing.assert_close(result.features, model.embed([paths[0], paths[2]]), atol=1e-5, rtol=1e-4)


def test_import_pyreid_stays_lazy():
    import subprocess
    import sys

    code = "import sys, pyreid; assert 'load_model' in dir(pyreid); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
