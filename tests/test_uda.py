"""UDA: domain-specific BatchNorm, separate and mixed heads, target identities that never reach a loss,
resume after SIGKILL, the source schedules, bad input, the command line, the shipped configs, torchrun."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from torch import nn

from pyreid.algorithms import UDA, UDAOptions
from pyreid.algorithms.uda import mixed_targets
from pyreid.cli import main
from pyreid.data import SynthConfig, build_dataset, generate
from pyreid.models import build_model
from pyreid.models.domain_batch_norm import ALL_ROWS, convert_domain_bn, domain_rows
from pyreid.training import ConfigError, Engine, TrainConfig, is_timing, load_checkpoint, resolve_config

QUALITY = ("ari", "nmi", "precision", "recall", "f1")


# ---------------------------------------------------------------- domain-specific BatchNorm
def _plain_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.BatchNorm1d(4))


def test_domain_bn_keeps_two_sets_of_statistics_and_uses_the_targets_at_test():
    import copy

    plain = _plain_net()
    source_ref, target_ref = copy.deepcopy(plain), copy.deepcopy(plain)
    model = convert_domain_bn(copy.deepcopy(plain))
    g = torch.Generator().manual_seed(1)
    source = torch.randn(6, 3, 8, 8, generator=g) + 2.0
    target = 0.5 * torch.randn(5, 3, 8, 8, generator=g) - 1.0
    with domain_rows(model, 6):
        out = model(torch.cat([source, target]))
    # Each domain's rows are normalised as a plain network normalises that domain alone.
    torch.testing.assert_close(out, torch.cat([source_ref(source), target_ref(target)]))
    bn = model[1]
    torch.testing.assert_close(bn.running_mean, target_ref[1].running_mean)
    torch.testing.assert_close(bn.source_running_mean, source_ref[1].running_mean)
    assert not torch.allclose(bn.running_mean, bn.source_running_mean)
    assert int(bn.num_batches_tracked) == int(bn.source_num_batches_tracked) == 1
    # At test (no domain_rows): the target's statistics; ALL_ROWS: the source's.
    model.eval(), source_ref.eval(), target_ref.eval()
    x = torch.randn(3, 3, 8, 8, generator=g)
    torch.testing.assert_close(model(x), target_ref(x))
    with domain_rows(model, ALL_ROWS):
        torch.testing.assert_close(model(x), source_ref(x))
    # Gradients reach each domain's own affine parameters only.
    model.train()
    with domain_rows(model, ALL_ROWS):
        model(source).sum().backward()
    assert bn.source_weight.grad is not None and bn.weight.grad is None


def test_domain_bn_model_files_round_trip_and_plain_weights_fill_both_domains(tmp_path):
    plain = build_model("resnet18", num_classes=3)
    with torch.no_grad():
        plain.neck.running_mean.fill_(0.25)
    path = tmp_path / "plain.pth"
    torch.save(plain.state_dict(), path)
    model = build_model("resnet18", num_classes=3, weights=str(path), domain_bn=True)
    assert model.load_report.missing_keys == [] and model.build_args["domain_bn"] is True
    assert torch.equal(model.neck.source_running_mean, model.neck.running_mean)
    assert not model.neck.source_bias.requires_grad and model.neck.source_weight.requires_grad
    # A domain-BN model's own file rebuilds from its build_args, strictly.
    with torch.no_grad():
        model.neck.source_running_mean.fill_(2.0)
    again = build_model(**model.build_args)
    again.load_state_dict(model.state_dict())
    assert torch.equal(again.neck.source_running_mean, torch.full_like(again.neck.running_mean, 2.0))
    assert "domain_bn" not in build_model("resnet18").build_args  # other models' files are unchanged


# ---------------------------------------------------------------- runs on tiny data
@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("uda")
    generate(str(root / "source"), SynthConfig(ids_train=8, ids_test=4, cameras=3, images_per_id=6, seed=1))
    generate(str(root / "target"), SynthConfig(ids_train=6, ids_test=4, cameras=3, images_per_id=6, seed=2))
    return root


def _config(sets, out, **kw):
    base = dict(source="synthetic", source_root=str(sets / "source"), target="synthetic",
                target_root=str(sets / "target"), arch="resnet18", height=64, width=32, batch_size=8, num_instances=2,
                epochs=2, iters=2, eval_step=1, workers=0, test_batch_size=32, progress=False, plots=False,
                out=str(out), warmup_epochs=0.0, seed=4, camera_aware=False, milestones=[])
    base.update(kw)
    return TrainConfig(**base)


def _options(**kw):
    return UDAOptions(**{"eps": 0.6, "k1": 10, "k2": 3, "min_samples": 2, **kw})


def _history(history, drop=()):
    return [{k: v for k, v in h.items() if not is_timing(k) and k not in drop} for h in history]


def _algorithm(sets, tmp_path, **options):
    config = _config(sets, tmp_path / "unused")
    datasets = {name: build_dataset("synthetic", str(sets / name)) for name in ("source", "target")}
    torch.manual_seed(0)
    algorithm = UDA(config, _options(**options), datasets, torch.device("cpu"), iters_per_epoch=2)
    algorithm.build_models()
    algorithm.setup()
    return algorithm


@pytest.mark.parametrize("heads", ["separate", "mixed"])
def test_heads_logits_shapes_and_offsets(sets, tmp_path, heads):
    algorithm = _algorithm(sets, tmp_path, heads=heads)
    loader = algorithm.before_epoch(1)
    batch = next(iter(loader))
    images, labels = [], {}
    for domain in ("source", "target"):
        x, y = algorithm.images(batch[domain])
        images.append(x)
        labels[domain] = y
    algorithm.network.train()
    out = algorithm.network(torch.cat(images))
    heads_out = algorithm.head_outputs(out, labels)
    s = algorithm.num_source
    c = int(algorithm.pseudo_labels.max()) + 1
    bt = labels["target"].shape[0]  # fewer clusters than a batch's identities: a smaller target batch
    assert s == 8 and c >= 2 and bt == 2 * min(c, 4)
    source_logits, source_classes = heads_out["source_id"]
    target_logits, target_classes = heads_out["target_memory"]
    if heads == "separate":
        # The source classifier knows S identities, the target memory C clusters: no shared softmax.
        assert source_logits.shape == (8, s) and target_logits.shape == (bt, c)
        assert torch.equal(target_classes, labels["target"])
        assert algorithm.memory.features.shape[0] == c and algorithm.network.classifier is not None
    else:
        # One softmax over S + C classes; target cluster k is class S + k.
        assert source_logits.shape == (8, s + c) and target_logits.shape == (bt, s + c)
        assert torch.equal(target_classes, labels["target"] + s) and bool((target_classes >= s).all())
        assert algorithm.memory.features.shape[0] == s + c and algorithm.network.classifier is None
    assert torch.equal(source_classes, labels["source"])
    assert torch.equal(mixed_targets(torch.tensor([0, 7]), torch.tensor([0, 2]), 8), torch.tensor([0, 7, 8, 10]))


def test_target_identities_never_reach_a_loss(sets, tmp_path, monkeypatch):
    """The same run with the target's training identities scrambled: the same losses and weights."""
    import pyreid.training.engine as engine_module

    first = Engine(_config(sets, tmp_path / "a", epochs=1), _options(), UDA)
    first.run()
    real = engine_module.build_dataset

    def scrambled(name, root):
        data = real(name, root)
        if os.path.samefile(root, sets / "target"):
            g = torch.Generator().manual_seed(9)
            pids = torch.randint(0, 3, (len(data.train),), generator=g).tolist()
            data.train = [(path, pid, cam) for (path, _, cam), pid in zip(data.train, pids)]
        return data

    monkeypatch.setattr(engine_module, "build_dataset", scrambled)
    second = Engine(_config(sets, tmp_path / "b", epochs=1), _options(), UDA)
    second.run()
    assert second.algorithm.dataset.num_train_pids == 3  # the scrambled identities were in place
    assert _history(first.history, QUALITY) == _history(second.history, QUALITY)
    assert first.history[1]["ari"] != second.history[1]["ari"]  # the quality metrics do read them
    for key, value in first.network.state_dict().items():
        assert torch.equal(value, second.network.state_dict()[key]), key


KILLER = """
import os, signal, sys
from pyreid.algorithms.uda import UDA
real = UDA.step
def step(self, batch, info):
    if (info.epoch, info.iteration) == (2, 1):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, batch, info)
UDA.step = step
from pyreid.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _cli_flags(sets, out, epochs=2):
    return ["--source", "synthetic", "--source-root", str(sets / "source"), "--target", "synthetic", "--target-root",
            str(sets / "target"), "--arch", "resnet18", "--height", "64", "--width", "32", "--batch-size", "8",
            "--num-instances", "2", "--epochs", str(epochs), "--iters", "2", "--eval-step", "1", "--workers", "0",
            "--test-batch-size", "32", "--no-progress", "--no-plots", "--no-camera-aware", "--milestones", "5",
            "--eps", "0.6", "--k1", "10", "--k2", "3", "--min-samples", "2", "--seed", "4", "--out", str(out)]


def test_resume_after_sigkill_mid_epoch_is_exact(sets, tmp_path):
    """Mixed heads + domain BN (the most state: carried source rows, two BN sets), killed in epoch 2."""
    variant = ["--heads", "mixed", "--bn", "domain"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    straight = tmp_path / "straight"
    assert main(["train", "uda", *_cli_flags(sets, straight), *variant]) == 0
    killed = tmp_path / "killed"
    result = subprocess.run([sys.executable, "-c", KILLER, "train", "uda", *_cli_flags(sets, killed), *variant],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == -signal.SIGKILL, result.stdout + result.stderr
    assert load_checkpoint(str(killed / "checkpoint.pth"))["epoch"] == 1
    assert main(["train", "uda", "--out", str(killed), "--resume", "--no-progress"]) == 0
    a, b = load_checkpoint(str(straight / "checkpoint.pth")), load_checkpoint(str(killed / "checkpoint.pth"))
    for key, value in a["models"]["model"].items():
        assert torch.equal(value, b["models"]["model"][key]), key
    assert torch.equal(a["algorithm_state"]["source_centres"], b["algorithm_state"]["source_centres"])
    assert torch.equal(a["algorithm_state"]["pseudo_labels"], b["algorithm_state"]["pseudo_labels"])
    assert _history(a["history"]) == _history(b["history"])


def test_cli_variants_and_schedules(sets, tmp_path):
    # Separate heads (default), the source split recorded beside the target's.
    out = tmp_path / "separate"
    assert main(["train", "uda", *_cli_flags(sets, out, epochs=1)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["options"]["heads"] == "separate" and metrics["config"]["options"]["bn"] == "shared"
    first = metrics["history"][1]
    assert {"mAP", "source_mAP", "ari", "num_clusters", "loss_source_id", "loss_source_triplet",
            "loss_target_memory"} <= set(first)
    assert (first["source_trained"], first["target_trained"]) == (1, 1)
    # Mixed heads after one source-only warm-up epoch: no pseudo labels in the warm-up.
    out = tmp_path / "mixed"
    assert main(["train", "uda", *_cli_flags(sets, out), "--heads", "mixed", "--source-warmup", "1"]) == 0
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [(h["source_trained"], h["target_trained"]) for h in history[1:]] == [(1, 0), (1, 1)]
    assert "num_clusters" not in history[1] and "loss_target_memory" not in history[1]
    assert "num_clusters" in history[2] and "loss_target_memory" in history[2]
    # Domain BN, the source dropped from epoch 2: the source classifier is frozen then; best.pth evaluates.
    out = tmp_path / "domain"
    assert main(["train", "uda", *_cli_flags(sets, out), "--bn", "domain", "--source-until", "2"]) == 0
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [(h["source_trained"], h["target_trained"]) for h in history[1:]] == [(1, 1), (0, 1)]
    assert "loss_source_id" not in history[2]
    ckpt = load_checkpoint(str(out / "checkpoint.pth"))
    assert "classifier." in ckpt["frozen"]["model"] and any(".source_weight" in p for p in ckpt["frozen"]["model"])
    assert load_checkpoint(str(out / "best.pth"))["model_args"]["domain_bn"] is True
    assert main(["eval", "--checkpoint", str(out / "best.pth"), "--workers", "0", "--no-progress"]) == 0
    from pyreid.export import export_model  # the deployed (target-BN) model traces like any other

    report = export_model(str(out / "best.pth"), "torchscript", str(tmp_path / "domain.pt"))
    assert report["max_abs_diff"] < 1e-4


def test_a_target_without_clusters_trains_on_the_source_alone(sets, tmp_path):
    engine = Engine(_config(sets, tmp_path / "none", epochs=1), _options(eps=0.01, min_samples=30), UDA)
    result = engine.run()
    entry = result["history"][1]
    assert entry["num_clusters"] == 0 and (entry["source_trained"], entry["target_trained"]) == (1, 0)
    assert "loss_source_id" in entry and "loss_target_memory" not in entry
    assert "no target cluster: this epoch trains on the source alone" in (tmp_path / "none" / "train.log").read_text()


def test_bad_input_is_a_clear_error(sets, tmp_path, capsys):
    with pytest.raises(ConfigError, match="the source and the target are the same data set"):
        Engine(_config(sets, tmp_path / "a", target_root=str(sets / "source")), _options(), UDA).run()
    with pytest.raises(ConfigError, match="a source batch needs 16 identities .* has 8"):
        Engine(_config(sets, tmp_path / "b", batch_size=32), _options(), UDA).run()
    with pytest.raises(ConfigError, match="--bn domain cannot be combined with bn_groups"):
        Engine(_config(sets, tmp_path / "c", bn_groups=2), _options(bn="domain"), UDA).run()
    for bad, message in ((dict(heads="both"), "'heads' must be one of separate, mixed"),
                         (dict(bn="split"), "'bn' must be one of shared, domain"),
                         (dict(source_warmup=2, source_until=3), "'source_until' \\(3\\) must come after"),
                         (dict(target_weight=0.0), "must be > 0")):
        with pytest.raises(ConfigError, match=message):
            _options(**bad).validate()
    # UDA's flags given to another algorithm say whose they are.
    with pytest.raises(SystemExit):
        main(["train", "cluster-contrast", "--heads", "mixed", "--out", str(tmp_path / "d")])
    assert "--heads is an option of uda, not of cluster-contrast" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="'source_warmup' is an option of uda, not of supervised"):
        resolve_config("supervised", options={"source_warmup": 1})
    from pyreid.algorithms import ClusterContrast

    with pytest.raises(ConfigError, match="cluster-contrast reads train .*not --source --source-root"):
        Engine(_config(sets, tmp_path / "e", target=None, target_root=None), ClusterContrast.Options(),
               ClusterContrast)


def test_shipped_configs_hold_the_published_protocol():
    for name, source, target, eps in (("uda_duke_to_market", "dukemtmcreid", "market1501", 0.6),
                                      ("uda_market_to_duke", "market1501", "dukemtmcreid", 0.6),
                                      ("uda_market_to_msmt17", "market1501", "msmt17", 0.7)):
        _, c, o = resolve_config("uda", config=name)
        assert (c.source, c.target, o.eps, o.temp) == (source, target, eps, 0.05)
        assert (c.arch, c.height, c.width, c.batch_size, c.num_instances) == ("resnet50", 256, 128, 64, 4)
        assert (c.optimizer, c.lr, c.epochs, c.iters) == ("adam", 3.5e-4, 50, 400)
        assert (o.heads, o.bn) == ("separate", "shared")
    _, c, o = resolve_config("uda", config="uda_synthetic_cpu")
    assert c.arch == "resnet18" and c.source_root and c.target_root


def test_two_processes_keep_the_same_labels_memory_and_weights(sets, tmp_path):
    """torchrun, 2 processes: --check-ranks compares labels, memory and weights after every step."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "pyreid",
           "train", "uda", *_cli_flags(sets, out), "--check-ranks", "--bn", "domain", "--source-until", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [(h["source_trained"], h["target_trained"]) for h in history[1:]] == [(1, 1), (0, 1)]
