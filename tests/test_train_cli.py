"""`pyreid train` / `pyreid eval` end to end on a tiny synthetic set, on CPU.

Runs are a few iterations of ResNet-18 / MobileNetV2 at 128 x 64: what they
check is the files a run writes, resume equality after SIGKILL, and the errors,
not how well the models learn (README has those measurements).
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from pyreid.cli import main
from pyreid.data import SynthConfig, generate
from pyreid.training import Engine, NonFiniteLossError, TrainConfig, is_timing, load_checkpoint

SCORES = ("mAP", "rank1", "rank5", "rank10", "mINP")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate(str(root), SynthConfig(ids_train=8, ids_test=6, cameras=3, images_per_id=6))
    return str(root)


def _flags(data_root, out, epochs=2, iters=2, **extra):
    flags = ["--dataset", "synthetic", "--data-root", data_root, "--arch", "resnet18", "--height", "128",
             "--width", "64", "--epochs", str(epochs), "--iters", str(iters), "--batch-size", "8",
             "--num-instances", "2", "--workers", "0", "--eval-step", "1", "--test-batch-size", "32",
             "--no-progress", "--out", str(out), "--seed", "1", "--warmup-epochs", "1"]
    for key, value in extra.items():
        flag = key.replace("_", "-")
        flags += [f"--{flag}"] if value is True else [f"--no-{flag}"] if value is False else [f"--{flag}", str(value)]
    return flags


def _history_without_timings(history):
    return [{k: v for k, v in h.items() if not is_timing(k)} for h in history]


def test_supervised_run_writes_everything(data_root, tmp_path, capsys):
    out = tmp_path / "sup"
    assert main(["train", "supervised", *_flags(data_root, out)]) == 0
    for name in ("metrics.json", "checkpoint.pth", "best.pth", "train.log", "curves.png", "cmc.png",
                 "ranked_lists.png", "embedding.png"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "finished"
    assert metrics["config"]["arch"] == "resnet18" and metrics["config"]["options"]["temperature"] == 0.1
    history = metrics["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert "loss" not in history[0]  # epoch 0: evaluated before any training
    for h in history:
        assert all(0.0 <= h[k] <= 1.0 for k in SCORES)
    for h in history[1:]:
        assert {"loss", "loss_id", "loss_triplet", "lr", "train_seconds", "images_per_second"} <= set(h)
        assert h["loss"] == pytest.approx(h["loss_id"] + h["loss_triplet"])
    ckpt = load_checkpoint(str(out / "checkpoint.pth"))
    assert ckpt["epoch"] == 2 and ckpt["algorithm"] == "supervised" and ckpt["history"] == history
    assert set(ckpt["rng"]) >= {"torch", "numpy", "python"}
    best_epoch = max(history, key=lambda h: h["mAP"])["epoch"]
    assert load_checkpoint(str(out / "best.pth"))["epoch"] == best_epoch
    log = (out / "train.log").read_text()
    assert "epoch 0: mAP" in log and "epoch 2/2: loss" in log and "done:" in log

    # pyreid eval on best.pth reproduces the run's score for that epoch, and draws with --plots.
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out / "best.pth"), "--plots", "--workers", "0", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    scores = json.loads((out / "eval.json").read_text())
    assert scores["mAP"] == pytest.approx(max(h["mAP"] for h in history), abs=1e-6)
    assert f"mAP {100 * scores['mAP']:.1f}%" in printed
    assert (out / "eval_cmc.png").stat().st_size > 0 and (out / "eval_ranked_lists.png").stat().st_size > 0
    assert main(["eval", "--checkpoint", str(out / "checkpoint.pth"), "--rerank", "--workers", "0",
                 "--no-progress"]) == 0
    euclidean = json.loads((out / "eval_rerank.json").read_text())
    assert euclidean["rerank"] is True and euclidean["rerank_distance"] == "euclidean"
    # torchreid's / Cluster-Contrast's input: a file of its own, next to the paper's.
    assert main(["eval", "--checkpoint", str(out / "checkpoint.pth"), "--rerank", "--rerank-distance", "sqeuclidean",
                 "--workers", "0", "--no-progress"]) == 0
    squared = json.loads((out / "eval_rerank_sqeuclidean.json").read_text())
    assert squared["rerank"] is True and squared["rerank_distance"] == "sqeuclidean"


def test_eval_rerank_distance_needs_rerank_and_a_known_value(tmp_path, capsys):
    ckpt = str(tmp_path / "missing.pth")
    assert main(["eval", "--checkpoint", ckpt, "--rerank-distance", "sqeuclidean"]) == 2
    assert "--rerank-distance needs --rerank" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "--checkpoint", ckpt, "--rerank", "--rerank-distance", "cosine"])
    assert "invalid choice: 'cosine'" in capsys.readouterr().err


def test_triplet_runs_with_mobilenet_embedding_head_and_resnet_bnneck(data_root, tmp_path):
    out = tmp_path / "mobile"
    flags = _flags(data_root, out, epochs=1, plots=False)
    flags[flags.index("resnet18")] = "mobilenet_v2"
    assert main(["train", "triplet", *flags]) == 0
    ckpt = load_checkpoint(str(out / "checkpoint.pth"))
    args = ckpt["model_args"]["model"]
    assert (args["arch"], args["embedding_dim"], args["neck"], args["normalize"]) == ("mobilenet_v2", 128, "none",
                                                                                     True)
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert set(history[1]) >= {"loss", "loss_triplet"} and "loss_id" not in history[1]

    out = tmp_path / "bnneck"
    assert main(["train", "triplet", *_flags(data_root, out, epochs=1, plots=False), "--head", "bnneck",
                 "--id-weight", "0.5", "--margin", "0.3"]) == 0
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert {"loss_triplet", "loss_id"} <= set(history[1])
    assert load_checkpoint(str(out / "checkpoint.pth"))["model_args"]["model"]["num_classes"] == 8


def _cli(*args, **kwargs):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "pyreid", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(data_root, tmp_path):
    """Kill a run with SIGKILL during epoch 2 of 3, resume it: same weights, same metrics."""
    common = dict(epochs=3, iters=6, plots=False)
    straight = _cli("train", "supervised", *_flags(data_root, tmp_path / "straight", **common))
    assert straight.wait(timeout=600) == 0, straight.stdout.read()

    killed_dir = tmp_path / "killed"
    victim = _cli("train", "supervised", *_flags(data_root, killed_dir, **common))
    checkpoint = killed_dir / "checkpoint.pth"
    deadline = time.time() + 600
    epoch = -1
    while epoch < 1 and time.time() < deadline and victim.poll() is None:
        time.sleep(0.05)
        if checkpoint.exists():
            try:
                epoch = torch.load(checkpoint, weights_only=True)["epoch"]
            except Exception:  # noqa: BLE001 - caught between write and rename: try again
                continue
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    saved = load_checkpoint(str(checkpoint))["epoch"]
    assert 1 <= saved < 3, f"killed after epoch {saved}: not in the middle of the run"

    resumed = _cli("train", "supervised", "--out", str(killed_dir), "--resume", "--no-progress")
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output
    assert f"resumed supervised from epoch {saved}" in output
    a = load_checkpoint(str(tmp_path / "straight" / "checkpoint.pth"))
    b = load_checkpoint(str(checkpoint))
    assert a["epoch"] == b["epoch"] == 3
    model_a, model_b = a["models"]["model"], b["models"]["model"]
    assert model_a.keys() == model_b.keys()
    for key in model_a:
        assert torch.equal(model_a[key], model_b[key]), key
    optimizer_a, optimizer_b = a["optimizers"]["model"], b["optimizers"]["model"]
    for key in optimizer_a["state"]:
        for name, value in optimizer_a["state"][key].items():
            assert torch.equal(value, optimizer_b["state"][key][name])
    assert _history_without_timings(a["history"]) == _history_without_timings(b["history"])
    metrics = json.loads((killed_dir / "metrics.json").read_text())
    assert _history_without_timings(metrics["history"]) == _history_without_timings(a["history"])


def _error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    return err


def test_clear_errors_and_nothing_written_is_lost(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert "batch_size (9) must be a multiple of num_instances (2)" in _error(
        capsys, ["train", "supervised", *_flags(data_root, out), "--batch-size", "9"])
    assert "a batch needs 10 identities (batch_size 20 / num_instances 2) but the training set has 8" in _error(
        capsys, ["train", "supervised", *_flags(data_root, out), "--batch-size", "20"])
    missing = _error(capsys, ["train", "supervised", *_flags(str(tmp_path / "nowhere"), out)])
    assert "bounding_box_train" in missing  # names the expected layout
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("epochs: 2\nbatchsize: 8\n")
    assert "unknown key 'batchsize'; valid keys:" in _error(
        capsys, ["train", "supervised", "--config", str(bad_config), "--out", str(out)])
    assert "nothing to resume" in _error(capsys, ["train", "supervised", "--out", str(out), "--resume"])

    # A finished run is never overwritten by a new one ...
    assert main(["train", "supervised", *_flags(data_root, out, epochs=1, plots=False)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "already holds a run (checkpoint.pth, metrics.json, best.pth): pass --resume" in _error(
        capsys, ["train", "supervised", *_flags(data_root, out, epochs=1)])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # ... nor resumed with other settings.
    assert "lr: run has 0.00035, asked 0.1" in _error(
        capsys, ["train", "supervised", "--out", str(out), "--resume", "--lr", "0.1"])
    # A truncated or foreign checkpoint is named as such.
    ckpt = out / "checkpoint.pth"
    ckpt.write_bytes(before["checkpoint.pth"][:1000])
    assert "truncated or corrupt" in _error(capsys, ["train", "supervised", "--out", str(out), "--resume"])
    torch.save({"conv1.weight": torch.zeros(1)}, ckpt)
    assert "not a pyreid training checkpoint" in _error(capsys, ["train", "supervised", "--out", str(out),
                                                                 "--resume"])
    assert "not a pyreid training checkpoint" in _error(capsys, ["eval", "--checkpoint", str(ckpt)])


def test_non_finite_loss_stops_before_the_step(data_root, tmp_path, monkeypatch):
    """A NaN loss at epoch 2, iteration 1: the weights do not take that step, the epoch-1 checkpoint stays."""
    from pyreid.algorithms import Supervised

    snapshot = {}
    real_step = Supervised.step

    def step(self, batch, info):
        losses = real_step(self, batch, info)
        if (info.epoch, info.iteration) == (2, 1):
            snapshot.update({k: v.detach().clone() for k, v in self.network.state_dict().items()})
            losses["id"] = losses["id"] * float("nan")
        return losses

    monkeypatch.setattr(Supervised, "step", step)
    out = tmp_path / "nan"
    config = TrainConfig(dataset="synthetic", data_root=data_root, arch="resnet18", height=128, width=64, epochs=3,
                         iters=3, batch_size=8, num_instances=2, workers=0, progress=False, plots=False,
                         out=str(out), test_batch_size=32)
    engine = Engine(config, Supervised.Options(), Supervised)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, iteration 1 \(id=nan, triplet=.*\); the step was not "
                                                 r"taken.*checkpoint.pth \(epoch 1\)"):
        engine.run()
    for key, value in engine.network.state_dict().items():
        assert torch.equal(value, snapshot[key]), key
    assert all(torch.isfinite(v).all() for v in engine.network.state_dict().values() if v.is_floating_point())
    assert load_checkpoint(str(out / "checkpoint.pth"))["epoch"] == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"].startswith("failed after epoch 1: NonFiniteLossError")
    assert [h["epoch"] for h in metrics["history"]] == [0, 1]
    assert "run stopped after epoch 1" in (out / "train.log").read_text()
