"""TriNet as published (Hermans, Beyer and Leibe 2017): the head, the exponential learning-rate decay,
the training crops and the ten-view test-time augmentation, and the triplet_* configs that run them."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pyreid.data.transforms import build_transforms, five_crops, pre_crop_size
from pyreid.evaluation.evaluator import extract_features
from pyreid.models import build_model
from pyreid.training import TrainConfig
from pyreid.training.config import ConfigError
from pyreid.training.optim import LearningRateSchedule, build_optimizer, build_scheduler
from pyreid.training.run import resolve_config


def test_head_layers_and_shapes():
    torch.manual_seed(0)
    model = build_model("resnet18", embedding_dim=128, embedding_hidden_dim=1024, neck="none", normalize=False,
                        last_stride=2)
    layers = list(model.embedding)
    assert [type(layer) for layer in layers] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    fc1, bn, _, fc2 = layers
    assert (fc1.in_features, fc1.out_features, fc1.bias) == (512, 1024, None)
    assert (bn.num_features, bn.eps, bn.momentum) == (1024, 1e-5, 0.1)
    assert (fc2.in_features, fc2.out_features) == (1024, 128) and torch.all(fc2.bias == 0)
    # Orthogonal initialisation of the output layer: its 128 rows are orthonormal.
    assert torch.allclose(fc2.weight @ fc2.weight.T, torch.eye(128), atol=1e-5)
    assert isinstance(model.neck, nn.Identity) and not model.normalize and model.feature_dim == 128
    images = torch.randn(4, 3, 128, 64)
    out = model(images)
    assert out.features.shape == out.neck_features.shape == (4, 128) and out.logits is None
    assert torch.equal(out.features, out.neck_features)
    assert not torch.allclose(out.features.norm(dim=1), torch.ones(4)), "TriNet's embedding is not normalised"
    model.eval()
    with torch.no_grad():
        assert model(images).shape == (4, 128)
    # The hidden layer's output goes through the ReLU before the last FC.
    hidden = {}
    layers[2].register_forward_hook(lambda m, i, o: hidden.setdefault("relu", o))
    with torch.no_grad():
        model(images)
    assert hidden["relu"].shape == (4, 1024) and (hidden["relu"] >= 0).all()
    rebuilt = build_model(**model.build_args)
    assert rebuilt.build_args["embedding_hidden_dim"] == 1024
    with pytest.raises(ValueError, match="embedding_hidden_dim"):
        build_model("resnet18", embedding_hidden_dim=1024)


def test_triplet_algorithm_builds_the_trinet_head():
    from pyreid.algorithms.triplet import Triplet

    _, config, options = resolve_config("triplet", config="triplet_market1501", arch="resnet18", pretrained=False)
    algorithm = Triplet.__new__(Triplet)  # build_model reads only the config, the options and the data set
    algorithm.config, algorithm.options = config, options
    algorithm.data = {"train": type("D", (), {"num_train_pids": 20})()}
    model = algorithm.build_model()
    assert model.build_args["embedding_hidden_dim"] == 1024 and model.build_args["embedding_dim"] == 128
    assert model.build_args["last_stride"] == 2 and model.build_args["neck"] == "none"
    assert not model.build_args["normalize"]
    transform = algorithm.transform()
    names = [type(t).__name__ for t in transform.transforms]
    assert names == ["Resize", "RandomCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    assert transform.transforms[0].size == (288, 144) and transform.transforms[1].size == (256, 128)


def test_shipped_configs_are_the_published_recipe():
    for dataset in ("market1501", "dukemtmcreid", "msmt17"):
        _, c, o = resolve_config("triplet", config=f"triplet_{dataset}")
        c.validate()
        o.validate()
        assert (c.arch, c.pooling, c.last_stride, c.height, c.width) == ("resnet50", "avg", 2, 256, 128)
        assert (c.batch_size // c.num_instances, c.num_instances) == (18, 4)
        assert c.epochs * c.iters == 25_000 and c.milestones[0] * c.iters == 15_000
        assert (c.optimizer, c.lr, c.weight_decay, c.scheduler, c.gamma, c.warmup_epochs) == (
            "adam", 3e-4, 0.0, "exponential", 0.001, 0.0)
        assert (c.flip_test, c.test_crops) == (True, "five")
        assert (o.head, o.hidden_dim, o.embedding_dim, o.dropout, o.augmentation, o.margin, o.metric,
                o.id_weight) == ("trinet", 1024, 128, 0.0, "trinet", None, "euclidean", 0.0)
    # The small CPU preset keeps pyreid's embedding head.
    _, c, o = resolve_config("triplet", config="triplet_synthetic_cpu")
    assert o.head == "embedding" and c.scheduler == "step"


def test_learning_rate_curve_is_the_papers_formula():
    _, config, _ = resolve_config("triplet", config="triplet_market1501")
    schedule = LearningRateSchedule(config, iters_per_epoch=config.iters)

    def published(t):  # Hermans et al., eq. (4): t0 = 15,000, t1 = 25,000, decayed to x0.001
        return 3e-4 if t <= 15_000 else 3e-4 * 0.001 ** ((t - 15_000) / (25_000 - 15_000))

    for step in (0, 1, 7_500, 14_999, 15_000, 15_001, 17_500, 20_000, 22_222, 24_999, 25_000):
        assert config.lr * schedule(step) == pytest.approx(published(step), rel=1e-12)
    assert config.lr * schedule(20_000) == pytest.approx(3e-4 * math.sqrt(0.001))


def test_scheduler_applies_the_curve_every_iteration():
    config = TrainConfig(lr=1.0, epochs=4, warmup_epochs=0, scheduler="exponential", milestones=[2], gamma=0.01)
    config.validate()
    model = nn.Linear(2, 1)
    optimizer = build_optimizer(model.parameters(), config)
    scheduler = build_scheduler(optimizer, config, iters_per_epoch=5)
    seen = []
    for _ in range(20):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [1.0] * 11 + [0.01 ** ((step - 10) / 10) for step in range(11, 20)]
    assert seen == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("changes, match", [
    (dict(milestones=[10, 20]), "one milestone"),
    (dict(milestones=[60]), "one milestone"),
    (dict(milestones=[10], gamma=2.0), "final factor"),
])
def test_exponential_schedule_errors(changes, match):
    base = dict(epochs=50, scheduler="exponential", milestones=[30], gamma=0.001)
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**{**base, **changes}).validate()


def _hand_made(height=288, width=144):
    """A 1 x 3 x H x W batch whose pixel (y, x) holds 1000 y + x in every channel."""
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return (1000.0 * y + x).expand(1, 3, height, width).clone()


def test_five_crops_are_the_corners_and_the_centre():
    views = five_crops(_hand_made(), 256, 128)
    assert len(views) == 5 and all(v.shape == (1, 3, 256, 128) for v in views)
    # Each view's top-left pixel names its offset; a crop is a contiguous window.
    origins = [(int(v[0, 0, 0, 0]) // 1000, int(v[0, 0, 0, 0]) % 1000) for v in views]
    assert origins == [(0, 0), (0, 16), (32, 0), (32, 16), (16, 8)]
    for (top, left), view in zip(origins, views):
        assert torch.equal(view, _hand_made()[:, :, top:top + 256, left:left + 128])
    with pytest.raises(ValueError, match="cannot cut"):
        five_crops(_hand_made(100, 50), 256, 128)
    with pytest.raises(ValueError, match="B x C x H x W"):
        five_crops(torch.zeros(3, 288, 144), 256, 128)


class _Corners(nn.Module):
    """Features = each view's top-left and bottom-right pixel; records the view sizes it saw."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def forward(self, x):
        self.sizes.append(tuple(x.shape[2:]))
        return torch.stack([x[:, 0, 0, 0], x[:, 0, -1, -1]], dim=1)


def test_ten_views_are_averaged():
    model = _Corners()
    batch = (_hand_made(), torch.tensor([7]), torch.tensor([1]), torch.tensor([0]))
    features, pids, _ = extract_features(model, [batch], flip=True, progress=False, crop=(256, 128))
    assert model.sizes == [(256, 128)] * 10
    origins = [(0, 0), (0, 16), (32, 0), (32, 16), (16, 8)]
    top_left = [1000 * t + left for t, left in origins]  # the five crops
    top_left += [1000 * t + left + 127 for t, left in origins]  # their mirrors start at the right edge
    bottom_right = [1000 * (t + 255) + left + 127 for t, left in origins]
    bottom_right += [1000 * (t + 255) + left for t, left in origins]
    assert features.tolist() == [[pytest.approx(np.mean(top_left)), pytest.approx(np.mean(bottom_right))]]
    assert pids.tolist() == [7]
    # Five views without flip; the whole image alone without crop.
    model.sizes.clear()
    features, _, _ = extract_features(model, [batch], progress=False, crop=(256, 128))
    assert len(model.sizes) == 5 and features[0, 0] == pytest.approx(np.mean(top_left[:5]))
    model.sizes.clear()
    extract_features(model, [batch], progress=False)
    assert model.sizes == [(288, 144)]


def test_training_crop_and_test_resize():
    assert pre_crop_size(256, 128) == (288, 144)
    img = Image.fromarray((np.arange(18 * 9 * 3) % 251).astype(np.uint8).reshape(18, 9, 3))
    test = build_transforms(16, 8, train=False, crop_from=(18, 9))
    whole = test(img)
    assert whole.shape == (3, 18, 9)
    train = build_transforms(16, 8, train=True, pad=0, erasing_prob=0, crop_from=(18, 9))
    seen = set()
    for seed in range(40):
        torch.manual_seed(seed)
        out = train(img)
        assert out.shape == (3, 16, 8)
        # The output is a 16 x 8 window of the resized image, possibly mirrored.
        matches = [(top, left, flip) for top in range(3) for left in range(2) for flip in (False, True)
                   if torch.allclose(out, (lambda w: w.flip(2) if flip else w)(whole[:, top:top + 16, left:left + 8]))]
        assert matches
        seen.update(matches)
    assert {top for top, _, _ in seen} == {0, 1, 2} and {flip for _, _, flip in seen} == {False, True}
    with pytest.raises(ValueError, match="at least the output size"):
        build_transforms(16, 8, crop_from=(12, 9))


def test_tiny_trinet_run(tmp_path):
    """A few iterations of the published recipe at toy size: runs and evaluates with the ten views."""
    from pyreid.algorithms.triplet import Triplet
    from pyreid.data import SynthConfig, generate
    from pyreid.training import Engine

    data = str(tmp_path / "synthetic")
    generate(data, SynthConfig(ids_train=6, ids_test=4, cameras=3, images_per_id=4), progress=False)
    _, config, options = resolve_config(
        "triplet", config="triplet_market1501", dataset="synthetic", data_root=data, arch="resnet18",
        pretrained=False, height=64, width=32, batch_size=8, num_instances=2, epochs=2, iters=2, milestones=[1],
        eval_step=2, workers=0, progress=False, plots=False, device="cpu", out=str(tmp_path / "run"))
    result = Engine(config, options, Triplet).run()
    assert all(math.isfinite(h["loss"]) for h in result["history"] if "loss" in h)
    with open(tmp_path / "run" / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["config"]["test_crops"] == "five" and metrics["config"]["scheduler"] == "exponential"
    evaluated = [h for h in metrics["history"] if "mAP" in h]
    assert [h["epoch"] for h in evaluated] == [0, 2] and all(0 <= h["mAP"] <= 1 for h in evaluated)
    # Recorded after each epoch's last step: constant to the milestone (epoch 1), x0.001 at the end.
    assert [h["lr"] for h in metrics["history"] if "lr" in h] == pytest.approx([3e-4, 3e-7])
