"""pyreid.training.optim: warm-up, step and cosine schedules, applied per iteration."""

import math

import pytest
import torch

from pyreid.training import TrainConfig
from pyreid.training.optim import LearningRateSchedule, build_optimizer, build_scheduler


def test_warmup_then_steps():
    config = TrainConfig(epochs=120, warmup_epochs=10, warmup_factor=0.1, milestones=[40, 70], gamma=0.1)
    f = LearningRateSchedule(config, iters_per_epoch=100).factor
    assert f(0) == pytest.approx(0.1)
    assert f(5) == pytest.approx(0.1 + 0.9 * 0.5)
    assert f(10) == 1.0 and f(39.99) == 1.0
    assert f(40) == pytest.approx(0.1) and f(69.9) == pytest.approx(0.1)
    assert f(70) == pytest.approx(0.01) and f(119) == pytest.approx(0.01)


def test_cosine_and_no_warmup():
    config = TrainConfig(epochs=50, warmup_epochs=0, scheduler="cosine")
    f = LearningRateSchedule(config, iters_per_epoch=10).factor
    assert f(0) == 1.0
    assert f(25) == pytest.approx(0.5)
    assert f(50) == pytest.approx(0.0, abs=1e-12)
    assert f(12.5) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_scheduler_steps_per_iteration():
    config = TrainConfig(lr=1.0, epochs=4, warmup_epochs=1, warmup_factor=0.5, milestones=[2], gamma=0.1)
    model = torch.nn.Linear(2, 1)
    optimizer = build_optimizer(model.parameters(), config)
    scheduler = build_scheduler(optimizer, config, iters_per_epoch=4)
    seen = []
    for _ in range(16):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [0.5, 0.625, 0.75, 0.875] + [1.0] * 4 + [0.1] * 8
    assert seen == pytest.approx(expected)
    assert isinstance(optimizer, torch.optim.Adam)
    sgd = build_optimizer(model.parameters(), TrainConfig(optimizer="sgd", sgd_momentum=0.8))
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.8


def test_frozen_parameters_are_not_optimised():
    model = torch.nn.BatchNorm1d(4)
    model.bias.requires_grad_(False)  # the BN neck's frozen shift
    optimizer = build_optimizer(model.parameters(), TrainConfig())
    assert [p for g in optimizer.param_groups for p in g["params"]] == [model.weight]
