"""TensorBoardHook: every number of metrics.json as a scalar, read back with tensorboard's own event reader."""

import importlib.util
import json
import math
import os
import sys
from types import SimpleNamespace

import pytest
from trained_run import trained_run

from pyreid.training.config import TrainConfig
from pyreid.training.hooks import TensorBoardHook

HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None
needs_tensorboard = pytest.mark.skipif(not HAS_TENSORBOARD, reason="tensorboard is not installed")


def _engine(out, history, is_main=True):
    """What the hook reads of the engine: the history, the main-process flag and the run folder."""
    return SimpleNamespace(history=history, dist=SimpleNamespace(is_main=is_main),
                           path=lambda name: os.path.join(out, name))


def _read_scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(folder, size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@needs_tensorboard
def test_every_metric_becomes_a_scalar(tmp_path_factory, tmp_path):
    run = trained_run(tmp_path_factory)
    with open(os.path.join(run["out"], "metrics.json")) as f:
        history = json.load(f)["history"]  # a real run's entries: epoch 0 scores, epoch 1 losses, lr, timings, scores
    # ... and what a clustering epoch adds (keys of docs/training.md)
    history.append({"epoch": 2, "loss": 1.5, "lr": 3.5e-5, "num_clusters": 12, "num_outliers": 3, "ari": 0.61,
                    "nmi": 0.8, "pseudo_label_seconds": 0.7, "source_mAP": 0.42, "skipped": False})
    hook = TensorBoardHook()
    seen = []
    for entry in history:
        seen.append(entry)
        hook.epoch_done(_engine(str(tmp_path), seen), entry["epoch"])
    hook.after_train(None)
    scalars = _read_scalars(str(tmp_path / "tensorboard"))
    expected = {(TensorBoardHook.tag(k), e["epoch"]): v for e in history for k, v in e.items()
                if k != "epoch" and not isinstance(v, bool) and isinstance(v, (int, float))}
    got = {(tag, step): value for tag, points in scalars.items() for step, value in points}
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert math.isclose(got[key], value, rel_tol=1e-6, abs_tol=1e-7), key
    for tag in ("scores/mAP", "scores/rank1", "scores/mINP", "loss/loss", "lr/lr", "clusters/num_clusters",
                "pseudo_labels/ari", "time/train_seconds", "scores/source_mAP"):
        assert tag in scalars, tag
    assert [step for step, _ in scalars["scores/mAP"]] == [0, 1]


@needs_tensorboard
def test_only_the_main_process_writes(tmp_path):
    hook = TensorBoardHook()
    hook.epoch_done(_engine(str(tmp_path), [{"epoch": 0, "mAP": 0.5}], is_main=False), 0)
    hook.close()
    assert not os.path.exists(tmp_path / "tensorboard")


def test_missing_tensorboard_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match="--tensorboard needs the tensorboard package: pip install tensorboard"):
        TensorBoardHook()


def test_the_flag_is_a_run_setting():
    assert TrainConfig().tensorboard is False
    assert TrainConfig(tensorboard=True).tensorboard is True
