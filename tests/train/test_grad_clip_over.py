"""``train.grad_clip_over``: the clip bounds the backbone alone (default, arcface_torch) or the backbone and every
trainable head parameter, class centres and UniTSFace's ``b`` included (UniTSFace ``train.py``), with one global
norm over the ranks' shards; checked against a float64 NumPy computation of torch's ``clip_grad_norm_`` rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import qualiface
from _helpers.clip_workers import DIM, NUM_CLASSES, clip_rank, full_gradients
from _helpers.ddp import run_distributed
from qualiface.train.clipping import clip_gradients, clip_set
from qualiface.train.distributed import DistInfo
from qualiface.train.loop import Trainer

ONE_PROCESS = DistInfo(0, 0, 1, torch.device("cpu"))


def reference_clip(grads: dict[str, np.ndarray], clipped: list[str], max_norm: float) -> tuple[float, dict]:
    """torch's rule in float64: ``norm = sqrt(Σ |g|²)`` over ``clipped``, each scaled by
    ``min(1, max_norm / (norm + 1e-6))``; the others untouched."""
    norm = float(np.sqrt(sum(np.sum(grads[k].astype(np.float64) ** 2) for k in clipped)))
    factor = min(1.0, max_norm / (norm + 1e-6))
    return norm, {k: g.astype(np.float64) * (factor if k in clipped else 1.0) for k, g in grads.items()}


def one_process_set_up() -> tuple[nn.Module, nn.Module, dict[str, nn.Parameter]]:
    backbone = nn.Linear(3, DIM)
    head = qualiface.create_head("unitsface", embedding_dim=DIM, num_classes=NUM_CLASSES)
    params = {"backbone." + n: p for n, p in backbone.named_parameters()}
    params |= {"head." + n: p for n, p in head.named_parameters()}
    assert set(params) == set(full_gradients())  # UniTSFace trains its centres and b
    for name, grad in full_gradients().items():
        params[name].grad = grad.clone()
    return backbone, head, params


@pytest.mark.parametrize("over", ["backbone", "all"])
@pytest.mark.parametrize("max_norm", [2.0, 1e3])
def test_clip_over_one_process_equals_float64_reference(over, max_norm):
    backbone, head, params = one_process_set_up()
    before = {k: g.numpy().copy() for k, g in full_gradients().items()}
    clipped = [k for k in before if over == "all" or k.startswith("backbone.")]
    want_norm, want = reference_clip(before, clipped, max_norm)
    norm = clip_gradients(clip_set(over, backbone, head), max_norm)
    assert norm is not None
    np.testing.assert_allclose(norm.item(), want_norm, rtol=1e-6)
    for name, param in params.items():
        np.testing.assert_allclose(param.grad.numpy(), want[name], rtol=1e-6, atol=1e-7, err_msg=name)
    after = np.sqrt(sum(np.sum(params[k].grad.numpy().astype(np.float64) ** 2) for k in clipped))
    np.testing.assert_allclose(after, min(max_norm, want_norm), rtol=1e-5)
    if over == "backbone":  # the class centres and b keep their gradient (arcface_torch)
        for name in ("head.weight", "head.bias"):
            np.testing.assert_array_equal(params[name].grad.numpy(), before[name])


def test_frozen_head_parameters_are_not_clipped():
    backbone, head, _ = one_process_set_up()
    head.weight.requires_grad_(False)
    clip = clip_set("all", backbone, head)
    assert [id(p) for p in clip.replicated] == [id(p) for p in (*backbone.parameters(), head.bias)]


def test_unknown_clip_set_is_one_line():
    backbone, head, _ = one_process_set_up()
    with pytest.raises(ValueError, match=r"^train.grad_clip_over must be 'backbone' or 'all', got 'head'$"):
        clip_set("head", backbone, head)  # type: ignore[arg-type]


@pytest.mark.ddp
def test_clip_over_all_with_sharded_centres_uses_the_global_norm():
    max_norm = 2.0
    ranks = run_distributed(clip_rank, 2, max_norm)
    full = {k: g.numpy() for k, g in full_gradients().items()}
    want_norm, want = reference_clip(full, list(full), max_norm)
    centres = []
    for result in ranks:
        np.testing.assert_allclose(result["norm"].item(), want_norm, rtol=1e-6)
        for name in ("backbone.weight", "backbone.bias", "head.bias"):  # the same factor on every rank
            np.testing.assert_allclose(result["grads"][name].numpy(), want[name], rtol=1e-6, atol=1e-7)
        centres.append(result["grads"]["head.weight"].numpy())
    assert centres[0].shape[0] == 4  # 7 classes: rows 0-3 on rank 0, 4-6 on rank 1
    np.testing.assert_allclose(np.concatenate(centres), want["head.weight"], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("over", ["backbone", "all"])
def test_trainer_clips_the_configured_set(make_config, over):
    cfg = make_config(head="unitsface", overrides=(f"train.grad_clip_over={over}", "train.grad_clip=1e-3"))
    trainer = Trainer(cfg, ONE_PROCESS)
    head_ids = {id(p) for p in trainer.head.parameters()}
    clipped = {id(p) for p in trainer.clip.replicated}
    assert clipped >= {id(p) for p in trainer.backbone.parameters() if p.requires_grad}
    assert (clipped & head_ids == head_ids) if over == "all" else not (clipped & head_ids)
    batch = next(iter(trainer._loader()))
    trainer.train_step(batch.images, batch.labels)
    trainer.train_step(batch.images, batch.labels)  # the second step has a filled memory: b and the USS term take part
    params = [p for p in (*trainer.backbone.parameters(), *trainer.head.parameters()) if id(p) in clipped]
    norm = np.sqrt(sum(np.sum(p.grad.double().numpy() ** 2) for p in params if p.grad is not None))
    np.testing.assert_allclose(norm, 1e-3, rtol=1e-4)
    assert trainer.head.bias.grad is not None
    assert bool(trainer.head.bias.grad.abs().sum() > 0)


def test_default_is_backbone():
    assert qualiface.config.ExperimentConfig().train.grad_clip_over == "backbone"


def test_a_resume_may_change_the_clip_set(tmp_path):
    from qualiface.train.resume import Change, refuse_changes

    refuse_changes([Change("train.grad_clip_over", "backbone", "all")], tmp_path, tmp_path / "config.yaml")
