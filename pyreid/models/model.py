"""The re-ID network: backbone -> pooling -> [embedding] -> BN neck -> [classifier]."""

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from pyreid.models.backbone import _GoogLeNetInput, build_backbone, load_ibn_imagenet
from pyreid.models.pooling import build_pooling
from pyreid.models.pretrained import imagenet_state_dict, resolve_pretrained

__all__ = ["ReIDModel", "ReIDOutput", "LoadReport", "build_model", "load_weights"]

logger = logging.getLogger(__name__)


class ReIDOutput(NamedTuple):
    """What a model returns in train mode.

    ``features``: pooled (or embedded) features before the BN neck, the
    input of metric losses (triplet, contrastive memory); ``neck_features``:
    after the neck, the input of the classifier (and the test-time feature);
    ``logits``: classifier scores, or None without a classifier.
    """

    features: torch.Tensor
    neck_features: torch.Tensor
    logits: Optional[torch.Tensor]


class ReIDModel(nn.Module):
    """Backbone, global pooling, optional embedding, BN neck, optional classifier.

    Train mode returns a :class:`ReIDOutput`; eval mode returns the neck
    features only (B x feature_dim), what retrieval compares. Build it with
    :func:`build_model`.
    """

    def __init__(self, body: nn.Module, channels: int, pooling: str = "avg", neck: str = "bn",
                 embedding_dim: int = 0, num_classes: int = 0, embedding_dropout: float = 0.0,
                 normalize: bool = False, classifier_dropout: float = 0.0, embedding_hidden_dim: int = 0):
        super().__init__()
        if neck not in ("bn", "none"):
            raise ValueError(f"build_model: unknown neck '{neck}'; expected 'bn' or 'none'")
        if embedding_dim < 0 or num_classes < 0:
            raise ValueError(f"build_model: embedding_dim and num_classes must be >= 0, got {embedding_dim} "
                             f"and {num_classes}")
        if not 0.0 <= embedding_dropout < 1.0:
            raise ValueError(f"build_model: embedding_dropout must be in [0, 1), got {embedding_dropout}")
        if not 0.0 <= classifier_dropout < 1.0:
            raise ValueError(f"build_model: classifier_dropout must be in [0, 1), got {classifier_dropout}")
        if classifier_dropout > 0 and num_classes == 0:
            raise ValueError("build_model: classifier_dropout needs a classifier (num_classes > 0)")
        if embedding_dropout > 0 and embedding_dim == 0:
            raise ValueError("build_model: embedding_dropout needs an embedding layer (embedding_dim > 0)")
        if embedding_hidden_dim < 0 or (embedding_hidden_dim > 0 and embedding_dim == 0):
            raise ValueError(f"build_model: embedding_hidden_dim must be >= 0 and needs embedding_dim > 0, got "
                             f"{embedding_hidden_dim} with embedding_dim {embedding_dim}")
        self.backbone = body
        self.pool = build_pooling(pooling)
        if embedding_dim > 0:
            layers = [nn.Dropout(embedding_dropout)] if embedding_dropout > 0 else []
            if embedding_hidden_dim > 0:
                layers += _trinet_head(channels, embedding_hidden_dim, embedding_dim)
            else:
                linear = nn.Linear(channels, embedding_dim)
                nn.init.kaiming_normal_(linear.weight, mode="fan_out")
                nn.init.zeros_(linear.bias)
                layers += [linear, nn.BatchNorm1d(embedding_dim)]
            self.embedding = nn.Sequential(*layers)
            self.feature_dim = embedding_dim
        else:
            self.embedding = None
            self.feature_dim = channels
        if neck == "bn":
            # BNNeck (Luo et al. 2019): the shift is frozen at 0 so the neck only
            # rescales, keeping the classifier's features centred.
            self.neck = nn.BatchNorm1d(self.feature_dim)
            self.neck.bias.requires_grad_(False)
        else:
            self.neck = nn.Identity()
        # Dropout on the classifier's input only (PUL's head: pooled features -> dropout 0.5 -> softmax).
        self.classifier_dropout = nn.Dropout(classifier_dropout) if classifier_dropout > 0 else nn.Identity()
        if num_classes > 0:
            self.classifier = nn.Linear(self.feature_dim, num_classes, bias=False)
            nn.init.normal_(self.classifier.weight, std=0.001)
        else:
            self.classifier = None
        self.normalize = normalize

    def forward(self, images: torch.Tensor) -> Union[torch.Tensor, ReIDOutput]:
        features = self.pool(self.backbone(images))
        if self.embedding is not None:
            features = self.embedding(features)
        neck_features = self.neck(features)
        if self.normalize:
            neck_features = F.normalize(neck_features, dim=1)
        if not self.training:
            return neck_features
        logits = self.classifier(self.classifier_dropout(neck_features)) if self.classifier is not None else None
        return ReIDOutput(features, neck_features, logits)


def _trinet_head(channels: int, hidden_dim: int, embedding_dim: int) -> List[nn.Module]:
    """TriNet's head (Hermans et al. 2017): FC hidden_dim + BN + ReLU, then a linear FC embedding_dim.

    As their public ``fc1024`` head: the first FC has no bias (the BN's shift
    takes its place) and Glorot-uniform weights, the BN keeps its running
    statistics with momentum 0.1 (TensorFlow's decay 0.9) and eps 1e-5, the
    output FC has orthogonal weights, a zero bias and no activation.
    """
    hidden = nn.Linear(channels, hidden_dim, bias=False)
    nn.init.xavier_uniform_(hidden.weight)
    out = nn.Linear(hidden_dim, embedding_dim)
    nn.init.orthogonal_(out.weight)
    nn.init.zeros_(out.bias)
    return [hidden, nn.BatchNorm1d(hidden_dim, eps=1e-5, momentum=0.1), nn.ReLU(inplace=True), out]


@dataclass
class LoadReport:
    """Keys of a weights file that did not fit the model (empty lists: a perfect fit)."""

    missing_keys: List[str]
    unexpected_keys: List[str]


def load_weights(model: ReIDModel, path: Union[str, os.PathLike]) -> LoadReport:
    """Load a local state dict into ``model`` (non-strict) and report what did not fit.

    Accepted files: a state dict saved from a pyreid model
    (``torch.save(model.state_dict(), path)``), a checkpoint dict holding one
    under ``"state_dict"`` or ``"model"``, a pyreid training checkpoint (its
    evaluated model), or a torchvision classification
    state dict of the same architecture (loaded into the backbone; its
    ``fc``/``classifier`` keys are reported as unexpected). A ``module.``
    prefix (DataParallel) is removed. Tensors whose shape differs are skipped
    and reported as both missing and unexpected.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"build_model: weights file '{path}' does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("models"), dict):  # a pyreid training checkpoint
        state = state["models"].get(state.get("evaluated_model", "model"), state)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"build_model: '{path}' does not hold a state dict (got {type(state).__name__})")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    if not any(k.startswith("backbone.") for k in state):
        state = {"backbone." + k: v for k, v in state.items()}  # a torchvision backbone file
    own = model.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    result = model.load_state_dict({k: v for k, v in state.items() if k not in mismatched}, strict=False)
    report = LoadReport(sorted(set(result.missing_keys) | set(mismatched)),
                        sorted(set(result.unexpected_keys) | set(mismatched)))
    if report.missing_keys or report.unexpected_keys:
        logger.warning("weights %s: %d missing keys %s, %d unexpected keys %s", path, len(report.missing_keys),
                       report.missing_keys[:10], len(report.unexpected_keys), report.unexpected_keys[:10])
    else:
        logger.info("weights %s: all %d tensors loaded", path, len(state))
    return report


# Keys of a torchvision classification state dict that a backbone body does not have: the heads.
_HEAD_PREFIXES = ("fc.", "classifier.", "aux1.", "aux2.")


def _load_imagenet(body: nn.Sequential, arch: str, pretrained: str) -> nn.Sequential:
    """``body`` holding the ImageNet weights ``pretrained`` names (see :mod:`pyreid.models.pretrained`)."""
    if arch == "resnet50_ibn_a":
        # IBN-Net's own release (its key names): a named version is the public file in torch's hub
        # cache, never downloaded; a file is read as given.
        origin = load_ibn_imagenet(body, None if pretrained in ("default", "v1", "v2") else pretrained)
        logger.info("ImageNet weights for %s: %s", arch, origin)
        return body
    state, origin = imagenet_state_dict(arch, pretrained)
    result = body.load_state_dict(state, strict=False)
    unexpected = [k for k in result.unexpected_keys if not k.startswith(_HEAD_PREFIXES)]
    if result.missing_keys or unexpected:
        raise RuntimeError(f"build_model: ImageNet weights {origin} do not fit '{arch}': missing "
                           f"{result.missing_keys[:10]}, unexpected {unexpected[:10]}")
    if arch == "googlenet":
        # torchvision's GoogLeNet weights expect images scaled to [-1, 1], not ImageNet-normalised ones.
        body = nn.Sequential(OrderedDict([("transform_input", _GoogLeNetInput()), *body.named_children()]))
    logger.info("ImageNet weights for %s: %s", arch, origin)
    return body


def build_model(arch: str = "resnet50", pretrained: Union[bool, str, None] = None,
                weights: Optional[Union[str, os.PathLike]] = None,
                pooling: str = "avg", last_stride: int = 1, neck: str = "bn", embedding_dim: int = 0,
                num_classes: int = 0, embedding_dropout: float = 0.0, normalize: bool = False,
                classifier_dropout: float = 0.0, embedding_hidden_dim: int = 0, domain_bn: bool = False) -> ReIDModel:
    """A re-ID model on a torchvision backbone.

    Args:
        arch: ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``,
            ``resnet50_ibn_a`` (IBN-Net, :mod:`pyreid.models.ibn`), ``mobilenet_v2``
            or ``googlenet``.
        pretrained: ImageNet weights of the backbone: ``"v1"`` / ``"v2"``
            (torchvision's ``IMAGENET1K_V1`` / ``_V2``; the published re-ID
            recipes used V1), ``"default"`` or ``True`` (torchvision's
            ``DEFAULT``), a torchvision-style state dict file, or None. A
            named file already in torch's hub cache is read without network
            access; otherwise it is downloaded, and without network a
            :class:`~pyreid.models.backbone.PretrainedWeightsUnavailable`
            error says what to pass instead (see :mod:`pyreid.models.pretrained`).
        weights: a local state dict file loaded after construction (see
            :func:`load_weights`); the report is in ``model.load_report``.
            It wins over ``pretrained``, which is then not loaded at all.
        pooling: ``"avg"`` or ``"gem"`` (generalised mean, trainable p).
        last_stride: 1 removes the backbone's last down-sampling (a 256 x 128
            image then gives a 16 x 8 map on ResNets), 2 keeps it.
        neck: ``"bn"`` (BatchNorm1d with frozen zero bias) or ``"none"``.
        embedding_dim: > 0 adds a Linear + BatchNorm1d embedding to that size
            after pooling (off by default: it scored lower in our comparisons).
        num_classes: > 0 adds a bias-free linear classifier on the neck features.
        embedding_dropout: dropout before the embedding's linear layer (needs
            ``embedding_dim > 0``).
        embedding_hidden_dim: > 0 makes the embedding TriNet's head instead:
            FC ``embedding_hidden_dim`` + BN + ReLU + FC ``embedding_dim``
            (Hermans et al. 2017: 1024 and 128, with ``neck="none"``,
            ``normalize=False``).
        classifier_dropout: dropout on the classifier's input in train mode
            (PUL: 0.5; needs ``num_classes > 0``).
        normalize: L2-normalise the output features (train and eval). With
            ``embedding_dim=128, embedding_dropout=0.5, neck="none"`` this is
            the classic metric-learning head: dropout -> 128-d linear -> BN ->
            unit vectors.
        domain_bn: every BatchNorm layer keeps a source and a target domain
            (:mod:`pyreid.models.domain_batch_norm`; UDA's ``--bn domain``);
            the target's is used unless the caller says otherwise, and a
            plain model's weights fill both.

    The keyword arguments (all but ``weights``) are kept in ``model.build_args``,
    so ``build_model(**model.build_args)`` builds the same architecture again
    (checkpoints store them).

    Example:
        >>> model = build_model("resnet18", num_classes=10)
        >>> out = model(torch.randn(2, 3, 128, 64))
        >>> out.features.shape, out.logits.shape
        (torch.Size([2, 512]), torch.Size([2, 10]))
        >>> model.eval()(torch.randn(2, 3, 128, 64)).shape
        torch.Size([2, 512])
    """
    pretrained = resolve_pretrained(pretrained)
    if weights is not None and pretrained is not None:
        logger.info("weights %s given: the ImageNet weights (pretrained=%s) are not loaded", weights, pretrained)
        pretrained = None
    body, channels = build_backbone(arch, last_stride=last_stride)
    if pretrained is not None:
        body = _load_imagenet(body, arch, pretrained)
    model = ReIDModel(body, channels, pooling=pooling, neck=neck, embedding_dim=embedding_dim,
                      num_classes=num_classes, embedding_dropout=embedding_dropout, normalize=normalize,
                      classifier_dropout=classifier_dropout, embedding_hidden_dim=embedding_hidden_dim)
    if domain_bn:
        from pyreid.models.domain_batch_norm import convert_domain_bn

        convert_domain_bn(model)
    model.build_args = dict(arch=arch, pretrained=None, pooling=pooling, last_stride=last_stride, neck=neck,
                            embedding_dim=embedding_dim, num_classes=num_classes,
                            embedding_dropout=embedding_dropout, normalize=normalize,
                            classifier_dropout=classifier_dropout, embedding_hidden_dim=embedding_hidden_dim)
    if domain_bn:  # only then: the model files of other runs keep their arguments
        model.build_args["domain_bn"] = True
    model.load_report = load_weights(model, weights) if weights is not None else None
    return model
