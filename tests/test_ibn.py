"""IBN-ResNet50-a (Pan et al., ECCV 2018): the architecture, the public weights' key names, and the
cluster_contrast_*_ibn configs."""

import dataclasses

import pytest
import torch
from torch import nn

from pyreid.models import PretrainedWeightsUnavailable, build_model, load_weights
from pyreid.models.ibn import IBN, IBN_WEIGHTS_FILE, load_ibn_weights, resnet50_ibn_a

BLOCKS = {"layer1": 3, "layer2": 4, "layer3": 6, "layer4": 3}
WIDTH = {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}  # channels of each block's first conv


def _public_keys():
    """The IBN keys of the public release, written out from its layout (not from our module)."""
    keys = set()
    for layer in ("layer1", "layer2", "layer3"):
        for block in range(BLOCKS[layer]):
            prefix = f"{layer}.{block}.bn1"
            keys |= {f"{prefix}.IN.weight", f"{prefix}.IN.bias"}
            keys |= {f"{prefix}.BN.{name}" for name in ("weight", "bias", "running_mean", "running_var")}
    return keys


def _public_state(seed=0):
    """A state dict laid out as IBN-Net's resnet50_ibn_a-d9d0bb7b.pth (random values, 1000-way fc)."""
    torch.manual_seed(seed)
    net = resnet50_ibn_a()
    for module in net.modules():  # non-trivial statistics, so a load is visible
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    state = {k: v.clone() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 2048), torch.randn(1000)
    return state


def test_ibn_blocks_in_layers_1_to_3_only():
    net = resnet50_ibn_a()
    for layer, count in BLOCKS.items():
        for block in getattr(net, layer):
            if layer == "layer4":
                assert type(block.bn1) is nn.BatchNorm2d
            else:
                assert isinstance(block.bn1, IBN)
                half = WIDTH[layer] // 2
                assert block.bn1.IN.num_features == half and block.bn1.IN.affine
                assert block.bn1.BN.num_features == WIDTH[layer] - half
            assert type(block.bn2) is nn.BatchNorm2d and type(block.bn3) is nn.BatchNorm2d
        assert len(getattr(net, layer)) == count
    assert type(net.bn1) is nn.BatchNorm2d
    ibn_keys = {k for k in net.state_dict() if ".IN." in k or ".BN." in k}
    assert ibn_keys - {k for k in ibn_keys if k.endswith("num_batches_tracked")} == _public_keys()


def test_ibn_layer_normalises_each_half_its_own_way():
    layer = IBN(8).train()
    x = torch.randn(4, 8, 5, 3) * 3 + 2
    out = layer(x)
    # Instance norm: every image's channel is normalised on its own; batch norm: over the batch.
    assert torch.allclose(out[:, :4].mean(dim=(2, 3)), torch.zeros(4, 4), atol=1e-5)
    assert torch.allclose(out[:, 4:].mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-5)
    assert not torch.allclose(out[:, 4:].mean(dim=(2, 3)), torch.zeros(4, 4), atol=1e-2)
    with pytest.raises(ValueError, match="empty"):
        IBN(1)


def test_forward_shape():
    model = build_model("resnet50_ibn_a", num_classes=5)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 32))
        assert out.features.shape == (2, 2048) and out.logits.shape == (2, 5)
        assert model.eval()(torch.randn(1, 3, 64, 32)).shape == (1, 2048)
    # Last stride 1 (the default) doubles the final map of a 64 x 32 image: 2 x 1 -> 4 x 2.
    with torch.no_grad():
        assert build_model("resnet50_ibn_a").backbone.eval()(torch.randn(1, 3, 64, 32)).shape == (1, 2048, 4, 2)


def test_public_key_names_load_strictly(tmp_path, monkeypatch):
    state = _public_state()
    net = resnet50_ibn_a()
    load_ibn_weights(net, state)
    own = net.state_dict()
    assert all(torch.equal(own[k], state[k]) for k in state if not k.startswith("fc."))
    assert torch.equal(own["layer2.3.bn1.IN.weight"], state["layer2.3.bn1.IN.weight"])
    # As the pretrained start: a file in torch's hub cache, read without a download.
    (tmp_path / "checkpoints").mkdir()
    torch.save(state, tmp_path / "checkpoints" / IBN_WEIGHTS_FILE)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    model = build_model("resnet50_ibn_a", pretrained=True)
    assert torch.equal(model.backbone.layer3[5].bn1.BN.running_var, state["layer3.5.bn1.BN.running_var"])
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])
    # As --weights FILE: the backbone loads, the ImageNet classifier is reported as unexpected.
    report = load_weights(build_model("resnet50_ibn_a"), tmp_path / "checkpoints" / IBN_WEIGHTS_FILE)
    assert report.unexpected_keys == ["backbone.fc.bias", "backbone.fc.weight"]
    assert all(k.startswith("neck.") for k in report.missing_keys)


def test_pretrained_without_the_file_names_it(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(PretrainedWeightsUnavailable, match=r"resnet50_ibn_a-d9d0bb7b\.pth.*--weights FILE"):
        build_model("resnet50_ibn_a", pretrained=True)


def test_wrong_or_missing_keys_are_named():
    import torchvision

    plain = torchvision.models.resnet50(weights=None).state_dict()
    with pytest.raises(ValueError, match=r"plain ResNet-50 file\?.*missing keys \['layer1\.0\.bn1\.BN\.bias'.*"
                                         r"unexpected keys \['layer1\.0\.bn1\.bias'"):
        load_ibn_weights(resnet50_ibn_a(), plain)
    state = _public_state()
    del state["layer3.2.bn1.IN.bias"]
    with pytest.raises(ValueError, match=r"1 missing keys \['layer3\.2\.bn1\.IN\.bias'\]"):
        load_ibn_weights(resnet50_ibn_a(), state)
    state = _public_state()
    state["layer4.0.bn1.IN.weight"] = torch.ones(256)  # IBN in layer 4 is not IBN-a
    with pytest.raises(ValueError, match=r"1 unexpected keys \['layer4\.0\.bn1\.IN\.weight'\]"):
        load_ibn_weights(resnet50_ibn_a(), state)
    state = _public_state()
    state["layer1.0.bn1.IN.weight"] = torch.ones(64)
    with pytest.raises(ValueError, match=r"shape mismatches \['layer1\.0\.bn1\.IN\.weight \(64,\) vs \(32,\)'\]"):
        load_ibn_weights(resnet50_ibn_a(), state)


def test_ibn_configs_are_the_base_configs_with_the_backbone_changed():
    from pyreid.training.run import resolve_config

    for dataset in ("market1501", "msmt17"):
        _, base, base_options = resolve_config("cluster-contrast", config=f"cluster_contrast_{dataset}")
        _, ibn, ibn_options = resolve_config("cluster-contrast", config=f"cluster_contrast_{dataset}_ibn")
        ibn.validate()
        assert ibn.arch == "resnet50_ibn_a"
        assert dataclasses.replace(ibn, arch=base.arch) == base and ibn_options == base_options
