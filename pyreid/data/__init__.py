"""Re-ID data: data sets on disk, the synthetic pedestrian set, samplers, transforms, loaders.

>>> from pyreid.data import build_dataset, build_train_loader
>>> ds = build_dataset("synthetic", "/tmp/synth")        # after `pyreid synth --out /tmp/synth`
>>> loader = build_train_loader(ds.train, batch_size=32, num_instances=4, iters=10, height=128, width=64)
"""

from pyreid.data.datasets import DATASETS, DatasetLayoutError, ReIDDataset, build_dataset
from pyreid.data.loaders import ImageDataset, build_test_loader, build_train_loader, read_image
from pyreid.data.samplers import CameraAwareIdentitySampler, RandomIdentitySampler
from pyreid.data.synthetic import SynthConfig, generate
from pyreid.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms

__all__ = [
    "DATASETS",
    "DatasetLayoutError",
    "ReIDDataset",
    "build_dataset",
    "ImageDataset",
    "read_image",
    "build_train_loader",
    "build_test_loader",
    "RandomIdentitySampler",
    "CameraAwareIdentitySampler",
    "SynthConfig",
    "generate",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "build_transforms",
]
