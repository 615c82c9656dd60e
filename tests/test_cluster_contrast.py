"""Cluster-Contrast and ISE on the engine: the per-epoch steps, the degenerate cases, resume, the CLI.

Runs use a tiny synthetic set and a source model trained for one epoch on a
second one, so clustering finds something; what is checked is the machinery
(labels, memory, metrics, files, resume equality), not accuracy.
"""

import json
import logging

import pytest
import torch
import torch.nn.functional as F

from pyreid.algorithms import ISE, ClusterContrast, NoClustersError
from pyreid.cli import main
from pyreid.cluster import cluster_centroids, relabel
from pyreid.data import SynthConfig, build_dataset, generate
from pyreid.training import (
    Engine,
    NonFiniteLossError,
    StepInfo,
    TrainConfig,
    is_timing,
    load_checkpoint,
    resolve_config,
)

CLUSTER_KEYS = {"num_clusters", "num_outliers", "largest_cluster", "largest_cluster_share", "pseudo_label_seconds",
                "extraction_seconds", "jaccard_seconds", "dbscan_seconds", "ari", "nmi", "precision", "recall"}


def test_centroids_are_normalised_means_of_normalised_features():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(20, 5, generator=g) * 3
    labels = torch.tensor([0, 1, 2, -1] * 5)
    centroids = cluster_centroids(features, labels, 3)
    for c in range(3):
        mean = F.normalize(features[labels == c].double(), dim=1).mean(0)
        torch.testing.assert_close(centroids[c].double(), mean / mean.norm(), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="a cluster has no member"):
        cluster_centroids(features, labels, 4)


def test_relabel_keeps_outliers_and_numbers_clusters_densely():
    labels, k = relabel(torch.tensor([7, -1, 3, 7, 3, 9, -1]))
    assert labels.tolist() == [1, -1, 0, 1, 0, 2, -1] and k == 3
    labels, k = relabel(torch.tensor([-1, -1]))
    assert labels.tolist() == [-1, -1] and k == 0


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("uda")
    generate(str(root / "source"), SynthConfig(ids_train=10, ids_test=4, cameras=3, images_per_id=6, seed=1))
    generate(str(root / "target"), SynthConfig(ids_train=8, ids_test=6, cameras=3, images_per_id=6, seed=2))
    return root


def _config(root, out, **kw):
    base = dict(dataset="synthetic", data_root=str(root / "target"), arch="resnet18", height=128, width=64,
                batch_size=8, num_instances=2, camera_aware=True, epochs=2, iters=2, eval_step=1, workers=0,
                test_batch_size=32, progress=False, plots=False, out=str(out), warmup_epochs=0.0, seed=3)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def source_model(sets):
    """A supervised source model (one epoch on the source set): its features cluster on the target."""
    out = sets / "source_run"
    config = _config(sets, out, data_root=str(sets / "source"), epochs=1, iters=4, camera_aware=False)
    from pyreid.algorithms import Supervised

    Engine(config, Supervised.Options(), Supervised).run()
    return str(out / "best.pth")


def _options(cls, **kw):
    return cls.Options(**{"eps": 0.6, "k1": 10, "k2": 3, "min_samples": 2, **kw})


def _algorithm(cls, sets, source_model, tmp_path, **options):
    config = _config(sets, tmp_path / "a", weights=source_model)
    dataset = build_dataset("synthetic", config.data_root)
    algo = cls(config, _options(cls, **options), dataset, torch.device("cpu"), iters_per_epoch=2)
    algo.build_models()
    return algo


def test_before_epoch_pseudo_labels_and_memory(sets, source_model, tmp_path):
    algo = _algorithm(ClusterContrast, sets, source_model, tmp_path)
    loader = algo.before_epoch(1)
    metrics = algo.epoch_metrics()
    assert CLUSTER_KEYS <= set(metrics)
    k = metrics["num_clusters"]
    assert k >= 2 and algo.memory.features.shape == (k, 512)
    labels = algo.pseudo_labels
    assert labels.shape == (len(algo.dataset.train),) and int(labels.max()) == k - 1
    assert metrics["num_outliers"] == int((labels < 0).sum())
    # The memory holds the normalised centroids of the features the labels were computed from.
    features = algo.extract(algo.dataset.train)
    torch.testing.assert_close(algo.memory.features, cluster_centroids(features, labels, k), rtol=1e-5, atol=1e-6)
    # The loader draws pseudo-labelled images only (outliers dropped), with their cluster as label.
    for images, pids, _, indices in loader:
        assert torch.equal(pids, labels[indices]) and bool((pids >= 0).all())
    batch = next(iter(loader))
    algo.network.train()
    losses = algo.step(batch, StepInfo(1, 0, 0, 4))
    assert set(losses) == {"memory"} and torch.isfinite(losses["memory"])


def test_no_cluster_skips_the_epoch_then_stops(sets, source_model, tmp_path, caplog):
    algo = _algorithm(ClusterContrast, sets, source_model, tmp_path, eps=0.001, min_samples=50, max_empty_epochs=2)
    with caplog.at_level(logging.WARNING, logger="pyreid"):
        assert algo.before_epoch(1) is None
    assert algo.epoch_metrics()["num_clusters"] == 0 and algo.epoch_metrics()["largest_cluster"] == 0
    assert "DBSCAN found no cluster" in caplog.text
    with pytest.raises(NoClustersError, match="no cluster in 2 epochs in a row .*--weights FILE or --pretrained"):
        algo.before_epoch(2)


def test_fewer_clusters_than_a_batch_needs_take_fewer_identities(sets, source_model, tmp_path, caplog):
    algo = _algorithm(ClusterContrast, sets, source_model, tmp_path)
    algo.config.batch_size = 64  # 32 identities x 2: more than the target has clusters
    with caplog.at_level(logging.WARNING, logger="pyreid"):
        loader = algo.before_epoch(1)
    k = algo.epoch_metrics()["num_clusters"]
    assert f"only {k} clusters, fewer than the 32 identities a batch holds" in caplog.text
    images, pids, _, _ = next(iter(loader))
    assert images.shape[0] == 2 * k and len(set(pids.tolist())) == k


def test_small_sets_clamp_k1(sets, source_model, tmp_path, caplog):
    algo = _algorithm(ClusterContrast, sets, source_model, tmp_path, k1=500, k2=400)
    with caplog.at_level(logging.WARNING, logger="pyreid"):
        algo.before_epoch(1)
    n = len(algo.dataset.train)
    assert f"only {n} training images: k-reciprocal k1 = {n - 1}, k2 = {n - 1}" in caplog.text


def _algorithm_on_first(cls, n, sets, source_model, tmp_path, **options):
    """The algorithm on the first ``n`` training images of the target (a small data set)."""
    config = _config(sets, tmp_path / "a", weights=source_model)
    dataset = build_dataset("synthetic", config.data_root)
    dataset.train = dataset.train[:n]
    algo = cls(config, _options(cls, **options), dataset, torch.device("cpu"), iters_per_epoch=2)
    algo.build_models()
    return algo


@pytest.mark.parametrize("cls", [ClusterContrast, ISE])
@pytest.mark.parametrize("n,min_samples,trains", [(2, 1, True), (2, 4, False), (3, 2, True), (7, 2, True),
                                                  (7, 20, False)])
def test_tiny_sets_clamp_k1_and_train_or_skip(cls, n, min_samples, trains, sets, source_model, tmp_path, caplog):
    # The published defaults (k1 = 30, k2 = 6) on a set of n <= k1 images:
    # k1 is clamped to n - 1 with a warning (the Jaccard op itself refuses
    # k1 >= N); then the epoch trains, or is skipped like any epoch without
    # a cluster (n < min_samples).
    algo = _algorithm_on_first(cls, n, sets, source_model, tmp_path, k1=30, k2=6, min_samples=min_samples)
    with caplog.at_level(logging.WARNING, logger="pyreid"):
        loader = algo.before_epoch(1)
    k1 = n - 1
    assert f"only {n} training images: k-reciprocal k1 = {k1}, k2 = {min(6, k1)} for this epoch (asked 30, 6)" in caplog.text
    k = algo.epoch_metrics()["num_clusters"]
    assert (loader is not None) == trains
    if loader is None:
        assert k == 0 and "DBSCAN found no cluster" in caplog.text
        return
    assert k >= 1 and algo.memory.features.shape[0] == k
    algo.network.train()
    losses = algo.step(next(iter(loader)), StepInfo(1, 0, 0, 4))
    assert all(bool(torch.isfinite(v)) for v in losses.values())


def test_fewer_than_two_images_is_a_clear_error(sets, source_model, tmp_path):
    from pyreid.training import ConfigError

    for n in (0, 1):
        algo = _algorithm_on_first(ClusterContrast, n, sets, source_model, tmp_path)
        with pytest.raises(ConfigError, match=f"the training set has {n} image\\(s\\); clustering needs at least 2"):
            algo.before_epoch(1)


def test_ise_supports_go_through_the_memory_with_the_real_samples(sets, source_model, tmp_path):
    algo = _algorithm(ISE, sets, source_model, tmp_path, support_k=2, lp_weight=0.1)
    loader = algo.before_epoch(1)
    batch = next(iter(loader))
    algo.network.train()
    out = algo.model(batch[0])
    inputs, targets, extra = algo.memory_inputs(out, batch[1], StepInfo(1, 0, 5, 10))
    b = batch[0].shape[0]
    assert inputs.shape[0] == 3 * b and torch.equal(targets[:b], batch[1])
    assert torch.equal(targets[b:], batch[1].repeat_interleave(2))  # supports keep their feature's label
    assert set(extra) == {"label_preserving"} and torch.isfinite(extra["label_preserving"])
    losses = algo.step(batch, StepInfo(1, 0, 5, 10))
    assert set(losses) == {"memory", "label_preserving"}


def _history(history):
    return [{k: v for k, v in h.items() if not is_timing(k)} for h in history]


def test_ise_resumed_mid_epoch_equals_an_uninterrupted_run(sets, source_model, tmp_path, monkeypatch):
    """Interrupt epoch 2 of 3 at its second step, resume: same weights, memory, labels and metrics."""
    options = _options(ISE)
    straight = Engine(_config(sets, tmp_path / "straight", epochs=3, weights=source_model), options, ISE)
    straight.run()

    real_step = ISE.step

    def interrupted(self, batch, info):
        if (info.epoch, info.iteration) == (2, 1):
            raise KeyboardInterrupt
        return real_step(self, batch, info)

    monkeypatch.setattr(ISE, "step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Engine(_config(sets, tmp_path / "resumed", epochs=3, weights=source_model), options, ISE).run()
    monkeypatch.undo()
    assert load_checkpoint(str(tmp_path / "resumed" / "checkpoint.pth"))["epoch"] == 1
    _, config, opts = resolve_config("ise", resume=True, out=str(tmp_path / "resumed"))
    resumed = Engine(config, opts, ISE)
    resumed.run()
    for key, value in straight.network.state_dict().items():
        assert torch.equal(value, resumed.network.state_dict()[key]), key
    assert torch.equal(straight.algorithm.memory.features, resumed.algorithm.memory.features)
    assert torch.equal(straight.algorithm.pseudo_labels, resumed.algorithm.pseudo_labels)
    assert _history(straight.history) == _history(resumed.history)
    saved = load_checkpoint(str(tmp_path / "resumed" / "checkpoint.pth"))["algorithm_state"]
    assert torch.equal(saved["memory"], resumed.algorithm.memory.features)


def test_non_finite_features_never_reach_the_memory(sets, source_model, tmp_path, monkeypatch):
    snapshot = {}
    real = ClusterContrast.memory_inputs

    def poisoned(self, out, labels, info):
        inputs, targets, extra = real(self, out, labels, info)
        if (info.epoch, info.iteration) == (1, 1):
            snapshot["memory"] = self.memory.features.clone()
            inputs = inputs * float("nan")
        return inputs, targets, extra

    monkeypatch.setattr(ClusterContrast, "memory_inputs", poisoned)
    engine = Engine(_config(sets, tmp_path / "nan", weights=source_model), _options(ClusterContrast),
                    ClusterContrast)
    with pytest.raises(NonFiniteLossError, match="epoch 1, iteration 1 \\(memory=nan\\)"):
        engine.run()
    assert torch.equal(engine.algorithm.memory.features, snapshot["memory"])
    assert torch.isfinite(engine.algorithm.memory.features).all()


@pytest.mark.parametrize("algorithm", ["cluster-contrast", "ise"])
def test_cli_runs_write_the_clustering_metrics_and_plot(sets, source_model, tmp_path, algorithm):
    out = tmp_path / algorithm
    argv = ["train", algorithm, "--data-root", str(sets / "target"), "--arch", "resnet18", "--height", "128",
            "--width", "64", "--epochs", "2", "--iters", "2", "--batch-size", "8", "--num-instances", "2",
            "--workers", "0", "--eval-step", "1", "--no-progress", "--out", str(out), "--weights", source_model,
            "--eps", "0.6", "--k1", "10", "--k2", "3", "--min-samples", "2", "--test-batch-size", "32"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    history = metrics["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2] and metrics["status"] == "finished"
    for h in history[1:]:
        assert CLUSTER_KEYS <= set(h) and 0 <= h["outside_training_share"] <= 1
        assert 0 <= h["ari"] <= 1 and 0 <= h["precision"] <= 1
    assert (out / "curves.png").stat().st_size > 0
    log = (out / "train.log").read_text()
    assert "against the true identities: ARI" in log and "missing" in log  # the weights' load report
