"""Learning-rate schedules against formulas written from the recipes, and the weight-decay splits."""

import math

import pytest
import torch
from torch import nn

from qualiface.config.schema import OptimConfig, ScheduleConfig
from qualiface.train.optim import build_optimizer, build_scheduler, lr_factor, split_decay


def _lrs(cfg: ScheduleConfig, total: int, per_epoch: int, base: float = 0.1) -> list[float]:
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=base)
    sched = build_scheduler(cfg, opt, total, per_epoch)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_polynomial_with_warmup_matches_arcface_torch_formula() -> None:
    total, warmup, base, power = 50, 5, 0.1, 2.0
    got = _lrs(ScheduleConfig(name="poly", warmup_steps=warmup, power=power), total, 10, base)
    for t, lr in enumerate(got):
        expected = base * t / warmup if t < warmup else base * (1 - (t - warmup) / (total - warmup)) ** power
        assert lr == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_warmup_in_epochs_adds_to_warmup_steps() -> None:
    factor = lr_factor(ScheduleConfig(name="constant", warmup_epochs=0.5, warmup_steps=2), 100, 10)
    assert [factor(t) for t in (0, 3, 6, 7, 50)] == pytest.approx([0.0, 3 / 7, 6 / 7, 1.0, 1.0])


def test_step_schedule_multiplies_at_each_milestone_epoch() -> None:
    per_epoch = 4
    got = _lrs(ScheduleConfig(name="step", milestones=[2, 3.5], gamma=0.1), 20, per_epoch)
    for t, lr in enumerate(got):
        epoch = t / per_epoch
        expected = 0.1 * 0.1 ** ((epoch >= 2) + (epoch >= 3.5))
        assert lr == pytest.approx(expected)


def test_cosine_runs_from_base_to_floor() -> None:
    total = 21
    got = _lrs(ScheduleConfig(name="cosine", min_lr_ratio=0.1), total, 7)
    assert got[0] == pytest.approx(0.1)
    for t, lr in enumerate(got):
        expected = 0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t / total)))
        assert lr == pytest.approx(expected)


def test_step_schedule_without_milestones_is_rejected_and_a_long_warmup_only_warms_up() -> None:
    with pytest.raises(ValueError, match="milestones"):
        lr_factor(ScheduleConfig(name="step"), 10, 5)
    factor = lr_factor(ScheduleConfig(name="poly", warmup_steps=10), 4, 5)  # a smoke run shorter than the warm-up
    assert [factor(t) for t in range(4)] == pytest.approx([0.0, 0.1, 0.2, 0.3])


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.prelu = nn.PReLU(4)
        self.fc = nn.Linear(4, 2)


def _ids(params: list[nn.Parameter]) -> set[int]:
    return {id(p) for p in params}


def test_weight_decay_policies() -> None:
    net = _Net()
    decay, keep = split_decay(net, "none")
    assert _ids(decay) == _ids(list(net.parameters()))
    assert not keep
    decay, keep = split_decay(net, "norm")  # AdaFace: BatchNorm not decayed, PReLU decayed
    assert _ids(keep) == {id(net.bn.weight), id(net.bn.bias)}
    assert id(net.prelu.weight) in _ids(decay)
    decay, keep = split_decay(net, "norm_bias")
    assert _ids(keep) == {id(net.bn.weight), id(net.bn.bias), id(net.conv.bias), id(net.fc.bias)}
    with pytest.raises(ValueError, match="no_decay"):
        split_decay(net, "bn")


def test_optimizer_groups_carry_head_lr_and_decay() -> None:
    backbone, head = _Net(), nn.Linear(3, 5)
    opt = build_optimizer(OptimConfig(lr=0.1, weight_decay=5e-4, head_lr=0.01, head_weight_decay=0.0), backbone, head)
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["backbone"]["lr"] == 0.1
    assert groups["backbone"]["weight_decay"] == 5e-4
    assert groups["head"]["lr"] == 0.01
    assert groups["head"]["weight_decay"] == 0.0
    assert isinstance(opt, torch.optim.SGD)
    assert opt.defaults["momentum"] == 0.9
    adamw = build_optimizer(OptimConfig(name="adamw", lr=1e-3, weight_decay=0.1), backbone, head)
    assert isinstance(adamw, torch.optim.AdamW)


def test_frozen_parameters_are_left_out() -> None:
    backbone, head = _Net(), nn.Linear(3, 5)
    for p in backbone.parameters():
        p.requires_grad_(False)
    opt = build_optimizer(OptimConfig(), backbone, head)
    assert [g["name"] for g in opt.param_groups] == ["head"]
