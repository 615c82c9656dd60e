"""PUL: centres, reliable-sample selection, semi-supervised labels, the stopping rule, rounds that
restart from the source model, resume inside a round, torchrun, and the command line."""

import json

import pytest
import torch

from pyreid.algorithms import PUL
from pyreid.algorithms.options import PULOptions
from pyreid.algorithms.pul import _PULClustering, centre_indices, reliable, stopped_growing
from pyreid.cli import main
from pyreid.data import SynthConfig, generate
from pyreid.training import ConfigError, Engine, TrainConfig, is_timing, load_checkpoint, resolve_config


def test_centre_is_the_member_nearest_the_centroid():
    features = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.4, 0.0], [10.0, 0.0], [12.0, 0.0], [5.0, 5.0]])
    labels = torch.tensor([0, 0, 0, 1, 1, -1])
    centroids = torch.tensor([[0.5, 0.0], [11.9, 0.0], [3.0, 3.0]])
    # Cluster 0: 0.4 is nearest 0.5; cluster 1: 12 nearest 11.9; cluster 2 has no image; the -1 is never a centre.
    assert centre_indices(features, labels, centroids).tolist() == [2, 4, -1]


def test_own_centre_against_any_centre_selection():
    # Two clusters with centre images 0 and 2. Image 1 is labelled 0 but points at centre 2; image 3 is
    # far from both.
    features = torch.tensor([[1.0, 0.0], [0.05, 1.0], [0.0, 1.0], [1.0, -1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    centres = torch.tensor([0, 2])
    assert reliable(features, labels, centres, 0.9).tolist() == [True, False, True, False]
    assert reliable(features, labels, centres, 0.9, any_centre=True).tolist() == [True, True, True, False]
    # The centres stay even when nothing passes the threshold.
    assert reliable(features, labels, centres, 1.0).tolist() == [True, False, True, False]


def test_stopping_rule():
    assert not stopped_growing([10, 20, 30], 0)
    assert not stopped_growing([10, 20, 30], 1)
    assert stopped_growing([10, 20, 20], 1)
    assert not stopped_growing([10, 20, 19, 25], 2)
    assert stopped_growing([10, 20, 19, 18], 2)
    assert not stopped_growing([10], 3)


def test_semi_supervised_clustering_offsets_the_labels():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 8, generator=g) * 10
    features = centres.repeat_interleave(6, 0) + 0.1 * torch.randn(30, 8, generator=g)
    labelled = torch.zeros(30, dtype=torch.bool)
    labelled[:12] = True  # identities 0 and 1 are labelled
    clustering = _PULClustering(PULOptions(clusters=5, labelled_ids=2), labelled, seed=0)
    labels, metrics = clustering(features)
    assert (labels[:12] == -1).all()  # the labelled images keep their own labels (set by PUL)
    assert set(labels[12:].tolist()) == {2, 3, 4}
    for start in (12, 18, 24):  # each remaining identity is one cluster
        assert len(set(labels[start:start + 6].tolist())) == 1
    assert clustering.centres[:2].tolist() == [-1, -1]
    for k in (2, 3, 4):
        assert int(labels[clustering.centres[k]]) == k
    assert metrics["empty_clusters"] == 0 and metrics["kmeans_inertia"] > 0


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("pul")
    generate(str(root / "source"), SynthConfig(ids_train=10, ids_test=4, cameras=3, images_per_id=6, seed=1))
    generate(str(root / "target"), SynthConfig(ids_train=8, ids_test=6, cameras=3, images_per_id=6, seed=2))
    return root


def _config(root, out, **kw):
    base = dict(dataset="synthetic", data_root=str(root / "target"), arch="resnet18", height=128, width=64,
                batch_size=8, num_instances=2, epochs=4, iters=2, eval_step=2, workers=0, test_batch_size=32,
                progress=False, plots=False, out=str(out), seed=3, optimizer="sgd", lr=1e-3, milestones=[],
                warmup_epochs=0.0, pooling="avg", last_stride=2)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def source_model(sets):
    from pyreid.algorithms import Supervised

    out = sets / "source_run"
    Engine(_config(sets, out, data_root=str(sets / "source"), epochs=1, iters=4, optimizer="adam", lr=3.5e-4,
                   eval_step=1), Supervised.Options(), Supervised).run()
    return str(out / "best.pth")


def _options(**kw):
    return PULOptions(**{"clusters": 8, "round_epochs": 2, **kw})


def _history(history):
    return [{k: v for k, v in h.items() if not is_timing(k)} for h in history]


def test_rounds_restart_from_the_source_and_record_the_selection(sets, source_model, tmp_path, monkeypatch):
    from pyreid.training import ModelSet

    swaps = []
    real_replace = ModelSet.replace

    def replace(self, name, network):
        old = self[name].network.backbone.conv1.weight.detach().clone()
        swaps.append((old, network.backbone.conv1.weight.detach().clone()))
        return real_replace(self, name, network)

    monkeypatch.setattr(ModelSet, "replace", replace)
    engine = Engine(_config(sets, tmp_path / "run", weights=source_model), _options(threshold=0.95), PUL)
    result = engine.run()
    # Round 2 starts from the source model's weights, not from round 1's trained ones.
    source = torch.load(source_model, weights_only=True)["model"]["backbone.conv1.weight"]
    assert len(swaps) == 1
    trained, fresh = swaps[0]
    assert torch.equal(fresh, source) and not torch.equal(trained, source)
    history = result["history"]
    rounds = [h for h in history if "selected" in h]
    assert [h["epoch"] for h in rounds] == [1, 3] and [h["round"] for h in rounds] == [1, 2]
    for h in rounds:
        assert 8 <= h["selected"] <= 48 and h["selected_share"] == pytest.approx(h["selected"] / 48)
        assert 0 <= h["selection_precision"] <= 1 and {"ari", "selected_ari", "kmeans_seconds",
                                                       "kmeans_inertia"} <= set(h)
    assert all("mAP" in history[e] for e in (0, 2, 4))
    ckpt = load_checkpoint(str(tmp_path / "run" / "checkpoint.pth"))
    assert ckpt["generation"] == {"model": 1}  # re-created once, at round 2
    assert ckpt["algorithm_state"]["round"] == 2 and ckpt["algorithm_state"]["source"]["weights"] == source_model
    labels = ckpt["algorithm_state"]["labels"]
    assert labels.shape == (48,) and int((labels >= 0).sum()) == rounds[-1]["selected"]


def test_resume_inside_a_round_equals_an_uninterrupted_run(sets, source_model, tmp_path, monkeypatch):
    options = _options()
    straight = Engine(_config(sets, tmp_path / "straight", weights=source_model), options, PUL)
    straight.run()
    real_step = PUL.step

    def interrupted(self, batch, info):
        if (info.epoch, info.iteration) == (4, 1):
            raise KeyboardInterrupt
        return real_step(self, batch, info)

    monkeypatch.setattr(PUL, "step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Engine(_config(sets, tmp_path / "resumed", weights=source_model), options, PUL).run()
    monkeypatch.undo()
    assert load_checkpoint(str(tmp_path / "resumed" / "checkpoint.pth"))["epoch"] == 3  # inside round 2
    _, config, opts = resolve_config("pul", resume=True, out=str(tmp_path / "resumed"))
    resumed = Engine(config, opts, PUL)
    resumed.run()
    for key, value in straight.network.state_dict().items():
        assert torch.equal(value, resumed.network.state_dict()[key]), key
    assert torch.equal(straight.algorithm.labels, resumed.algorithm.labels)
    assert _history(straight.history) == _history(resumed.history)


def test_patience_stops_the_run_as_finished(sets, source_model, tmp_path):
    # Threshold -0.99: every image is reliable in every round, so the count cannot grow after round 1.
    out = tmp_path / "stop"
    engine = Engine(_config(sets, out, weights=source_model, epochs=8), _options(threshold=-0.99, patience=1), PUL)
    result = engine.run()
    assert [h["epoch"] for h in result["history"]] == [0, 1, 2, 3]
    assert result["history"][-1].get("skipped") and "mAP" in result["history"][-1]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"].startswith("finished at epoch 3: the selected images stopped growing")


def test_bad_settings_are_clear_errors(sets, source_model, tmp_path):
    with pytest.raises(ConfigError, match="49 clusters for 48 training images"):
        Engine(_config(sets, tmp_path / "a", weights=source_model), _options(clusters=49), PUL).run()
    with pytest.raises(ConfigError, match="--labelled-ids 9 but the training set has 8 identities"):
        Engine(_config(sets, tmp_path / "b", weights=source_model), _options(labelled_ids=9, clusters=20), PUL).run()
    for bad, message in ((dict(threshold=1.5), "'threshold' must be in \\(-1, 1\\]"),
                         (dict(labelled_ids=8), "'labelled_ids' \\(8\\) must be below 'clusters' \\(8\\)"),
                         (dict(selection="nearest"), "'selection' must be one of own-centre, any-centre")):
        with pytest.raises(ConfigError, match=message):
            _options(**bad).validate()


def test_semi_supervised_run_keeps_the_labelled_identities(sets, source_model, tmp_path):
    engine = Engine(_config(sets, tmp_path / "semi", weights=source_model, epochs=2),
                    _options(labelled_ids=3, clusters=8, selection="any-centre"), PUL)
    engine.run()
    pids = torch.tensor([pid for _, pid, _ in engine.algorithm.dataset.train])
    labels = engine.algorithm.labels
    assert torch.equal(labels[pids < 3], pids[pids < 3])
    assert set(labels[pids >= 3].tolist()) <= set(range(-1, 8)) - {0, 1, 2}


def test_cli_run_with_the_published_head_and_plots(sets, source_model, tmp_path):
    out = tmp_path / "cli"
    argv = ["train", "pul", "--data-root", str(sets / "target"), "--arch", "resnet18", "--height", "128", "--width",
            "64", "--epochs", "2", "--round-epochs", "1", "--iters", "2", "--batch-size", "8", "--workers", "0",
            "--eval-step", "1", "--no-progress", "--out", str(out), "--weights", source_model, "--clusters", "8",
            "--test-batch-size", "32"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["options"]["head"] == "published" and metrics["config"]["batch_size"] == 8
    assert (out / "self_paced.png").stat().st_size > 0
    args = load_checkpoint(str(out / "best.pth"))["model_args"]
    assert (args["neck"], args["num_classes"], args["classifier_dropout"]) == ("none", 8, 0.5)


def test_shipped_configs_hold_the_published_settings():
    from pyreid.training import resolve_config

    for name, dataset, k in (("pul_duke_to_market", "market1501", 750), ("pul_market_to_duke", "dukemtmcreid", 700)):
        _, c, o = resolve_config("pul", config=name)
        assert (c.dataset, o.clusters, o.threshold, c.epochs // o.round_epochs, o.round_epochs) == (dataset, k, 0.85,
                                                                                                  25, 20)
        assert (c.arch, c.pooling, c.last_stride, c.height, c.width, c.batch_size) == ("resnet50", "avg", 2, 224, 224,
                                                                                      16)
        assert (c.optimizer, c.lr, c.sgd_momentum, c.weight_decay, c.milestones) == ("sgd", 1e-3, 0.9, 0.0, [])
        assert (o.head, o.dropout, o.augmentation, o.sampling, o.normalize) == ("published", 0.5, "published",
                                                                                "images", False)


def test_two_processes_select_the_same_images(sets, source_model, tmp_path):
    """Under torchrun the main process clusters and selects; --check-ranks compares the labels (and the
    weights) of both processes after every step."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "pyreid",
           "train", "pul", "--data-root", str(sets / "target"), "--arch", "resnet18", "--height", "128", "--width",
           "64", "--epochs", "2", "--round-epochs", "1", "--iters", "2", "--batch-size", "8", "--workers", "0",
           "--eval-step", "2", "--no-progress", "--no-plots", "--out", str(out), "--weights", source_model,
           "--clusters", "8", "--threshold", "0.95", "--test-batch-size", "16", "--check-ranks"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h.get("round") for h in history[1:]] == [1, 2] and all("selected" in h for h in history[1:])
