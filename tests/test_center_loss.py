"""Centre loss: values and gradients against hand computations, the centres' own SGD (lr 0.5, gradient
divided by the loss weight, as the strong baseline steps it), and an exact resume of both optimisers."""

import pytest
import torch

from pyreid.algorithms import Supervised, SupervisedOptions
from pyreid.data import SynthConfig, build_dataset, generate
from pyreid.losses.center import CenterLoss, center_loss, unweight_centre_gradients
from pyreid.training import ConfigError, Engine, StepInfo, TrainConfig, load_checkpoint


def _reference(features, labels, centres):
    """Slow and plain: a Python loop over the batch, in float64."""
    total = 0.0
    for i in range(features.shape[0]):
        c = int(labels[i])
        total += sum((float(features[i, d]) - float(centres[c, d])) ** 2 for d in range(features.shape[1]))
    return total / features.shape[0]


def test_value_and_gradient_by_hand():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]], requires_grad=True)
    y = torch.tensor([0, 1, 0])
    c = torch.tensor([[1.0, 1.0], [2.0, 2.0]], requires_grad=True)
    loss = center_loss(x, y, c)
    # Squared distances to the own centre: |(0, 1)|^2 = 1, |(1, 2)|^2 = 5, |(-1, -1)|^2 = 2; mean 8 / 3.
    assert loss.item() == pytest.approx(8 / 3)
    loss.backward()
    # dL/dx_i = (2 / B)(x_i - c_{y_i}); dL/dc_k = -(2 / B) sum over i of class k of (x_i - c_k).
    torch.testing.assert_close(x.grad, torch.tensor([[0.0, 2 / 3], [2 / 3, 4 / 3], [-2 / 3, -2 / 3]]))
    torch.testing.assert_close(c.grad, torch.tensor([[2 / 3, 0.0], [-2 / 3, -4 / 3]]))


@pytest.mark.parametrize("batch,classes,dim", [(1, 1, 1), (7, 3, 5), (16, 10, 33)])
def test_matches_the_loop_reference(batch, classes, dim):
    g = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, dim, generator=g)
    y = torch.randint(0, classes, (batch,), generator=g)
    module = CenterLoss(classes, dim)
    assert module(x, y).item() == pytest.approx(_reference(x, y, module.centers.detach()), rel=1e-5)
    # Non-contiguous features give the same value.
    wide = torch.randn(batch, 2 * dim, generator=g)
    strided = wide[:, ::2]
    assert center_loss(strided, y, module.centers).item() == pytest.approx(
        _reference(strided, y, module.centers.detach()), rel=1e-5)


def test_gradcheck_float64():
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    c = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 3, 3, 1, 0])
    torch.autograd.gradcheck(lambda a, b: center_loss(a, y, b), (x, c))


def test_bad_input():
    c = torch.zeros(3, 4)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\), got \[0, 3\]"):
        center_loss(torch.zeros(2, 4), torch.tensor([0, 3]), c)
    with pytest.raises(ValueError, match="features have 5 dimensions but the centres 4"):
        center_loss(torch.zeros(2, 5), torch.tensor([0, 1]), c)
    with pytest.raises(ValueError, match="one label per feature"):
        center_loss(torch.zeros(2, 4), torch.tensor([0]), c)
    with pytest.raises(ValueError, match="must be integers"):
        center_loss(torch.zeros(2, 4), torch.tensor([0.0, 1.0]), c)
    assert center_loss(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), c).item() == 0.0
    with pytest.raises(ValueError, match="weight must be positive"):
        unweight_centre_gradients(CenterLoss(2, 2), 0.0)
    with pytest.raises(ConfigError, match="'center_weight' must be >= 0"):
        SupervisedOptions(center_weight=-1.0).validate()
    with pytest.raises(ConfigError, match="'center_lr' must be positive"):
        SupervisedOptions(center_lr=0.0).validate()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate(str(root), SynthConfig(ids_train=6, ids_test=4, cameras=3, images_per_id=5))
    return root


def test_centres_step_with_their_own_sgd_on_the_unweighted_gradient(tiny):
    weight = 5e-4
    config = TrainConfig(arch="resnet18", height=64, width=32, batch_size=8, num_instances=2, workers=0,
                         test_batch_size=16, progress=False, epochs=2, warmup_epochs=1.0, warmup_factor=0.01)
    options = SupervisedOptions(center_weight=weight, center_lr=0.5, classifier_init="random", temperature=1.0)
    algo = Supervised(config, options, build_dataset("synthetic", str(tiny)), torch.device("cpu"),
                      iters_per_epoch=2)
    torch.manual_seed(0)
    algo.build_models()
    centres = algo.models["centers"]
    assert isinstance(centres.optimizer, torch.optim.SGD)
    group = centres.optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.5, 0, 0)
    seen = []
    centres.network.register_forward_hook(lambda module, inputs, output: seen.append(inputs))
    batch = next(iter(algo.before_epoch(1)))
    algo.models.train()
    before = centres.network.centers.detach().clone()
    losses = algo.step(batch, StepInfo(1, 0, 0, 4))
    assert set(losses) == {"id", "triplet", "center"}
    features, labels = (t.detach() for t in seen[0])
    assert losses["center"].item() == pytest.approx(weight * _reference(features, labels, before), rel=1e-5)
    algo.models.zero_grad()
    algo.update(losses)
    algo.models.step_schedules()
    # Expected: one SGD step at lr 0.5 on the gradient of the *unweighted* centre loss.
    c = before.clone().requires_grad_(True)
    center_loss(features, labels, c).backward()
    torch.testing.assert_close(centres.network.centers.detach(), before - 0.5 * c.grad, rtol=1e-5, atol=1e-6)
    # The model's rate follows the warm-up (1 epoch of 2 steps from 0.01); the centres' stays 0.5.
    assert algo.models["model"].optimizer.param_groups[0]["lr"] == pytest.approx(3.5e-4 * (0.01 + 0.99 / 2))
    assert group["lr"] == 0.5


def _run(tiny, out, epochs, resume=False):
    config = TrainConfig(dataset="synthetic", data_root=str(tiny), arch="resnet18", height=64, width=32,
                         batch_size=8, num_instances=2, epochs=epochs, iters=2, eval_step=2, workers=0,
                         test_batch_size=32, progress=False, plots=False, out=str(out), resume=resume, seed=3,
                         warmup_epochs=1.0)
    options = SupervisedOptions(center_weight=5e-4, classifier_init="random", temperature=1.0)
    Engine(config, options, Supervised).run()
    return load_checkpoint(str(out / "checkpoint.pth"))


def test_resume_restores_the_centres_and_their_optimiser(tiny, tmp_path):
    straight = _run(tiny, tmp_path / "straight", epochs=2)
    _run(tiny, tmp_path / "resumed", epochs=1)
    resumed = _run(tiny, tmp_path / "resumed", epochs=2, resume=True)
    assert set(straight["models"]) == {"model", "centers"}
    for name in ("model", "centers"):
        for key, value in straight["models"][name].items():
            assert torch.equal(value, resumed["models"][name][key]), (name, key)
    for name in ("model", "centers"):
        a, b = straight["optimizers"][name], resumed["optimizers"][name]
        assert a["param_groups"] == b["param_groups"]
        for key, state in a["state"].items():
            for field, value in state.items():
                assert torch.equal(value, b["state"][key][field]) if torch.is_tensor(value) else \
                    value == b["state"][key][field], (name, key, field)
    assert straight["optimizers"]["centers"]["param_groups"][0]["lr"] == 0.5
