"""Re-ID data: data sets on disk, the synthetic pedestrian set, samplers, transforms, loaders.

>>> from pyreid.data import build_dataset, build_train_loader
>>> ds = build_dataset("synthetic", "/tmp/synth")        # after `pyreid synth --out /tmp/synth`
>>> loader = build_train_loader(ds.train, batch_size=32, num_instances=4, iters=10, height=128, width=64)

Names load on first use, so the command line's help (which reads
:class:`SynthConfig`) needs no torch.
"""

import importlib

_NAMES = {
    "DATASETS": "datasets", "DatasetLayoutError": "datasets", "ReIDDataset": "datasets", "build_dataset": "datasets",
    "ImageDataset": "loaders", "read_image": "loaders", "build_train_loader": "loaders",
    "build_test_loader": "loaders", "ZippedLoader": "loaders",
    "RandomIdentitySampler": "samplers", "CameraAwareIdentitySampler": "samplers",
    "PublishedCameraAwareSampler": "samplers",
    "SynthConfig": "synthetic", "generate": "synthetic",
    "IMAGENET_MEAN": "transforms", "IMAGENET_STD": "transforms", "build_transforms": "transforms",
    "PublishedRandomErasing": "transforms", "five_crops": "transforms",
}

__all__ = list(_NAMES)


def __getattr__(name):
    if name in _NAMES:
        return getattr(importlib.import_module(f"pyreid.data.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'pyreid.data' has no attribute '{name}'")
