"""The engine's second shape: algorithms with several data sets, models and optimisers, rounds and
freezing that resume exactly, the docs' worked examples, and a command line whose help needs no torch.
"""

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from pyreid.data import SynthConfig, ZippedLoader, generate
from pyreid.training import Engine, TrainConfig, is_timing, load_checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))
DOCS = os.path.join(os.path.dirname(HERE), "docs", "training.md")


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    generate(str(root / "source"), SynthConfig(ids_train=8, ids_test=4, cameras=3, images_per_id=6, seed=1))
    generate(str(root / "target"), SynthConfig(ids_train=6, ids_test=5, cameras=3, images_per_id=6, seed=2))
    return root


def _config(out, **kw):
    base = dict(arch="resnet18", height=128, width=64, batch_size=8, num_instances=2, epochs=2, iters=2, eval_step=1,
                workers=0, test_batch_size=32, progress=False, plots=False, out=str(out), warmup_epochs=0.0, seed=4)
    base.update(kw)
    return TrainConfig(**base)


def _docs_namespace():
    """The Python blocks of docs/training.md's "Adding an algorithm", run in one namespace."""
    text = open(DOCS).read()
    section = text[text.index("## Adding an algorithm"):]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2
    namespace = {}
    for block in blocks:
        exec(compile(block, DOCS, "exec"), namespace)
    return namespace


def _history(history):
    return [{k: v for k, v in h.items() if not is_timing(k)} for h in history]


def test_zipped_loader_steps_its_loaders_together():
    class Numbers(list):
        def __init__(self, values):
            super().__init__(values)
            self.sampler = self
            self.epoch = None

        def set_epoch(self, epoch):
            self.epoch = epoch

    a, b = Numbers([1, 2, 3]), Numbers(["x", "y"])
    zipped = ZippedLoader(source=a, target=b)
    assert len(zipped) == 2
    assert list(zipped) == [{"source": 1, "target": "x"}, {"source": 2, "target": "y"}]
    zipped.set_epoch(7)
    assert a.epoch == b.epoch == 7
    with pytest.raises(ValueError, match="at least one loader"):
        ZippedLoader()


def test_docs_one_model_example_trains(sets, tmp_path):
    ns = _docs_namespace()
    config = _config(tmp_path / "softmax", dataset="synthetic", data_root=str(sets / "source"))
    result = Engine(config, ns["SoftmaxOptions"](), ns["Softmax"]).run()
    assert [h["epoch"] for h in result["history"]] == [0, 1, 2]
    assert set(result["history"][1]) >= {"loss", "loss_id", "mAP"}


def test_two_data_sets_two_optimisers_evaluated_on_the_target(sets, tmp_path):
    ns = _docs_namespace()
    cls = ns["SourceAndTarget"]
    out = tmp_path / "uda"
    config = _config(out, source="synthetic", source_root=str(sets / "source"), target="synthetic",
                     target_root=str(sets / "target"))
    engine = Engine(config, ns["SoftmaxOptions"](), cls)
    result = engine.run()
    history = result["history"]
    # The run's scores are the target's; the source split is recorded under its own keys.
    for h in history:
        assert {"mAP", "rank1", "source_mAP", "source_rank1"} <= set(h)
    assert history[0]["mAP"] != history[0]["source_mAP"]
    # Both batches of a step count (8 source + 8 target images per step).
    assert history[1]["images_per_second"] > 0
    ckpt = load_checkpoint(str(out / "checkpoint.pth"))
    assert set(ckpt["models"]) == set(ckpt["optimizers"]) == {"model", "head"}
    assert ckpt["optimizers"]["head"]["param_groups"][0]["momentum"] == 0.9  # the head's own SGD
    assert "betas" in ckpt["optimizers"]["model"]["param_groups"][0]  # the backbone's Adam (the config's)
    assert ckpt["evaluated_model"] == "model" and ckpt["config"]["target_root"] == str(sets / "target")
    # The target split scored at the end is the evaluated model's on the target data set.
    final = engine.evaluate("target").summary()
    assert final["mAP"] == pytest.approx(history[-1]["mAP"], abs=1e-6)

    # A two-data-set algorithm without its data sets is a clear error before any work.
    from pyreid.training import ConfigError

    with pytest.raises(ConfigError, match="reads a source data set: pass --source NAME --source-root DIR"):
        Engine(_config(tmp_path / "none"), ns["SoftmaxOptions"](), cls).run()


def _toy(data, out, *flags, nproc=1, kill_at=None):
    script = os.path.join(HERE, "toy_algorithms.py")
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", script]
           if nproc > 1 else [sys.executable, script])
    env = dict(os.environ, OMP_NUM_THREADS="1" if nproc > 1 else os.environ.get("OMP_NUM_THREADS", ""),
               PYTHONPATH=os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]))
    if not env["OMP_NUM_THREADS"]:
        del env["OMP_NUM_THREADS"]
    extra = ["--kill-at", kill_at] if kill_at else []
    return subprocess.run([*cmd, data, str(out), *flags, *extra], env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def straight_rounds(sets, tmp_path_factory):
    out = tmp_path_factory.mktemp("rounds") / "straight"
    result = _toy(str(sets / "source"), out)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_rounds_and_freezing_do_what_they_say(straight_rounds):
    history = json.loads((straight_rounds / "metrics.json").read_text())["history"]
    by_epoch = {h["epoch"]: h for h in history}
    assert [by_epoch[e]["round"] for e in (1, 2, 3, 4)] == [1, 1, 2, 2]
    assert [by_epoch[e]["frozen"] for e in (1, 2, 3, 4)] == [1, 0, 1, 0]
    # Epoch 3 restarts from a model built anew: its frozen backbone is the fresh one, not epoch 2's.
    assert by_epoch[3]["backbone_checksum"] != by_epoch[2]["backbone_checksum"]
    # A frozen backbone does not move; once unfrozen it does; the classifier trains in both.
    assert by_epoch[2]["backbone_checksum"] != by_epoch[1]["backbone_checksum"]
    assert by_epoch[4]["backbone_checksum"] != by_epoch[3]["backbone_checksum"]
    ckpt = load_checkpoint(str(straight_rounds / "checkpoint.pth"))
    assert ckpt["generation"] == {"model": 1} and ckpt["frozen"] == {"model": []}
    assert ckpt["algorithm_state"] == {"round": 2}


def test_frozen_parameters_keep_their_values(sets, tmp_path):
    """Within one frozen epoch the backbone's parameters stay bit-identical (weight decay included)."""
    sys.path.insert(0, HERE)
    try:
        from toy_algorithms import RoundsAndFreezing, RoundsOptions, config
    finally:
        sys.path.remove(HERE)
    engine = Engine(config(str(sets / "source"), str(tmp_path / "frozen"), epochs=1, weight_decay=0.1),
                    RoundsOptions(), RoundsAndFreezing)
    start = {}

    class Snapshot:
        name = ""

        def before_train(self, engine):
            start.update({n: p.detach().clone() for n, p in engine.network.named_parameters()})

        def __getattr__(self, point):
            return lambda *args: None

    RoundsAndFreezing.hooks = lambda self: [Snapshot()]
    try:
        engine.run()
    finally:
        del RoundsAndFreezing.hooks
    for name, value in engine.network.named_parameters():
        if name.startswith("backbone."):
            assert torch.equal(value, start[name]), name
    assert not torch.equal(engine.network.classifier.weight, start["classifier.weight"])


@pytest.mark.parametrize("kill_at", ["2,1", "3,1"])
def test_rounds_and_freezing_resume_exactly_after_sigkill(sets, straight_rounds, tmp_path, kill_at):
    """Killed in a frozen epoch's successor (2) or just after a round boundary (3), then resumed."""
    out = tmp_path / "killed"
    killed = _toy(str(sets / "source"), out, kill_at=kill_at)
    assert killed.returncode == -9, killed.stdout + killed.stderr
    saved = load_checkpoint(str(out / "checkpoint.pth"))
    assert saved["epoch"] == int(kill_at[0]) - 1
    resumed = _toy(str(sets / "source"), out, "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    a = load_checkpoint(str(straight_rounds / "checkpoint.pth"))
    b = load_checkpoint(str(out / "checkpoint.pth"))
    for key, value in a["models"]["model"].items():
        assert torch.equal(value, b["models"]["model"][key]), key
    assert a["generation"] == b["generation"] and a["frozen"] == b["frozen"]
    assert _history(a["history"]) == _history(b["history"])


def test_rounds_and_freezing_under_torchrun_keep_ranks_equal(sets, tmp_path):
    """Freezing re-wraps DDP; --check-ranks compares every process's weights after every step."""
    out = tmp_path / "ddp"
    result = _toy(str(sets / "source"), out, "--check-ranks", nproc=2)
    assert result.returncode == 0, result.stdout + result.stderr
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h.get("frozen") for h in history[1:]] == [1, 0, 1, 0]


def test_version_1_checkpoints_resume(sets, tmp_path):
    """A checkpoint of format version 1 (one model, optimizer, scheduler, best) resumes."""
    from pyreid.algorithms import Supervised
    from pyreid.training import checkpoint as ckpt_io

    out = tmp_path / "v1"
    config = _config(out, dataset="synthetic", data_root=str(sets / "source"), epochs=1)
    Engine(config, Supervised.Options(), Supervised).run()
    state = torch.load(out / "checkpoint.pth", weights_only=True)
    v1 = {k: v for k, v in state.items() if k not in ("models", "model_args", "optimizers", "schedulers", "frozen",
                                                     "generation", "evaluated_model", "hooks")}
    v1.update(version=1, model=state["models"]["model"], model_args=state["model_args"]["model"],
              optimizer=state["optimizers"]["model"], scheduler=state["schedulers"]["model"],
              best=state["hooks"]["evaluation"]["best"])
    ckpt_io.save_atomic(v1, str(out / "checkpoint.pth"))
    resumed = Engine(_config(out, dataset="synthetic", data_root=str(sets / "source"), epochs=2, resume=True),
                     Supervised.Options(), Supervised).run()
    assert [h["epoch"] for h in resumed["history"]] == [0, 1, 2]
    assert resumed["best"]["epoch"] is not None
    # A newer format than this pyreid reads is refused with the version that wrote it.
    state = torch.load(out / "checkpoint.pth", weights_only=True)
    state.update(version=99, pyreid_version="9.0")
    ckpt_io.save_atomic(state, str(out / "checkpoint.pth"))
    with pytest.raises(ckpt_io.CheckpointError, match=r"format version 99 \(written by pyreid 9.0\)"):
        load_checkpoint(str(out / "checkpoint.pth"))


NO_TORCH = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision") or name == "pyreid._C":
            raise ImportError("importing " + name + " is not allowed here")
sys.meta_path.insert(0, Block())
import pyreid
from pyreid.cli import main
for argv in (["--help"], ["train", "--help"], ["train", "cluster-contrast", "--help"], ["train", "supervised", "--help"],
             ["train", "pul", "--help"], ["train", "uda", "--help"], ["eval", "--help"], ["synth", "--help"], ["demo", "--help"],
             ["extract", "--help"], ["search", "--help"], ["export", "--help"]):
    try:
        main(argv)
    except SystemExit as e:
        assert e.code == 0, (argv, e.code)
print("torch loaded:", "torch" in sys.modules)
"""


def test_help_runs_where_importing_torch_raises():
    result = subprocess.run([sys.executable, "-c", NO_TORCH], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "torch loaded: False" in result.stdout
    # The help shows the run settings the algorithm uses, not the generic defaults.
    assert re.search(r"--batch-size INT\s+images per batch.*\(default: 256\)", result.stdout, flags=re.S)
    assert "--camera-pattern REGEX" in result.stdout and "GALLERY/.pyreid_cache/" in result.stdout
