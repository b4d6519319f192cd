"""``train.grad_accumulation`` (arcface_torch ``gradient_acc``): the gradients of k batches are summed into one
optimizer step, clipped once; the schedule and the step count advance with every batch."""

from __future__ import annotations

import copy

import pytest
import torch

from qualiface.config import ConfigError
from qualiface.train.distributed import DistInfo
from qualiface.train.loop import Trainer
from qualiface.train.optim import build_optimizer

ONE_PROCESS = DistInfo(0, 0, 1, torch.device("cpu"))


def _batches(seed: int, count: int, size: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, 3, 16, 16, generator=g), torch.randint(0, 8, (size,), generator=g)) for _ in range(count)
    ]


def _params(*modules: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"{i}.{n}": p.detach().clone() for i, m in enumerate(modules) for n, p in m.named_parameters()}


@pytest.mark.parametrize("clip", [None, 0.05])
def test_k_batches_sum_into_one_optimizer_step(make_config, clip: float | None) -> None:
    overrides = ("train.grad_accumulation=3", "train.checkpoint_every=3", "train.channels_last=false")
    overrides += ("schedule.name=constant",)
    overrides += (f"train.grad_clip={clip if clip is not None else 'null'}",)
    cfg = make_config(overrides=overrides)
    trainer = Trainer(cfg, ONE_PROCESS)
    ref_backbone, ref_head = copy.deepcopy(trainer.backbone), copy.deepcopy(trainer.head)
    ref_opt = build_optimizer(cfg.optim, ref_backbone, ref_head)
    start = _params(trainer.backbone, trainer.head)
    batches = _batches(0, 3)

    for i, (images, labels) in enumerate(batches[:2]):
        _, _, norm = trainer.train_step(images, labels)
        assert norm is None  # accumulating only
        after = _params(trainer.backbone, trainer.head)
        assert all(torch.equal(after[k], start[k]) for k in start), f"weights moved after batch {i + 1} of 3"
    trainer.train_step(*batches[2])
    assert trainer.step == 3

    # the reference: three backward passes into the same .grad, one clip of the sum, one SGD step
    ref_opt.zero_grad()
    for images, labels in batches:
        ref_head(ref_backbone(images), labels).loss.backward()
    if clip is not None:
        norm = torch.nn.utils.clip_grad_norm_([p for p in ref_backbone.parameters() if p.requires_grad], clip)
        assert norm > clip  # the clip acts on the summed gradient
    ref_opt.step()
    got, want = _params(trainer.backbone, trainer.head), _params(ref_backbone, ref_head)
    assert any(not torch.equal(got[k], start[k]) for k in start)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6, msg=name)


def test_the_schedule_advances_with_every_batch(make_config) -> None:
    cfg = make_config(overrides=("train.grad_accumulation=2", "train.checkpoint_every=2", "train.steps=8"))
    trainer = Trainer(cfg, ONE_PROCESS)
    lrs = []
    for images, labels in _batches(1, 3):
        trainer.train_step(images, labels)
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
    assert lrs[0] > lrs[1] > lrs[2]  # poly decay moves on at a batch that only accumulates, as arcface_torch


def test_checkpoints_must_fall_between_optimizer_steps(make_config) -> None:
    with pytest.raises(ConfigError, match=r"train.checkpoint_every: must be a multiple of train.grad_accumulation"):
        make_config(overrides=("train.grad_accumulation=3", "train.checkpoint_every=100"))
    with pytest.raises(ConfigError, match=r"train\.grad_accumulation"):
        make_config(overrides=("train.grad_accumulation=0",))


class _KilledError(RuntimeError):
    pass


def _kill_at(step: int):
    def callback(trainer, current: int, row: dict) -> None:
        if current == step:
            raise _KilledError(f"killed at step {step}")

    return callback


def test_a_run_with_accumulation_resumes_exactly(make_config) -> None:
    from qualiface.train import train
    from qualiface.train.checkpoint import latest_checkpoint

    common = ("train.grad_accumulation=2", "train.checkpoint_every=2", "train.steps=6")
    straight = train(make_config("straight", overrides=common))
    killed = make_config("killed", overrides=common)
    with pytest.raises(_KilledError):
        train(killed, callbacks=[_kill_at(3)])  # mid-accumulation, after the step-2 checkpoint
    resumed = train(killed, resume=True)
    assert resumed.step == straight.step == 6
    states = [torch.load(latest_checkpoint(r.run_dir) / "rank0.pt", weights_only=True) for r in (straight, resumed)]
    for part in ("backbone", "head"):
        for key, value in states[0][part].items():
            assert torch.equal(value, states[1][part][key]), f"{part}.{key} differs after resume"
