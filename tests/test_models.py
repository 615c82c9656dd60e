"""build_model: every backbone at 128 x 64 on CPU, pooling, neck, classifier, weights."""

import urllib.error

import pytest
import torch

from pyreid.models import ARCHS, GeneralizedMeanPooling, PretrainedWeightsUnavailable, ReIDModel, build_model
from pyreid.models.pooling import build_pooling


@pytest.mark.parametrize("arch", list(ARCHS))
def test_forward_every_backbone(arch):
    torch.manual_seed(0)
    model = build_model(arch, num_classes=7)
    images = torch.randn(2, 3, 128, 64)
    with torch.no_grad():  # train-mode forward (batch statistics), no graph needed here
        out = model(images)
    dim = ARCHS[arch]
    assert out.features.shape == (2, dim) and out.neck_features.shape == (2, dim)
    assert out.logits.shape == (2, 7)
    assert torch.isfinite(out.logits).all()
    model.eval()
    with torch.no_grad():
        features = model(images)
    assert features.shape == (2, dim)


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2", "googlenet"])
def test_last_stride_doubles_the_map(arch):
    images = torch.randn(1, 3, 64, 32)  # overall stride 32 -> 2 x 1, last stride 1 -> 4 x 2
    with torch.no_grad():
        one = build_model(arch, last_stride=1).backbone.eval()(images)
        two = build_model(arch, last_stride=2).backbone.eval()(images)
    assert tuple(one.shape[2:]) == (4, 2)
    assert tuple(two.shape[2:]) == (2, 1)


def test_gem_pooling():
    x = torch.rand(3, 5, 4, 2) + 0.1
    gem = GeneralizedMeanPooling(p=1.0)
    torch.testing.assert_close(gem(x), x.mean(dim=(2, 3)))
    gem3 = GeneralizedMeanPooling()
    assert float(gem3.p.detach()) == 3.0 and gem3.p.requires_grad
    torch.testing.assert_close(gem3(x), x.pow(3).mean(dim=(2, 3)).pow(1 / 3))
    # Large p approaches max pooling.
    big = GeneralizedMeanPooling(p=60.0)
    assert torch.allclose(big(x), x.amax(dim=(2, 3)), rtol=0.05)
    # Zeros (ReLU output) are clamped at eps: the output is eps whatever p, so both gradients are 0
    # (and finite, which they would not be through 0 ** p and its log).
    z = torch.zeros(1, 2, 3, 3, requires_grad=True)
    gem3(z).sum().backward()
    assert torch.equal(z.grad, torch.zeros_like(z))
    assert abs(float(gem3.p.grad)) < 1e-6


def _gem_reference(x, p):
    """GeM and d(sum of outputs)/dp from the closed form, in float64.

    y = M ** (1/p) with M = mean(x ** p), so
    dy/dp = y * (-ln(M) / p**2 + mean(x ** p * ln x) / (p * M)).
    """
    x = x.double().clamp(min=1e-6)
    m = x.pow(p).mean(dim=(2, 3))
    y = m.pow(1 / p)
    dy_dp = y * (-m.log() / p ** 2 + (x.pow(p) * x.log()).mean(dim=(2, 3)) / (p * m))
    return y, dy_dp.sum()


def test_gem_gradcheck():
    torch.manual_seed(0)
    x = (torch.rand(2, 3, 4, 3, dtype=torch.float64) + 0.05).requires_grad_()
    gem = GeneralizedMeanPooling(p=2.5).double()
    p = gem.p.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, p: torch.func.functional_call(gem, {"p": p}, (x,)), (x, p))
    y, dy_dp = _gem_reference(x.detach(), 2.5)
    out = gem(x)
    torch.testing.assert_close(out, y)
    out.sum().backward()
    torch.testing.assert_close(gem.p.grad, dy_dp)


def test_gem_model_pools_the_backbone_map():
    # The model's GeM against its definition on the backbone's own map, and the p gradient the
    # optimiser steps with against the closed form; average pooling against the plain mean.
    torch.manual_seed(0)
    model = build_model("resnet18", pooling="gem", neck="none")
    images = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        feature_map = model.backbone(images)
    expected, dy_dp = _gem_reference(feature_map, 3.0)
    features = model(images).features
    torch.testing.assert_close(features.double(), expected, rtol=1e-4, atol=1e-6)
    features.sum().backward()
    torch.testing.assert_close(model.pool.p.grad.double(), dy_dp, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(build_pooling("avg")(feature_map), feature_map.mean(dim=(2, 3)))
    assert not torch.allclose(features, feature_map.mean(dim=(2, 3)))


def test_head_gradcheck():
    """Gradients of the whole head (GeM, embedding, BN neck, classifier) in float64, train mode."""
    torch.manual_seed(0)
    # Softplus keeps the map positive and smooth, away from GeM's clamp where gradcheck's
    # finite differences would straddle a kink.
    body = torch.nn.Sequential(torch.nn.Conv2d(3, 4, kernel_size=1), torch.nn.Softplus())
    model = ReIDModel(body, 4, pooling="gem", neck="bn", embedding_dim=3, num_classes=2).double().train()
    with torch.no_grad():  # a non-trivial neck scale and classifier, so every term carries gradient
        model.neck.weight.uniform_(0.5, 1.5)
        model.classifier.weight.normal_()
    images = torch.randn(5, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    params = [p for p in model.parameters() if p.requires_grad]

    def head(images, *values):
        state = dict(zip([n for n, p in model.named_parameters() if p.requires_grad], values))
        out = torch.func.functional_call(model, state, (images,))
        return out.features, out.neck_features, out.logits

    inputs = (images, *[p.detach().clone().requires_grad_() for p in params])
    # fast_mode compares random projections of the Jacobian: one check per input tensor, not per element.
    assert torch.autograd.gradcheck(head, inputs, fast_mode=True)
    # The neck's shift is frozen: it takes no gradient, the scale does.
    model(images).logits.sum().backward()
    assert model.neck.bias.grad is None and model.neck.weight.grad is not None


def test_bn_neck_and_embedding():
    model = build_model("resnet18", embedding_dim=64, num_classes=3)
    assert not model.neck.bias.requires_grad and model.neck.weight.requires_grad
    out = model(torch.randn(4, 3, 128, 64))
    assert out.features.shape == (4, 64) and out.logits.shape == (4, 3)
    # Train mode: the neck normalises with batch statistics (zero bias -> zero mean).
    torch.testing.assert_close(out.neck_features.mean(0), torch.zeros(64), atol=1e-5, rtol=0)
    assert model.classifier.bias is None
    plain = build_model("resnet18", neck="none")
    out = plain(torch.randn(2, 3, 128, 64))
    assert out.logits is None
    assert torch.equal(out.features, out.neck_features)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown arch 'resnet9'"):
        build_model("resnet9")
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        build_model("resnet18", pooling="max")
    with pytest.raises(ValueError, match="last_stride must be 1 or 2"):
        build_model("resnet18", last_stride=3)
    with pytest.raises(ValueError, match="unknown neck"):
        build_model("resnet18", neck="ln")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_model("resnet18", weights="/nonexistent/weights.pth")


def test_pretrained_without_network_names_the_fix(monkeypatch):
    import torchvision.models._api as api

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(api, "load_state_dict_from_url", no_network)
    with pytest.raises(PretrainedWeightsUnavailable, match=r"resnet18.*weights=FILE.*--weights FILE"):
        build_model("resnet18", pretrained=True)


def test_weights_file_round_trip(tmp_path):
    source = build_model("resnet18", pooling="gem", num_classes=5)
    with torch.no_grad():
        source.pool.p.fill_(4.0)
    path = tmp_path / "model.pth"
    torch.save(source.state_dict(), path)
    loaded = build_model("resnet18", pooling="gem", num_classes=5, weights=path)
    assert loaded.load_report.missing_keys == [] and loaded.load_report.unexpected_keys == []
    for (name, a), (_, b) in zip(source.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    # A checkpoint with another classifier size: the classifier is reported, the rest loads.
    other = build_model("resnet18", pooling="gem", num_classes=9, weights=path)
    assert other.load_report.missing_keys == ["classifier.weight"]
    assert torch.equal(other.backbone.conv1.weight, source.backbone.conv1.weight)


def test_torchvision_state_dict_loads_into_the_backbone(tmp_path):
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save({"state_dict": net.state_dict()}, path)
    model = build_model("resnet18", weights=path)
    assert model.load_report.unexpected_keys == ["backbone.fc.bias", "backbone.fc.weight"]
    assert all(k.startswith("neck.") for k in model.load_report.missing_keys)
    assert torch.equal(model.backbone.layer4[1].conv2.weight, net.layer4[1].conv2.weight)


def test_metric_learning_head_and_build_args():
    """dropout -> 128-d linear -> BN -> unit vectors, in train and eval mode; build_args rebuild the model."""
    torch.manual_seed(0)
    model = build_model("mobilenet_v2", embedding_dim=128, embedding_dropout=0.5, neck="none", normalize=True)
    assert isinstance(model.embedding[0], torch.nn.Dropout) and model.embedding[0].p == 0.5
    assert isinstance(model.embedding[1], torch.nn.Linear) and model.embedding[1].out_features == 128
    assert isinstance(model.embedding[2], torch.nn.BatchNorm1d)
    images = torch.randn(4, 3, 128, 64)
    out = model(images)
    assert out.neck_features.shape == (4, 128) and out.logits is None
    torch.testing.assert_close(out.neck_features.norm(dim=1), torch.ones(4))
    model.eval()
    with torch.no_grad():
        feats = model(images)
        torch.testing.assert_close(feats.norm(dim=1), torch.ones(4))
        # Eval mode: no dropout, so the output is the normalised BN'd linear map of the pooled features.
        pooled = model.pool(model.backbone(images))
        expected = torch.nn.functional.normalize(model.embedding[2](model.embedding[1](pooled)), dim=1)
        torch.testing.assert_close(feats, expected)
    again = build_model(**model.build_args)
    again.load_state_dict(model.state_dict())  # same architecture, strict
    assert model.build_args["normalize"] is True and model.build_args["embedding_dropout"] == 0.5
    with pytest.raises(ValueError, match="embedding_dropout needs an embedding layer"):
        build_model("resnet18", embedding_dropout=0.3)
    with pytest.raises(ValueError, match=r"embedding_dropout must be in \[0, 1\)"):
        build_model("resnet18", embedding_dim=8, embedding_dropout=1.0)
