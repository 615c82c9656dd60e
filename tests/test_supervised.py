"""The supervised algorithm's pieces: classifier initialisation, temperature schedule, weight re-normalisation."""

import pytest
import torch
import torch.nn.functional as F

from pyreid.algorithms import Supervised, SupervisedOptions
from pyreid.algorithms.supervised import class_mean_weights
from pyreid.data import SynthConfig, build_dataset, generate
from pyreid.training import ConfigError, StepInfo, TrainConfig


def test_class_mean_weights_are_the_normalised_class_means():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(30, 6, generator=g)
    labels = torch.arange(5).repeat(6)[torch.randperm(30, generator=g)]
    weights = class_mean_weights(features, labels, 5)
    for c in range(5):
        mean = features[labels == c].double().mean(dim=0)
        torch.testing.assert_close(weights[c].double(), mean / mean.norm(), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="classes without a sample"):
        class_mean_weights(features, labels, 6)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\)"):
        class_mean_weights(features, labels, 4)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate(str(root), SynthConfig(ids_train=6, ids_test=4, cameras=3, images_per_id=5))
    return build_dataset("synthetic", str(root))


def _algorithm(tiny, **options):
    config = TrainConfig(arch="resnet18", height=128, width=64, batch_size=8, num_instances=2, workers=0,
                         test_batch_size=16, progress=False, epochs=2)
    algo = Supervised(config, SupervisedOptions(**options), tiny, torch.device("cpu"), iters_per_epoch=2)
    torch.manual_seed(0)
    algo.build_models()
    return algo


def test_setup_initialises_the_classifier_from_eval_mode_class_means(tiny):
    algo = _algorithm(tiny)
    algo.setup()
    # Independently: eval-mode features of the training images, test transform, class means, normalised.
    from pyreid.data import build_test_loader

    loader = build_test_loader(tiny.train, batch_size=7, height=128, width=64, num_workers=0)
    net = algo.network.eval()
    with torch.no_grad():
        feats = torch.cat([net(b[0]) for b in loader])
    labels = torch.tensor([pid for _, pid, _ in tiny.train])
    expected = torch.stack([F.normalize(feats[labels == c].mean(0), dim=0) for c in range(6)])
    torch.testing.assert_close(algo.network.classifier.weight, expected, rtol=1e-4, atol=1e-5)
    random_init = _algorithm(tiny, classifier_init="random")
    before = random_init.network.classifier.weight.clone()
    random_init.setup()
    assert torch.equal(random_init.network.classifier.weight, before)


def test_temperature_schedule_and_step_losses(tiny):
    algo = _algorithm(tiny, temperature=0.1, temperature_end=1.0)
    assert algo.temperature(0.0) == 0.1 and algo.temperature(1.0) == 1.0
    assert algo.temperature(0.5) == pytest.approx(0.55)
    constant = _algorithm(tiny)
    assert constant.temperature(0.7) == 0.1
    batch = next(iter(constant.before_epoch(1)))
    constant.network.train()
    losses = constant.step(batch, StepInfo(1, 0, 0, 4))
    assert set(losses) == {"id", "triplet"} and all(torch.isfinite(v) for v in losses.values())
    only_id = _algorithm(tiny, triplet_weight=0.0)
    only_id.network.train()
    assert set(only_id.step(batch, StepInfo(1, 0, 0, 4))) == {"id"}


def test_normalize_classifier_after_step(tiny):
    algo = _algorithm(tiny, normalize_classifier=True)
    with torch.no_grad():
        algo.network.classifier.weight.mul_(5.0)
    algo.after_step(StepInfo(1, 0, 0, 4))
    norms = algo.network.classifier.weight.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_too_few_identities_for_a_batch(tiny):
    config = TrainConfig(batch_size=32, num_instances=4)
    with pytest.raises(ConfigError, match=r"a batch needs 8 identities .* the training set has 6"):
        Supervised(config, SupervisedOptions(), tiny, torch.device("cpu"), iters_per_epoch=1)
