"""Training configuration: one dataclass for what every algorithm shares, one per algorithm
for its own options, YAML files that set both, and command-line flags over them.

Precedence, lowest first: the dataclass defaults, the algorithm's
``config_defaults``, the YAML file (``--config NAME`` for a file shipped in
``pyreid/configs/``, or ``--config PATH``), the command-line flags. A YAML file
holds :class:`TrainConfig` keys at the top level and the algorithm's options
under ``options:``; a published recipe adds ``recipe:``, the source of each of
its values (:mod:`pyreid.training.recipes`); any other key is an error that
lists the valid ones.

Example (``pyreid/configs/supervised_synthetic_cpu.yaml``)::

    algorithm: supervised
    dataset: synthetic
    arch: resnet18
    height: 128
    width: 64
    epochs: 8
    options:
      temperature: 0.1
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

__all__ = [
    "ConfigError",
    "config_field",
    "TrainConfig",
    "CONFIG_DIR",
    "shipped_configs",
    "find_config",
    "read_config_file",
    "build_dataclass",
    "RESUME_MAY_CHANGE",
    "DATA_FLAGS",
    "unwrap_optional",
    "AMP_MODES",
    "PRETRAINED_NAMES",
]

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


class ConfigError(ValueError):
    """A configuration file or value that cannot be used; the message says which key and why."""


def config_field(text: str, aliases: Optional[Mapping[Any, Any]] = None, flag: Optional[Mapping[str, Any]] = None,
                 **kwargs) -> Any:
    """A dataclass field with its help text. ``aliases`` maps older values to current ones (``amp: true`` is
    ``bf16``); ``flag`` replaces the command-line flag's argparse arguments and adds ``--no-NAME``
    (its help text: ``off_help``), which passes False."""
    metadata: Dict[str, Any] = {"help": text}
    if aliases is not None:
        metadata["aliases"] = dict(aliases)
    if flag is not None:
        metadata["flag"] = dict(flag)
    return field(metadata=metadata, **kwargs)


@dataclass
class TrainConfig:
    """Everything the engine needs, shared by all algorithms (their own options live apart)."""

    algorithm: str = config_field("the training algorithm (set by `pyreid train ALGO`)", default="supervised")
    # Data
    dataset: str = config_field("data set name: market1501, dukemtmcreid, msmt17, veri, synthetic, or your own: "
                                "folder (DIR/{train,query,gallery}/PID/*.jpg) or list (CSV lists)", default="synthetic")
    data_root: str = config_field("folder holding the data set (or a parent of it)", default="data/synthetic")
    source: Optional[str] = config_field("the labelled source data set of a two-data-set algorithm (e.g. uda)",
                                         default=None)
    source_root: Optional[str] = config_field("folder holding the source data set", default=None)
    target: Optional[str] = config_field("the unlabelled target data set of a two-data-set algorithm", default=None)
    target_root: Optional[str] = config_field("folder holding the target data set", default=None)
    height: int = config_field("input image height", default=256)
    width: int = config_field("input image width", default=128)
    # Model
    arch: str = config_field("backbone: resnet18/34/50/101, resnet50_ibn_a, mobilenet_v2, googlenet", default="resnet50")
    pretrained: Optional[str] = config_field(
        "ImageNet weights of the backbone: v1 or v2 (torchvision's IMAGENET1K_V1 / _V2), default (torchvision's "
        "DEFAULT, also what true means), a weights FILE, or none; a file already in torch's hub cache is used "
        "without a download; --weights wins over it", default=None, aliases={True: "default", False: None},
        flag={"nargs": "?", "const": "default", "metavar": "v1|v2|default|FILE",
              "off_help": "no ImageNet weights: random initialisation (clears a config's pretrained)"})
    weights: Optional[str] = config_field("start from a local weights file: a pyreid checkpoint or a torchvision "
                                   "state dict (wins over pretrained: nothing is downloaded)", default=None)
    pooling: str = config_field("global pooling: avg or gem", default="avg")
    last_stride: int = config_field("stride of the backbone's last stage (1 doubles the final map)", default=1)
    # Sampling
    batch_size: int = config_field("images per batch, P identities x K instances (all processes together)", default=64)
    num_instances: int = config_field("K, images per identity in a batch", default=4)
    camera_aware: bool = config_field("draw each identity's K-1 other images from other cameras than the anchor's",
                               default=False)
    sampler: str = config_field("pyreid (P x K batches of distinct identities) or published (Cluster-Contrast's "
                                "RandomMultipleGallerySampler rule: repeats below K other-camera images, each pass's "
                                "incomplete last batch dropped; needs camera_aware)", default="pyreid")
    random_erasing: str = config_field("torchvision (value 0, area 0.02-0.33, log-uniform aspect, 10 tries) or "
                                       "published (Cluster-Contrast's: fill 0.485/0.456/0.406 on the normalised "
                                       "image, area 0.02-0.4, uniform aspect 0.3-3.33, 100 tries)",
                                       default="torchvision")
    epochs: int = config_field("training epochs", default=120)
    iters: int = config_field("iterations per epoch; 0 = one pass over the training images", default=0)
    # Optimiser and schedule
    optimizer: str = config_field("adam or sgd", default="adam")
    lr: float = config_field("base learning rate", default=3.5e-4)
    weight_decay: float = config_field("weight decay", default=5e-4)
    sgd_momentum: float = config_field("momentum of the SGD optimiser", default=0.9)
    scheduler: str = config_field("step (x gamma at each milestone), cosine, or exponential (constant until the "
                                  "one milestone, then decayed exponentially to x gamma at the last epoch: TriNet)",
                                  default="step")
    milestones: List[int] = config_field("epochs at which the step schedule multiplies the rate by gamma (the "
                                         "exponential schedule: the one epoch its decay starts)",
                                  default_factory=lambda: [40, 70])
    gamma: float = config_field("step schedule factor (exponential: the final factor, TriNet 0.001)", default=0.1)
    warmup_epochs: float = config_field("linear warm-up length in epochs (0 = none)", default=10.0)
    warmup_factor: float = config_field("learning rate at the start of the warm-up, as a fraction of lr", default=0.1)
    # Precision and speed
    amp: str = config_field("mixed precision on CUDA (ignored on CPU): bf16 (bfloat16 autocast, fast) or off "
                            "(float32, as the published runs trained; see tf32)", default="bf16",
                            aliases={True: "bf16", False: "off"},
                            flag={"nargs": "?", "const": "bf16", "metavar": "bf16|off",
                                  "off_help": "the same as --amp off: float32"})
    tf32: bool = config_field("with amp off on CUDA, let matmuls use TF32 as PyTorch lets convolutions (no-tf32: "
                              "strict float32 matmuls and convolutions)", default=True)
    channels_last: bool = config_field("channels-last memory format for the model and images", default=False)
    # Batch statistics across processes (see docs/distributed.md)
    sync_bn: bool = config_field("SyncBatchNorm: batch statistics over all processes' images (CUDA, torchrun)",
                                 default=False)
    bn_batch: int = config_field("images per BatchNorm in training: each process's batch is normalised in slices "
                                 "of this many images, whatever the number of processes (64 = the published "
                                 "4-GPU DataParallel runs of 256); 0 = each process's whole batch", default=0)
    bn_groups: int = config_field("BatchNorm statistics over this many equal slices of each process's batch (prefer "
                                  "bn_batch, which does not depend on the number of processes)", default=1)
    check_ranks: bool = config_field("after every step, check that all processes hold the same weights and "
                                     "algorithm state (slow; for debugging torchrun runs)", default=False)
    # Evaluation
    eval_step: int = config_field("evaluate every N epochs (and at epoch 0 and at the end)", default=10)
    test_batch_size: int = config_field("images per batch when extracting features", default=128)
    flip_test: bool = config_field("average the features of each test image and its mirror", default=False)
    test_crops: str = config_field("none, or five: resize test images to 9/8 of the size and average the features "
                                   "of the four corner and the centre crops (with flip_test: TriNet's 10 views)",
                                   default="none")
    rerank: bool = config_field("k-reciprocal re-ranking at evaluation", default=False)
    rerank_distance: str = config_field("what the re-ranking is fed: euclidean (the paper) or sqeuclidean "
                                        "(torchreid's and Cluster-Contrast's evaluators)", default="euclidean")
    # Run
    device: str = config_field("auto, cpu, cuda or cuda:N", default="auto")
    workers: int = config_field("data loader worker processes", default=4)
    seed: int = config_field("random seed (sampling, augmentation, initialisation)", default=0)
    out: str = config_field("output folder of the run", default="runs/train")
    resume: bool = config_field("continue the run in --out from its checkpoint", default=False)
    progress: bool = config_field("progress bars", default=True)
    plots: bool = config_field("write PNG plots", default=True)
    on_bad_image: str = config_field("an image that cannot be read (truncated, missing): skip it (named in the "
                                     "log and metrics.json) or fail the run", default="skip")
    tensorboard: bool = config_field("write every metrics.json number as TensorBoard scalars to OUT/tensorboard "
                                     "(needs the tensorboard package)", default=False)

    def validate(self) -> None:
        """Raise a :class:`ConfigError` for values no run can use (before any work is done)."""
        from pyreid.data.datasets import DATASETS
        from pyreid.models.backbone import ARCHS
        from pyreid.ops.checks import RERANK_DISTANCES

        choices = {"dataset": DATASETS, "arch": ARCHS, "pooling": ("avg", "gem"), "optimizer": ("adam", "sgd"),
                   "scheduler": ("step", "cosine", "exponential"), "rerank_distance": RERANK_DISTANCES,
                   "on_bad_image": ("skip", "fail"), "sampler": ("pyreid", "published"),
                   "random_erasing": ("torchvision", "published"), "test_crops": ("none", "five")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"'{key}' must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        for key in ("source", "target"):
            if getattr(self, key) is not None and getattr(self, key) not in DATASETS:
                raise ConfigError(f"'{key}' must be one of {', '.join(DATASETS)}, got {getattr(self, key)!r}")
        positive = ("height", "width", "batch_size", "num_instances", "epochs", "eval_step", "test_batch_size")
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(f"'{key}' must be >= 1, got {getattr(self, key)}")
        if self.batch_size % self.num_instances:
            raise ConfigError(f"batch_size ({self.batch_size}) must be a multiple of num_instances "
                              f"({self.num_instances}): a batch is P identities x K instances")
        for key in ("iters", "workers", "warmup_epochs", "weight_decay"):
            if getattr(self, key) < 0:
                raise ConfigError(f"'{key}' must be >= 0, got {getattr(self, key)}")
        if not self.lr > 0:
            raise ConfigError(f"'lr' must be positive, got {self.lr}")
        if not 0 < self.warmup_factor <= 1:
            raise ConfigError(f"'warmup_factor' must be in (0, 1], got {self.warmup_factor}")
        if self.bn_groups < 1:
            raise ConfigError(f"'bn_groups' must be >= 1, got {self.bn_groups}")
        if self.bn_batch < 0:
            raise ConfigError(f"'bn_batch' must be >= 0 (0 = each process's whole batch), got {self.bn_batch}")
        if self.bn_batch and self.bn_groups > 1:
            raise ConfigError(f"'bn_batch' ({self.bn_batch}) and 'bn_groups' ({self.bn_groups}) both set the "
                              "BatchNorm slices: set one (bn_batch, images per BatchNorm, does not depend on the "
                              "number of processes)")
        if (self.bn_groups > 1 or self.bn_batch) and self.sync_bn:
            raise ConfigError("'sync_bn' and 'bn_batch' / 'bn_groups' exclude each other: one pools statistics "
                              "across processes, the other splits them within one")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"'amp' must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        # A resumed run takes its weights from the checkpoint: its starting file may be gone.
        if self.pretrained is not None and self.pretrained not in PRETRAINED_NAMES and not self.resume \
                and not os.path.isfile(self.pretrained):
            raise ConfigError(f"'pretrained' must be one of {', '.join(PRETRAINED_NAMES)}, none or an existing "
                              f"weights file, got {self.pretrained!r} (no such file)")
        if self.last_stride not in (1, 2):
            raise ConfigError(f"'last_stride' must be 1 or 2, got {self.last_stride}")
        if sorted(self.milestones) != list(self.milestones):
            raise ConfigError(f"'milestones' must be increasing, got {self.milestones}")
        if self.scheduler == "exponential":
            if len(self.milestones) != 1 or not 0 <= self.milestones[0] < self.epochs:
                raise ConfigError(f"the exponential schedule needs one milestone, the epoch its decay starts, in "
                                  f"[0, epochs = {self.epochs}); got {self.milestones}")
            if not 0 < self.gamma <= 1:
                raise ConfigError(f"the exponential schedule's 'gamma' (its final factor) must be in (0, 1], got "
                                  f"{self.gamma}")
        if self.sampler == "published" and not self.camera_aware:
            raise ConfigError("sampler 'published' is Cluster-Contrast's camera-aware sampler: it needs camera_aware: "
                              "true")


    def bn_groups_per_process(self, world_size: int = 1) -> int:
        """How many BatchNorm slices each process's batch is cut into: from ``bn_batch`` (images per
        BatchNorm) and the per-process batch ``batch_size / world_size``, else ``bn_groups``.

        >>> TrainConfig(batch_size=256, bn_batch=64).bn_groups_per_process(1)   # one GPU
        4
        >>> TrainConfig(batch_size=256, bn_batch=64).bn_groups_per_process(4)   # four torchrun processes
        1
        """
        if world_size < 1:
            raise ConfigError(f"world size must be >= 1, got {world_size}")
        if not self.bn_batch:
            return self.bn_groups
        if self.batch_size % world_size:
            raise ConfigError(f"batch_size {self.batch_size} does not split evenly over {world_size} processes")
        per_process = self.batch_size // world_size
        if self.bn_batch > per_process:
            raise ConfigError(
                f"bn_batch {self.bn_batch} is more than each process's batch of {per_process} images (batch_size "
                f"{self.batch_size} / {world_size} processes): BatchNorm cannot see {self.bn_batch} images in one "
                "process; pass --bn-batch 0 --sync-bn to pool the statistics of all processes (CUDA), or use fewer "
                "processes")
        if per_process % self.bn_batch:
            fits = [d for d in range(1, per_process + 1) if per_process % d == 0 and d <= self.bn_batch][-1]
            raise ConfigError(
                f"bn_batch {self.bn_batch} does not divide each process's batch of {per_process} images (batch_size "
                f"{self.batch_size} / {world_size} processes): choose a bn_batch that divides it (e.g. {fits}), or "
                f"a batch_size / number of processes that gives a multiple of {self.bn_batch}")
        return per_process // self.bn_batch

    def starting_weights(self) -> Tuple[Optional[str], Optional[str]]:
        """``(pretrained, weights)`` to build the first model from: a ``weights`` file wins over ``pretrained``
        (which is then neither downloaded nor read)."""
        if self.weights is not None:
            return None, self.weights
        return self.pretrained, None

    def data_set(self, name: str) -> Tuple[str, str]:
        """``(data set name, root)`` of the data set an algorithm calls ``name`` (see :data:`DATA_FLAGS`)."""
        if name not in DATA_FLAGS:
            raise ConfigError(f"unknown data set role '{name}'; expected one of {', '.join(DATA_FLAGS)}")
        name_key, root_key = DATA_FLAGS[name]
        dataset, root = getattr(self, name_key), getattr(self, root_key)
        if dataset is None or root is None:
            flags = f"--{name_key.replace('_', '-')} NAME --{root_key.replace('_', '-')} DIR"
            raise ConfigError(f"this algorithm reads a {name} data set: pass {flags}")
        return dataset, root


# Values of `amp`, and the ImageNet weights `pretrained` names (anything else is a file).
AMP_MODES = ("bf16", "off")
PRETRAINED_NAMES = ("v1", "v2", "default")

# The data sets an algorithm may read, each from its own pair of keys.
DATA_FLAGS = {"train": ("dataset", "data_root"), "source": ("source", "source_root"),
              "target": ("target", "target_root")}

# Keys a resumed run may change: how it runs, not what it computes.
RESUME_MAY_CHANGE = frozenset({"epochs", "eval_step", "device", "workers", "out", "resume", "progress", "plots",
                               "tensorboard", "on_bad_image",
                               "test_batch_size", "data_root", "source_root", "target_root", "check_ranks"})


def shipped_configs() -> List[str]:
    """Names of the YAML files shipped in ``pyreid/configs/`` (``--config NAME``)."""
    if not os.path.isdir(CONFIG_DIR):
        return []
    return sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".yaml"))


def find_config(name_or_path: str) -> str:
    """The file of ``--config NAME_OR_PATH``: an existing path, else a shipped config's name."""
    if os.path.isfile(name_or_path):
        return name_or_path
    shipped = os.path.join(CONFIG_DIR, name_or_path + ("" if name_or_path.endswith(".yaml") else ".yaml"))
    if os.path.isfile(shipped):
        return shipped
    raise ConfigError(f"--config {name_or_path!r}: no such file, and no shipped config of that name; shipped: "
                      f"{', '.join(shipped_configs()) or '(none)'}")


def read_config_file(path: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(train keys, options)`` of a YAML config file, unvalidated."""
    import yaml  # a dependency of pyreid; imported here to keep `import pyreid` light

    try:
        with open(path) as f:
            values = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"config {path}: not valid YAML: {e}") from e
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"config {path}: expected a mapping of keys to values, got {type(values).__name__}")
    values.pop("recipe", None)  # where a published config's values come from: pyreid.training.recipes reads it
    options = values.pop("options", None) or {}
    if not isinstance(options, dict):
        raise ConfigError(f"config {path}: 'options' must be a mapping, got {type(options).__name__}")
    return values, options


def unwrap_optional(tp) -> Tuple[Any, bool]:
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(owner: str, key: str, tp, value: Any, aliases: Optional[Mapping[Any, Any]] = None) -> Any:
    """``value`` as the field type ``tp`` (ints widen to floats), or a ConfigError naming the key."""
    base, optional = unwrap_optional(tp)
    if aliases:
        if isinstance(value, bool) or value is None:
            if value in aliases:
                return aliases[value]
        elif isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return aliases[value.lower() in ("true", "yes")]
        elif not isinstance(value, str):
            named = ", ".join(f"{k!r} = {v}".lower() for k, v in aliases.items())
            raise ConfigError(f"{owner}: '{key}' must be bool, got {value!r} ({named}) or a name")
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ConfigError(f"{owner}: '{key}' may not be empty")
    if typing.get_origin(base) in (list, List):
        (item,) = typing.get_args(base)
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_coerce(owner, key, item, v) for v in value]
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads 3.5e-4 as a string
            except ValueError:
                pass
    elif base is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise ConfigError(f"{owner}: '{key}' must be {getattr(base, '__name__', base)}"
                      f"{' or none' if optional else ''}, got {value!r}")


def build_dataclass(cls, *layers: Mapping[str, Any], owner: Optional[str] = None):
    """An instance of the dataclass ``cls`` from ``layers`` of values (later layers win).

    Unknown keys raise a :class:`ConfigError` listing the valid ones; values are
    checked against the field types.
    """
    owner = owner or cls.__name__
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    merged: Dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            name = key.replace("-", "_")
            if name not in fields:
                raise ConfigError(f"{owner}: unknown key '{key}'; valid keys: {', '.join(sorted(fields))}")
            merged[name] = _coerce(owner, name, hints[name], value, fields[name].metadata.get("aliases"))
    return cls(**merged)

