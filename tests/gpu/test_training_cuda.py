"""The real trainer on CUDA: fp32 equals the CPU, bf16 and fp16 (with its GradScaler) stay close to fp32, and every
head trains a few steps in every precision through ``qualiface.train.train`` without a non-finite value.

The comparisons drive ``Trainer.train_step`` on the same CPU batches (drawn once from the run's own sampler and
samples), with a constant learning rate of 0.01 so that the trajectories stay comparable step by step.

Tolerances, relative, on the loss of every step (ArcFace, s = 64, losses ~50 falling to ~20):

- fp32 on CUDA against fp32 on the CPU, TF32 off: the two differ in the order of their sums (~1e-7 per operation),
  grown by the steps: ``1e-4``.
- bf16 against fp32: bf16 keeps 8 significant bits (unit roundoff 2^-8 ≈ 3.9e-3) in the backbone; measured with the
  same runs under CPU autocast, the losses of 6 steps differ by at most 3.7e-3; ``3e-2`` leaves ~8x.
- fp16 against fp32: fp16 keeps 11 bits (2^-11 ≈ 4.9e-4); measured (CPU autocast to fp16 with the trainer's
  GradScaler) at most 1.3e-3 over the steps the scaler applied; ``1e-2`` leaves ~7x. The GradScaler starts at
  2^16 and skips the optimizer step while the scaled gradients overflow (it halves the scale each time: the first
  five steps here), so fp16 is compared with an fp32 run that takes the same applied steps only (with a constant
  learning rate and SGD, a skipped step changes nothing but the scale).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

import qualiface
from _helpers.tiny_training import tiny_config
from qualiface.config import ExperimentConfig
from qualiface.train import train
from qualiface.train.distributed import DistInfo
from qualiface.train.loop import Trainer

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("tiny_cnn")]

# The GradScaler skips the optimizer step of an overflowing fp16 step and torch then warns that the scheduler
# stepped first; that warning is the expected fp16 start (arcface_torch's loop meets it too), not a fault.
SCHEDULER_BEFORE_OPTIMIZER = (
    r"ignore:Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`:UserWarning"
)

CUDA = torch.device("cuda", 0)
CPU = torch.device("cpu")
RTOL = {"cpu": 1e-4, "bf16": 3e-2, "fp16": 1e-2}


def tiny_cuda_config(out_dir: Path, *, head: str = "arcface", overrides: tuple[str, ...] = ()) -> ExperimentConfig:
    """:func:`tiny_config` on CUDA: SGD 0.01 constant, 4 steps, precision ``auto`` unless overridden."""
    train = {"steps": 4, "device": "cuda", "precision": "auto"}
    return tiny_config(
        out_dir, head=head, overrides=overrides, optim={"lr": 0.01}, schedule={"name": "constant"}, train=train
    )


def _trainer(tmp_path: Path, name: str, precision: str, device: torch.device) -> Trainer:
    cfg = tiny_cuda_config(tmp_path / name, overrides=(f"train.precision={precision}", f"train.device={device.type}"))
    return Trainer(cfg, DistInfo(0, 0, 1, device))


def _batches(trainer: Trainer, count: int) -> list[tuple[Tensor, Tensor]]:
    """The first ``count`` batches of the run's own sampler, as CPU tensors (``train_step`` moves them)."""
    keys = iter(trainer.sampler)
    batches = []
    for _ in range(count):
        items = [trainer.samples[key] for key in next(keys)]
        batches.append((torch.stack([item[0] for item in items]), torch.tensor([int(item[1]) for item in items])))
    return batches


def _losses(trainer: Trainer, batches: list[tuple[Tensor, Tensor]]) -> list[float]:
    losses = []
    for images, labels in batches:
        loss, _, _ = trainer.train_step(images, labels)
        losses.append(float(loss))
    assert all(math.isfinite(x) for x in losses), losses
    return losses


def _assert_close_losses(got: list[float], want: list[float], rtol: float, what: str) -> None:
    assert len(got) == len(want), what
    worst = max(abs(g - w) / abs(w) for g, w in zip(got, want, strict=True))
    assert worst <= rtol, f"{what}: relative difference {worst:.2e} > {rtol:g}\n  got  {got}\n  want {want}"


def test_fp32_on_cuda_equals_fp32_on_the_cpu(tmp_path: Path, ieee_fp32: None) -> None:
    cpu = _trainer(tmp_path, "cpu", "fp32", CPU)
    cuda = _trainer(tmp_path, "cuda", "fp32", CUDA)
    assert cuda.head.weight.is_cuda
    assert next(cuda.backbone.parameters()).is_cuda
    batches = _batches(cpu, 6)
    _assert_close_losses(_losses(cuda, batches), _losses(cpu, batches), RTOL["cpu"], "fp32 CUDA vs CPU")
    cpu_state, cuda_state = cpu.backbone.state_dict(), cuda.backbone.state_dict()
    for key, value in cpu_state.items():
        if value.is_floating_point():
            floor = 1e-3 * float(value.abs().max())
            torch.testing.assert_close(cuda_state[key].cpu(), value, rtol=1e-3, atol=max(floor, 1e-8), msg=key)
    centres = cpu.head.weight.detach()
    floor = 1e-3 * float(centres.abs().max())
    torch.testing.assert_close(cuda.head.weight.detach().cpu(), centres, rtol=1e-3, atol=floor, msg="class centres")


def _dtype_of_embeddings(trainer: Trainer) -> list[torch.dtype]:
    """Records the dtype of the embeddings at every step (a hook on ``tiny_cnn``'s last layer)."""
    seen: list[torch.dtype] = []
    trainer.backbone.get_submodule("fc").register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    return seen


def test_bf16_steps_stay_close_to_fp32(tmp_path: Path, ieee_fp32: None) -> None:
    if not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name()} does not run bf16")
    fp32 = _trainer(tmp_path, "fp32", "fp32", CUDA)
    bf16 = _trainer(tmp_path, "bf16", "bf16", CUDA)
    assert bf16.autocast_dtype is torch.bfloat16
    assert bf16.scaler is None
    seen = _dtype_of_embeddings(bf16)
    batches = _batches(fp32, 6)
    _assert_close_losses(_losses(bf16, batches), _losses(fp32, batches), RTOL["bf16"], "bf16 vs fp32")
    assert seen == [torch.bfloat16] * 6  # the backbone ran under bf16 autocast
    assert bf16.head.weight.dtype == torch.float32


@pytest.mark.filterwarnings(SCHEDULER_BEFORE_OPTIMIZER)
def test_fp16_uses_a_grad_scaler_and_stays_close_to_fp32(tmp_path: Path, ieee_fp32: None) -> None:
    fp16 = _trainer(tmp_path, "fp16", "fp16", CUDA)
    assert fp16.autocast_dtype is torch.float16
    assert fp16.scaler is not None
    assert fp16.scaler.is_enabled()
    seen = _dtype_of_embeddings(fp16)
    batches = _batches(fp16, 12)
    losses, applied = [], []
    for step, (images, labels) in enumerate(batches):
        before = fp16.scaler.get_scale()
        loss, _, _ = fp16.train_step(images, labels)
        after = fp16.scaler.get_scale()
        assert math.isfinite(float(loss)), f"step {step}: loss {float(loss)}"
        assert after in (before, before / 2), f"step {step}: the scale went from {before} to {after}"
        if after == before:  # no overflow: the optimizer step was taken (growth only after 100 clean steps)
            losses.append(float(loss))
            applied.append(step)
    scale = fp16.scaler.get_scale()
    assert math.isfinite(scale)
    assert scale > 0
    assert len(applied) >= 3, f"the GradScaler skipped {12 - len(applied)} of 12 steps (scale now {scale})"
    assert seen == [torch.float16] * 12  # the backbone ran under fp16 autocast
    reference = _trainer(tmp_path, "fp32", "fp32", CUDA)
    want = _losses(reference, [batches[step] for step in applied])
    _assert_close_losses(losses, want, RTOL["fp16"], f"fp16 vs fp32 over the applied steps {applied}")


PRECISIONS = ["fp32", "bf16", "fp16", "auto"]


@pytest.mark.filterwarnings(SCHEDULER_BEFORE_OPTIMIZER)
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("head", qualiface.list_heads())
def test_every_head_trains_on_cuda_in_every_precision(tmp_path: Path, head: str, precision: str) -> None:
    """Through ``train()``: the process set-up on CUDA, the pinned-memory loader, the step, the checkpoint and the
    exported model; finite losses at every step (a non-finite one stops the run with an error)."""
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name()} does not run bf16")
    expected = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if precision == "auto":
        expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    seen: dict[str, Any] = {}

    def spy(trainer: Trainer, step: int, row: dict[str, Any]) -> None:
        seen.update(device=trainer.device, dtype=trainer.autocast_dtype, scaler=trainer.scaler)

    cfg = tiny_cuda_config(tmp_path / "run", head=head, overrides=(f"train.precision={precision}", "train.steps=4"))
    result = train(cfg, callbacks=[spy])
    assert result.step == 4
    assert seen["device"].type == "cuda"
    assert seen["dtype"] is expected
    assert (seen["scaler"] is not None) is (expected is torch.float16)
    if seen["scaler"] is not None:
        assert math.isfinite(seen["scaler"].get_scale())
    rows = (result.run_dir / "metrics.csv").read_text().splitlines()[1:]
    assert len(rows) == 4
    run = json.loads((result.run_dir / "run.json").read_text())
    assert "cuda" in json.dumps(run)
    assert result.model_path is not None
    model = torch.load(result.model_path, weights_only=True)
    assert all(not value.is_cuda for value in model["state_dict"].values())  # the model file loads on a CPU
