"""Named ImageNet weights (v1 / v2 / default / a file) from torch's hub cache without a download, and
``--weights`` winning over a config's ``pretrained`` offline; all without network access."""

import os

import pytest
import torch

torchvision = pytest.importorskip("torchvision")  # the GPU check's machine may lack it

from pyreid.models import build_model  # noqa: E402
from pyreid.models.backbone import PretrainedWeightsUnavailable  # noqa: E402
from pyreid.models.pretrained import hub_cache_path, torchvision_weights  # noqa: E402


def _imagenet_like(arch, seed):
    torch.manual_seed(seed)
    return torchvision.models.get_model(arch, weights=None).state_dict()


@pytest.mark.parametrize("name,member", [("v1", "IMAGENET1K_V1"), ("v2", "IMAGENET1K_V2"),
                                         ("default", "IMAGENET1K_V2")])
def test_named_weights_in_the_hub_cache_load_without_a_download(offline, name, member):
    arch = "mobilenet_v2"  # has V1 and V2, like resnet50, and builds fast
    weights = torchvision_weights(arch, name)
    assert weights.name == member
    path = hub_cache_path(weights.url)
    assert path.startswith(str(torch.hub.get_dir())) and "torch_home" in path
    state = _imagenet_like(arch, seed=1)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(state, path)
    model = build_model(arch, pretrained=name)
    assert offline == []
    assert torch.equal(model.backbone.features[3].conv[0][0].weight, state["features.3.conv.0.0.weight"])


def test_v1_and_v2_are_different_files():
    v1, v2 = torchvision_weights("resnet50", "v1"), torchvision_weights("resnet50", "v2")
    assert v1.url != v2.url and v1.name == "IMAGENET1K_V1"
    assert torchvision_weights("resnet50", "default").name == "IMAGENET1K_V2"
    with pytest.raises(ValueError, match="no IMAGENET1K_V2 weights for 'resnet18'"):
        torchvision_weights("resnet18", "v2")


def test_a_weights_file_as_pretrained(offline, tmp_path):
    state = _imagenet_like("resnet18", seed=2)
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(state, path)
    model = build_model("resnet18", pretrained=str(path))
    assert torch.equal(model.backbone.layer2[0].conv1.weight, state["layer2.0.conv1.weight"]) and offline == []
    torch.save({"conv1.weight": state["conv1.weight"]}, tmp_path / "partial.pth")
    with pytest.raises(RuntimeError, match="do not fit 'resnet18': missing"):
        build_model("resnet18", pretrained=str(tmp_path / "partial.pth"))
    with pytest.raises(FileNotFoundError, match="pretrained weights file .* does not exist"):
        build_model("resnet18", pretrained=str(tmp_path / "missing.pth"))


def test_offline_without_a_cached_file_says_what_to_pass(offline):
    with pytest.raises(PretrainedWeightsUnavailable) as info:
        build_model("resnet18", pretrained="v1")
    message = str(info.value)
    for needed in ("IMAGENET1K_V1", "resnet18-f37072fd.pth", hub_cache_path(torchvision_weights("resnet18", "v1").url),
                   "--pretrained FILE", "--weights FILE", "--no-pretrained"):
        assert needed in message, needed
    assert len(offline) == 1


def test_weights_win_over_pretrained_and_nothing_is_downloaded(offline, tmp_path):
    source = build_model("resnet18", num_classes=3)
    path = tmp_path / "model.pth"
    torch.save(source.state_dict(), path)
    model = build_model("resnet18", pretrained="v1", weights=str(path), num_classes=3)
    assert offline == []
    assert torch.equal(model.backbone.conv1.weight, source.backbone.conv1.weight)


def test_googlenet_imagenet_weights_get_their_input_scaling(offline, tmp_path):
    """torchvision's GoogLeNet weights expect [-1, 1] images: the body gains the rescaling only with them."""
    torch.manual_seed(3)
    state = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False).state_dict()
    path = tmp_path / "googlenet.pth"
    torch.save(state, path)
    model = build_model("googlenet", pretrained=str(path))
    assert list(model.backbone._modules)[0] == "transform_input"
    assert torch.equal(model.backbone.conv1.conv.weight, state["conv1.conv.weight"])
    assert "transform_input" not in build_model("googlenet").backbone._modules
