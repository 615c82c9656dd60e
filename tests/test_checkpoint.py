"""pyreid.training.checkpoint: atomic writes, clear errors on bad files, RNG states round trip."""

import random

import numpy as np
import pytest
import torch

from pyreid.training.checkpoint import FORMAT, CheckpointError, load_checkpoint, rng_state, save_atomic, set_rng_state


def test_round_trip_loads_with_weights_only(tmp_path):
    path = str(tmp_path / "c.pth")
    state = {"format": FORMAT, "version": 1, "epoch": 3, "model": {"w": torch.arange(4.0)}, "rng": rng_state(),
             "history": [{"epoch": 0, "mAP": 0.5}], "config": {"milestones": [1, 2], "weights": None}}
    save_atomic(state, path)
    back = load_checkpoint(path)
    assert back["epoch"] == 3 and torch.equal(back["model"]["w"], torch.arange(4.0))
    assert back["history"] == state["history"] and back["config"] == state["config"]
    assert not [p for p in tmp_path.iterdir() if p.name != "c.pth"]  # no temporary file left behind


def test_rng_states_restore_every_generator():
    state = rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    set_rng_state(state)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def test_a_failed_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = str(tmp_path / "c.pth")
    save_atomic({"format": FORMAT, "epoch": 1}, path)

    def dies_half_way(obj, f):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # killed while writing

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"format": FORMAT, "epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pth"]


def test_truncated_foreign_and_missing_files(tmp_path):
    good = tmp_path / "good.pth"
    save_atomic({"format": FORMAT, "model": {"w": torch.randn(100, 100)}}, str(good))
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"truncated.pth \(\d+ bytes\) cannot be read: it is truncated or corrupt"):
        load_checkpoint(str(truncated))
    foreign = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, foreign)
    with pytest.raises(CheckpointError, match=r"not a pyreid training checkpoint .*'conv1.weight'.*--weights FILE"):
        load_checkpoint(str(foreign))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(str(tmp_path / "none.pth"))
    newer = tmp_path / "newer.pth"
    save_atomic({"format": FORMAT, "version": 99}, str(newer))
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(str(newer))
