"""build_model: every backbone at 128 x 64 on CPU, pooling, neck, classifier, weights."""

import urllib.error

import pytest
import torch

from pyreid.models import ARCHS, GeneralizedMeanPooling, PretrainedWeightsUnavailable, build_model


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
    # Large p approaches max pooling; zeros (ReLU output) keep the gradient finite.
    big = GeneralizedMeanPooling(p=60.0)
    assert torch.allclose(big(x), x.amax(dim=(2, 3)), rtol=0.05)
    z = torch.zeros(1, 2, 3, 3, requires_grad=True)
    gem3(z).sum().backward()
    assert torch.isfinite(z.grad).all() and torch.isfinite(gem3.p.grad)


def test_gem_model_differs_from_avg_and_trains_p():
    torch.manual_seed(0)
    avg = build_model("resnet18", pooling="avg")
    torch.manual_seed(0)
    gem = build_model("resnet18", pooling="gem")
    images = torch.randn(2, 3, 128, 64)
    assert not torch.allclose(avg(images).features, gem(images).features)
    gem(images).features.sum().backward()
    assert gem.pool.p.grad is not None


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
