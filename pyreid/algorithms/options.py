"""Every algorithm's options (one dataclass each) and the run settings it defaults to.

Apart from the algorithms' code, and torch-free, so that ``pyreid train ALGO
--help`` lists them without importing torch. Each option becomes a
command-line flag (``--k1``) and a key of a YAML config's ``options:`` block;
``*_DEFAULTS`` are :class:`~pyreid.training.config.TrainConfig` values applied
before the config file and the flags (an algorithm's ``config_defaults``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pyreid.training.config import ConfigError, config_field

__all__ = ["CLUSTER_CONTRAST_DEFAULTS", "ISE_DEFAULTS", "PUL_DEFAULTS", "TRIPLET_DEFAULTS", "UDA_DEFAULTS",
           "ClusterContrastOptions", "ISEOptions", "PULOptions", "SupervisedOptions", "TripletOptions", "UDAOptions"]


@dataclass
class SupervisedOptions:
    id_weight: float = config_field("weight of the identity (cross-entropy) loss", default=1.0)
    label_smoothing: float = config_field("label smoothing epsilon of the identity loss", default=0.1)
    temperature: float = config_field("the logits are divided by this temperature", default=0.1)
    temperature_end: Optional[float] = config_field("move the temperature linearly to this value over training "
                                             "(none = constant)", default=None)
    triplet_weight: float = config_field("weight of the batch-hard triplet loss on the pre-BN feature (0 = off)",
                                  default=1.0)
    margin: Optional[float] = config_field("triplet margin (none = soft margin)", default=0.3)
    embedding_dim: int = config_field("embedding layer size between pooling and the BN neck (0 = none)", default=0)
    classifier_init: str = config_field("class_mean (normalised class-mean features of the starting model) or random",
                                 default="class_mean")
    normalize_classifier: bool = config_field("re-normalise the classifier weights after every step", default=False)
    center_weight: float = config_field("weight of the centre loss on the pre-BN feature (strong baseline: 5e-4; "
                                        "0 = off)", default=0.0)
    center_lr: float = config_field("learning rate of the centres' own SGD (strong baseline: 0.5; no momentum, "
                                    "no schedule)", default=0.5)

    def validate(self) -> None:
        if self.center_weight < 0:
            raise ConfigError(f"'center_weight' must be >= 0 (0 = no centre loss), got {self.center_weight}")
        if not self.center_lr > 0:
            raise ConfigError(f"'center_lr' must be positive, got {self.center_lr}")
        if self.classifier_init not in ("class_mean", "random"):
            raise ConfigError(f"'classifier_init' must be class_mean or random, got {self.classifier_init!r}")
        if self.id_weight < 0 or self.triplet_weight < 0 or self.id_weight + self.triplet_weight == 0:
            raise ConfigError("id_weight and triplet_weight must be >= 0, and not both 0")
        for key in ("temperature", "temperature_end"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise ConfigError(f"'{key}' must be positive, got {value}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"'label_smoothing' must be in [0, 1), got {self.label_smoothing}")
        if self.margin is not None and self.margin < 0:
            raise ConfigError(f"'margin' must be >= 0 or none, got {self.margin}")
        if self.embedding_dim < 0:
            raise ConfigError(f"'embedding_dim' must be >= 0, got {self.embedding_dim}")


@dataclass
class TripletOptions:
    head: str = config_field("embedding (dropout -> linear -> BN -> L2), trinet (TriNet's: FC hidden_dim -> BN -> "
                             "ReLU -> FC embedding_dim, not normalised) or bnneck", default="embedding")
    embedding_dim: int = config_field("size of the embedding head's output", default=128)
    hidden_dim: int = config_field("size of the trinet head's first FC layer", default=1024)
    augmentation: str = config_field("reid (the config's flip, pad + crop, random erasing) or trinet (resize to 9/8 "
                                     "of the size, random crop back, flip; no erasing)", default="reid")
    dropout: float = config_field("dropout before the embedding's linear layer", default=0.5)
    margin: Optional[float] = config_field("triplet margin (none = soft margin)", default=None)
    metric: str = config_field("distance of the triplet loss: euclidean, sqeuclidean or cosine",
                               default="euclidean")
    id_weight: float = config_field("weight of the auxiliary softmax identity loss (0 = off)", default=0.0)
    label_smoothing: float = config_field("label smoothing of the auxiliary identity loss", default=0.1)

    def validate(self) -> None:
        if self.head not in ("embedding", "trinet", "bnneck"):
            raise ConfigError(f"'head' must be embedding, trinet or bnneck, got {self.head!r}")
        if self.augmentation not in ("reid", "trinet"):
            raise ConfigError(f"'augmentation' must be reid or trinet, got {self.augmentation!r}")
        if self.head == "trinet" and self.hidden_dim < 1:
            raise ConfigError(f"'hidden_dim' must be >= 1 with the trinet head, got {self.hidden_dim}")
        from pyreid.losses.triplet import METRICS  # here: this module must not import torch

        if self.metric not in METRICS:
            raise ConfigError(f"'metric' must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.head != "bnneck" and self.embedding_dim < 1:
            raise ConfigError(f"'embedding_dim' must be >= 1 with the embedding head, got {self.embedding_dim}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"'dropout' must be in [0, 1), got {self.dropout}")
        if self.margin is not None and self.margin < 0:
            raise ConfigError(f"'margin' must be >= 0 or none, got {self.margin}")
        if self.id_weight < 0:
            raise ConfigError(f"'id_weight' must be >= 0, got {self.id_weight}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"'label_smoothing' must be in [0, 1), got {self.label_smoothing}")


# Hermans et al.: Adam 3e-4 and no warm-up. Shipped configs set the rest.
TRIPLET_DEFAULTS = {"lr": 3e-4, "warmup_epochs": 0.0}


@dataclass
class ClusterContrastOptions:
    eps: float = config_field("DBSCAN radius on the Jaccard distance (Market 0.4-0.6, MSMT17 0.7)", default=0.6)
    min_samples: int = config_field("DBSCAN core point neighbourhood size", default=4)
    k1: int = config_field("k-reciprocal neighbourhood size of the Jaccard distance (clamped, with a warning, to "
                           "N - 1 on a training set of N <= k1 images)", default=30)
    k2: int = config_field("query expansion size of the Jaccard distance", default=6)
    temp: float = config_field("memory softmax temperature", default=0.05)
    momentum: float = config_field("memory update momentum", default=0.1)
    update: str = config_field("memory update: momentum (every sample) or hard (each cluster's least similar "
                               "sample)", default="momentum")
    max_empty_epochs: int = config_field("stop after this many epochs in a row without a cluster", default=5)

    def validate(self) -> None:
        if not 0 < self.eps < 1:
            raise ConfigError(f"'eps' must be in (0, 1) on the Jaccard distance, got {self.eps}")
        if self.min_samples < 1 or self.k1 < 1 or self.k2 < 1:
            raise ConfigError("'min_samples', 'k1' and 'k2' must be >= 1")
        if self.k2 > self.k1:
            raise ConfigError(f"'k2' ({self.k2}) must be <= 'k1' ({self.k1})")
        if not self.temp > 0:
            raise ConfigError(f"'temp' must be positive, got {self.temp}")
        if not 0 <= self.momentum <= 1:
            raise ConfigError(f"'momentum' must be in [0, 1], got {self.momentum}")
        if self.update not in ("momentum", "hard"):
            raise ConfigError(f"'update' must be momentum or hard, got {self.update!r}")
        if self.max_empty_epochs < 1:
            raise ConfigError(f"'max_empty_epochs' must be >= 1, got {self.max_empty_epochs}")


# Cluster-Contrast's published schedule (Market-1501 / DukeMTMC-reID); the configs set the rest.
CLUSTER_CONTRAST_DEFAULTS = {"batch_size": 256, "num_instances": 16, "camera_aware": True, "epochs": 50, "iters": 200,
                             "lr": 3.5e-4, "weight_decay": 5e-4, "milestones": [20, 40], "warmup_epochs": 0.0,
                             "pooling": "gem"}


@dataclass
class ISEOptions(ClusterContrastOptions):
    eps: float = config_field("DBSCAN radius on the Jaccard distance (Market 0.4, MSMT17 0.7)", default=0.4)
    momentum: float = config_field("memory update momentum", default=0.2)
    update: str = config_field("memory update: momentum or hard", default="hard")
    lambda0: float = config_field("support strength at the end of training is lambda0 / 2", default=1.0)
    support_k: int = config_field("support samples per feature (nearest other clusters)", default=1)
    lp_temp: float = config_field("temperature of the label-preserving loss", default=0.6)
    lp_weight: float = config_field("weight of the label-preserving loss (Market 0.1, MSMT17 0.01)", default=0.1)

    def validate(self) -> None:
        super().validate()
        if self.support_k < 1:
            raise ConfigError(f"'support_k' must be >= 1, got {self.support_k}")
        if not self.lp_temp > 0:
            raise ConfigError(f"'lp_temp' must be positive, got {self.lp_temp}")
        if self.lp_weight < 0 or self.lambda0 < 0:
            raise ConfigError("'lp_weight' and 'lambda0' must be >= 0")


ISE_DEFAULTS = {**CLUSTER_CONTRAST_DEFAULTS, "epochs": 70, "iters": 400, "milestones": [30], "pooling": "avg"}


@dataclass
class PULOptions:
    clusters: int = config_field("K, k-means clusters (published: 750 on a Market-1501 target, 700 on DukeMTMC-reID)",
                                 default=750)
    threshold: float = config_field("lambda: an image is reliable when its cosine similarity to the centre (the "
                                    "real image nearest a centroid) exceeds it", default=0.85)
    round_epochs: int = config_field("epochs per round; --epochs / --round-epochs rounds in all (published 20 x 25)",
                                     default=20)
    selection: str = config_field("own-centre (the paper: similarity to its own cluster's centre) or any-centre "
                                  "(the published code: to any centre; the image keeps its own label)",
                                  default="own-centre")
    patience: int = config_field("stop after this many rounds in a row without more selected images (the paper's "
                                 "convergence rule; 0 = run every round, as the published code)", default=0)
    normalize: bool = config_field("L2-normalise the features before k-means (published: not)", default=False)
    labelled_ids: int = config_field("semi-supervised: the first N training identities keep their labels and are "
                                     "always selected; the rest is clustered into K - N (published: 50)", default=0)
    kmeans_iters: int = config_field("k-means iteration cap", default=300)
    head: str = config_field("published (pooled features -> dropout -> K-way softmax) or bnneck (pyreid's BN neck "
                             "and bias-free classifier)", default="published")
    dropout: float = config_field("dropout before the classifier with the published head", default=0.5)
    augmentation: str = config_field("published (rotation 20 deg, shifts 0.2, no flip) or reid (flip, pad + crop, "
                                     "random erasing)", default="published")
    sampling: str = config_field("images (shuffled batches, published) or identities (P x K batches)",
                                 default="images")

    def validate(self) -> None:
        if self.clusters < 1:
            raise ConfigError(f"'clusters' must be >= 1, got {self.clusters}")
        if not -1 < self.threshold <= 1:
            raise ConfigError(f"'threshold' must be in (-1, 1] (a cosine similarity), got {self.threshold}")
        if self.round_epochs < 1 or self.kmeans_iters < 1:
            raise ConfigError("'round_epochs' and 'kmeans_iters' must be >= 1")
        if self.patience < 0 or self.labelled_ids < 0:
            raise ConfigError("'patience' and 'labelled_ids' must be >= 0")
        if self.labelled_ids >= self.clusters:
            raise ConfigError(f"'labelled_ids' ({self.labelled_ids}) must be below 'clusters' ({self.clusters}): the "
                              "unlabelled images are clustered into clusters - labelled_ids")
        choices = {"selection": ("own-centre", "any-centre"), "head": ("published", "bnneck"),
                   "augmentation": ("published", "reid"), "sampling": ("images", "identities")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"'{key}' must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"'dropout' must be in [0, 1), got {self.dropout}")


# PUL's published fine-tuning: SGD 1e-3 with momentum 0.9, batch 16, a constant rate, 25 rounds of 20 epochs;
# average pooling, last stride 2 (a plain ResNet-50).
PUL_DEFAULTS = {"optimizer": "sgd", "lr": 1e-3, "sgd_momentum": 0.9, "weight_decay": 0.0, "batch_size": 16,
                "num_instances": 4, "epochs": 500, "milestones": [], "warmup_epochs": 0.0, "pooling": "avg",
                "last_stride": 2, "eval_step": 20}


@dataclass
class UDAOptions(ClusterContrastOptions):
    momentum: float = config_field("memory update momentum (SpCL: 0.2)", default=0.2)
    heads: str = config_field("separate (a source classifier and a target cluster memory, never one softmax) or "
                              "mixed (SpCL / OpenUnReID: one softmax over source classes + target clusters)",
                              default="separate")
    bn: str = config_field("shared (one set of BatchNorm statistics) or domain (SpCL's domain-specific BN: source "
                           "and target statistics and affine parameters apart, the target's used at test)",
                           default="shared")
    source_warmup: int = config_field("train on the source alone for the first E epochs (e.g. from ImageNet "
                                      "weights)", default=0)
    source_until: Optional[int] = config_field("drop the source from epoch E on: target alone from then (none = "
                                               "keep it to the end)", default=None)
    source_weight: float = config_field("weight of the source losses (identity + triplet)", default=1.0)
    target_weight: float = config_field("weight of the target's cluster-memory loss", default=1.0)
    label_smoothing: float = config_field("label smoothing of the source identity loss (separate heads)",
                                          default=0.1)
    source_temperature: float = config_field("the source classifier's logits are divided by it (separate heads; "
                                             "as the supervised baseline)", default=0.1)
    triplet_weight: float = config_field("weight of the source batch-hard triplet loss inside the source losses "
                                         "(0 = off)", default=1.0)
    margin: Optional[float] = config_field("source triplet margin (none = soft margin)", default=0.3)

    def validate(self) -> None:
        super().validate()
        choices = {"heads": ("separate", "mixed"), "bn": ("shared", "domain")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"'{key}' must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        if self.source_warmup < 0:
            raise ConfigError(f"'source_warmup' must be >= 0, got {self.source_warmup}")
        if self.source_until is not None and self.source_until <= self.source_warmup + 1:
            raise ConfigError(f"'source_until' ({self.source_until}) must come after the source warm-up's "
                              f"{self.source_warmup} epoch(s) and at least one joint epoch (> {self.source_warmup + 1})")
        if self.source_weight < 0 or self.target_weight < 0 or self.triplet_weight < 0:
            raise ConfigError("'source_weight', 'target_weight' and 'triplet_weight' must be >= 0")
        if self.source_weight == 0 or self.target_weight == 0:
            raise ConfigError("'source_weight' and 'target_weight' must be > 0 (drop the source with --source-until, "
                              "or train the target alone with cluster-contrast)")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"'label_smoothing' must be in [0, 1), got {self.label_smoothing}")
        if not self.source_temperature > 0:
            raise ConfigError(f"'source_temperature' must be positive, got {self.source_temperature}")
        if self.margin is not None and self.margin < 0:
            raise ConfigError(f"'margin' must be >= 0 or none, got {self.margin}")


# The published UDA protocol (SpCL, MMT): 64 images per domain = 16 x 4, Adam 3.5e-4, weight decay 5e-4,
# x0.1 every 20 epochs, 50 epochs x 400 iterations, average pooling; the configs set the rest.
UDA_DEFAULTS = {"batch_size": 64, "num_instances": 4, "camera_aware": True, "epochs": 50, "iters": 400, "lr": 3.5e-4,
                "weight_decay": 5e-4, "milestones": [20, 40], "warmup_epochs": 0.0, "pooling": "avg"}
