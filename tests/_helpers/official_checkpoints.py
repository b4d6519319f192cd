"""Build checkpoints in the released formats of other projects (docs/formats.md, 'Checkpoint formats')
from one of our backbones with random weights, and reference preprocessing written independently of the library.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import qualiface
from qualiface.backbones.base import Backbone


def calibrate_bn(model: nn.Module, side: int, batch: int = 4) -> None:
    """Realistic BatchNorm statistics (one training-mode pass over random images), so the outputs stay O(1)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            module.momentum = None
            module.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(torch.randn(batch, 3, side, side))
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.1


def make_backbone(name: str, side: int = 32, **kwargs: Any) -> Backbone:
    """A seeded backbone with random weights and calibrated BatchNorm, in eval mode."""
    torch.manual_seed(0)
    if not name.startswith("mobilefacenet"):
        kwargs.setdefault("input_size", side)
    model = qualiface.create_backbone(name, **kwargs)
    with torch.no_grad():
        for param in model.parameters():  # move every affine parameter off its init value
            if param.ndim == 1:
                param.add_(0.05 * torch.randn_like(param))
    calibrate_bn(model, model.preprocessing.input_size[1])
    return model


def reference_input(images: np.ndarray, channel_order: str, mean: float, std: float) -> Tensor:
    """RGB uint8 (N, H, W, 3) to the network input, written the way the official inference scripts do it:
    ``cv2``-style BGR by reversing the channels, then ``(x / 255 − mean) / std`` in float32."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float()
    if channel_order == "BGR":
        x = x.flip(-1)
    x = (x / 255.0 - mean) / std
    return x.permute(0, 3, 1, 2).contiguous()


def save_insightface(model: Backbone, path: Path) -> Path:
    """arcface_torch ``backbone.pth`` / ``model.pt``: the plain state dict, no prefix (docs/formats.md,
    'insightface')."""
    torch.save(model.state_dict(), path)
    return path


def save_magface(model: Backbone, path: Path, *, ddp: bool = False, num_classes: int = 10) -> Path:
    """MagFace ``{epoch, arch, state_dict, optimizer}`` (docs/formats.md, 'magface'): DataParallel
    ``module.features.<key>`` plus ``module.fc.weight [512, C]``, or DDP ``features.module.<key>`` plus the parallel
    FC ``[C, 512]``."""
    prefix = "features.module." if ddp else "module.features."
    state = {prefix + k: v for k, v in model.state_dict().items()}
    if ddp:
        state["fc.weight"] = torch.randn(num_classes, 512)
    else:
        state["module.fc.weight"] = torch.randn(512, num_classes)
    optimizer = {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": list(range(3))}]}
    torch.save({"epoch": 25, "arch": "iresnet18", "state_dict": state, "optimizer": optimizer}, path)
    return path


def save_adaface(model: Backbone, path: Path, *, num_classes: int = 10) -> Path:
    """AdaFace PyTorch-Lightning ``.ckpt`` (docs/formats.md, 'adaface'): ``state_dict`` with ``model.<IR key>`` and
    ``head.*``, plus Lightning metadata and an ``argparse.Namespace`` of hyper-parameters."""
    state = {"model." + k: v for k, v in model.state_dict().items()}
    state.update(
        {
            "head.kernel": torch.randn(512, num_classes),
            "head.t": torch.zeros(1),
            "head.batch_mean": torch.ones(1) * 20,
            "head.batch_std": torch.ones(1) * 100,
        }
    )
    hparams = argparse.Namespace(arch="ir_18", head="adaface", m=0.4, h=0.333, s=64.0)
    torch.save(
        {
            "epoch": 24,
            "global_step": 1000,
            "pytorch-lightning_version": "1.8.6",
            "state_dict": state,
            "callbacks": {},
            "optimizer_states": [],
            "lr_schedulers": [],
            "hyper_parameters": {"hparams": hparams},
        },
        path,
    )
    return path


def save_crfiqa(model: Backbone, path: Path) -> Path:
    """CR-FIQA ``{step}backbone.pth``: the plain state dict including ``qs.weight``/``qs.bias`` (docs/formats.md,
    'crfiqa')."""
    torch.save(model.state_dict(), path)
    return path


def save_scaleface(model: Backbone, path: Path) -> Path:
    """ScaleFace ``checkpoint.pth`` = ``{"backbone": ..., "scale_predictor": MLPHead state dict}``
    (docs/formats.md, 'scaleface')."""
    state = model.state_dict()
    backbone = {k: v for k, v in state.items() if not k.startswith("scale_predictor.")}
    head = {k[len("scale_predictor.") :]: v for k, v in state.items() if k.startswith("scale_predictor.")}
    torch.save({"backbone": backbone, "scale_predictor": head}, path)
    return path


def save_unitsface_tar(model: Backbone, path: Path, *, num_classes: int = 10, bias: float = 20.5) -> Path:
    """A UniTSFace ``*_checkpoint.tar`` (docs/formats.md, 'unitsface'): ``{epoch, state_dict, optimizer}``, the
    LResNet-E-IR backbone keys under ``module.`` (the official single-GPU ``nn.DataParallel``), the class weights, the
    USS bias and the memory."""
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    state["module.sample_to_class_loss.weight"] = torch.randn(num_classes, 512)
    state["module.sample_to_sample_loss.bias"] = torch.tensor([bias])
    state["module.sample_to_sample_loss.feat_mem"] = torch.randn(num_classes, 512)
    torch.save({"epoch": 1, "state_dict": state, "optimizer": {}}, path)
    return path


def touch(marker: str) -> str:
    """Create ``marker``: what unpickling a :class:`Booby` trap runs."""
    Path(marker).write_text("unpickled")
    return marker


class Booby(nn.Module):
    """A module whose unpickling creates a marker file (to prove a loader never unpickles it)."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.fc = nn.Linear(2, 2)

    def __reduce__(self) -> tuple[Any, ...]:
        return (touch, (self.marker,))
