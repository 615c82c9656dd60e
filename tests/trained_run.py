"""One tiny trained run shared by the inference, extract/search and export tests (made once per process).

A synthetic set (6 train / 4 test identities, 3 cameras, 5 images each, 128 x 64) and one epoch of two
supervised iterations of a ResNet-18: enough for weights that differ from their initialisation and
features that differ between images, in seconds on a CPU.
"""

import os

_CACHE = {}


def trained_run(tmp_path_factory):
    """``{"data": data set folder, "out": run folder}`` holding best.pth and checkpoint.pth."""
    if "run" not in _CACHE:
        from pyreid.algorithms import Supervised
        from pyreid.data import SynthConfig, generate
        from pyreid.training import Engine, TrainConfig

        base = tmp_path_factory.mktemp("trained_run")
        data, out = str(base / "synthetic"), str(base / "run")
        generate(data, SynthConfig(ids_train=6, ids_test=4, cameras=3, images_per_id=5), progress=False)
        config = TrainConfig(dataset="synthetic", data_root=data, arch="resnet18", height=128, width=64, epochs=1,
                             iters=2, batch_size=8, num_instances=2, workers=0, progress=False, plots=False,
                             device="cpu", out=out, warmup_epochs=0)
        Engine(config, Supervised.Options(), Supervised).run()
        assert os.path.isfile(os.path.join(out, "best.pth")) and os.path.isfile(os.path.join(out, "checkpoint.pth"))
        _CACHE["run"] = {"data": data, "out": out}
    return _CACHE["run"]
