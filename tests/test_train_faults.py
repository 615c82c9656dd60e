"""What a run does when the world misbehaves: a full disk, a folder that already holds a
run, a checkpoint write killed half-way, a resume with nothing left to do. Tiny synthetic set, CPU."""

import errno
import glob
import json
import os
import subprocess
import sys

import pytest
import torch

from pyreid.cli import main
from pyreid.data import SynthConfig, build_dataset, generate
from pyreid.training import checkpoint as ckpt_io

from test_train_cli import _error, _flags


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate(str(root), SynthConfig(ids_train=8, ids_test=6, cameras=3, images_per_id=6))
    return str(root)


# ---------------------------------------------------------------------------------------------- disk full
@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1234 vs 1100"),
    OSError(errno.ENOSPC, "No space left on device"),
])
def test_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch, error):
    path = tmp_path / "checkpoint.pth"
    ckpt_io.save_atomic({"epoch": 1}, str(path))

    def full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise error

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(ckpt_io.CheckpointWriteError, match=f"no space left on device while writing {path}"):
        ckpt_io.save_atomic({"epoch": 2}, str(path))
    monkeypatch.undo()
    assert torch.load(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["checkpoint.pth"]  # no temporary left


def test_full_disk_during_a_run_is_one_line(data_root, tmp_path, monkeypatch, capsys):
    real = torch.save
    calls = []

    def full_after_epoch_0(obj, f, *args, **kwargs):
        calls.append(1)
        if isinstance(obj, dict) and obj.get("epoch") == 1 and "optimizers" in obj:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_after_epoch_0)
    out = tmp_path / "run"
    message = _error(capsys, ["train", "supervised", *_flags(data_root, out, epochs=2, plots=False)])
    assert f"no space left on device while writing {out / 'checkpoint.pth'}" in message
    assert ckpt_io.load_checkpoint(str(out / "checkpoint.pth"))["epoch"] == 0  # the last good one


def test_full_disk_for_metrics_json(tmp_path, monkeypatch):
    from pyreid.training.hooks import write_json_atomic

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(json, "dump", full)
    with pytest.raises(ckpt_io.CheckpointWriteError, match="no space left on device while writing .*metrics.json"):
        write_json_atomic({}, str(tmp_path / "metrics.json"))
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------------------------- run folders
def test_a_folder_holding_only_best_pth_is_not_overwritten(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "best.pth").write_bytes(b"the only copy of a model")
    assert "already holds a run (best.pth): pass --resume" in _error(
        capsys, ["train", "supervised", *_flags(data_root, out, epochs=1)])
    assert (out / "best.pth").read_bytes() == b"the only copy of a model"


def test_resume_removes_stale_temporaries_and_says_when_nothing_is_left(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "supervised", *_flags(data_root, out, epochs=1, plots=False)]) == 0
    # A run killed while writing (its PID gone) and one still writing (this process's parent: alive).
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / f".checkpoint.pth.tmp-{dead.pid}"
    stale.write_bytes(b"half a checkpoint")
    live = out / f".checkpoint.pth.tmp-{os.getppid()}"
    live.write_bytes(b"someone is writing")
    before = (out / "metrics.json").read_bytes()

    capsys.readouterr()
    assert main(["train", "supervised", "--out", str(out), "--resume", "--epochs", "1"]) == 0
    err = capsys.readouterr().err
    assert "nothing to do: the run in" in err and "already trained 1 epochs and --epochs is 1" in err
    assert not stale.exists() and live.exists()
    assert (out / "metrics.json").read_bytes() == before  # left as it was

    capsys.readouterr()
    assert main(["train", "supervised", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert json.loads((out / "metrics.json").read_text())["status"] == "finished"
    assert ckpt_io.load_checkpoint(str(out / "checkpoint.pth"))["epoch"] == 2


def test_remove_stale_temporaries_leaves_other_files(tmp_path):
    (tmp_path / "checkpoint.pth").write_bytes(b"x")
    (tmp_path / "metrics.json.tmp-999999999").write_bytes(b"x")
    (tmp_path / "notes.tmp-abc").write_bytes(b"x")
    assert ckpt_io.remove_stale_temporaries(str(tmp_path)) == [str(tmp_path / "metrics.json.tmp-999999999")]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pth", "notes.tmp-abc"]
