"""Verification during training: embed a pair set with the current backbone, insightface 10-fold accuracy.

Sets are ``.bin`` packs (``lfw.bin``, ...), pairs CSV files with an image folder, or pairs of held-out
synthetic identities (a seed disjoint from the training identities). Runs on rank 0 only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from qualiface.config.schema import EvalConfig, PairsSource, SyntheticConfig
from qualiface.models.face_model import FaceModel
from qualiface.models.inference import Embedded, embed_images

#: Added to the training seed for the held-out synthetic identities.
HELD_OUT_SEED_OFFSET = 1_000_003


class ImageSequence(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> np.ndarray: ...


@dataclass
class VerificationSet:
    """Images and the pairs over them; ``quality_truth`` per image where known (synthetic)."""

    name: str
    images: ImageSequence
    index_a: np.ndarray
    index_b: np.ndarray
    issame: np.ndarray
    quality_truth: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)


class _SyntheticImages:
    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.dataset.render(int(index))[0]


def held_out_synthetic(
    cfg: SyntheticConfig, num_pairs: int, image_size: int, name: str = "synthetic"
) -> VerificationSet:
    """Pairs over synthetic identities that the training set (same config) does not contain."""
    from qualiface.data.synthetic import SyntheticFaces, make_pairs

    identities = max(2, min(cfg.num_identities, 200))
    per_identity = max(2, min(cfg.images_per_identity, 10))
    dataset = SyntheticFaces(
        identities,
        per_identity,
        size=cfg.size or image_size,
        seed=cfg.seed + HELD_OUT_SEED_OFFSET,
        degradations=cfg.degradations,
        severity_range=(cfg.severity_range[0], cfg.severity_range[1]),
        clean_fraction=cfg.clean_fraction,
    )
    pairs = make_pairs(dataset, num_pairs, seed=cfg.seed)
    return VerificationSet(
        name,
        _SyntheticImages(dataset),
        pairs.index_a,
        pairs.index_b,
        pairs.issame.astype(bool),
        dataset.quality_truth,
        {"pairs": pairs, "dataset": dataset},
    )


def build_verification_set(source: PairsSource, synthetic: SyntheticConfig, image_size: int) -> VerificationSet:
    """One configured set (``bin``, ``pairs`` or ``synthetic``)."""
    if source.kind == "synthetic":
        return held_out_synthetic(synthetic, source.num_pairs, image_size, source.name or "synthetic")
    if source.kind == "bin":
        from qualiface.data.bin_pairs import load_bin

        pack = load_bin(source.path or "")
        n = len(pack)
        name = source.name or _stem(source.path)
        return VerificationSet(name, pack.images, np.arange(n) * 2, np.arange(n) * 2 + 1, pack.issame.astype(bool))
    from qualiface.data.pairs import load_pairs_csv

    pairs = load_pairs_csv(source.path or "", source.root)
    images, index_a, index_b = pairs.unique_images()
    return VerificationSet(source.name or _stem(source.path), images, index_a, index_b, pairs.issame.astype(bool))


def _stem(path: str | None) -> str:
    from pathlib import Path

    return Path(path or "pairs").stem


def embed_set(
    model: nn.Module,
    images: ImageSequence,
    *,
    batch_size: int = 128,
    flip: bool = False,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> Embedded:
    """Embed a set with the backbone being trained, through the library's one inference path
    (:func:`qualiface.models.inference.embed_images`): the backbone's preprocessing, eval mode for the duration,
    the trainer's autocast and memory format."""
    face_model = FaceModel.from_backbone(model)
    face_model.autocast_dtype = autocast_dtype
    face_model.channels_last = channels_last
    return embed_images(face_model, images, batch_size=batch_size, flip=flip)


def evaluate_set(
    model: nn.Module, vset: VerificationSet, cfg: EvalConfig, device: torch.device, **embed_kwargs: Any
) -> dict[str, float]:
    """``{"eval/<name>/accuracy": ..., ".../accuracy_std": ..., ".../threshold": ...}`` for one set."""
    from qualiface.eval.verification import evaluate_verification

    embedded = embed_set(model, vset.images, batch_size=cfg.batch_size, flip=cfg.flip, **embed_kwargs)
    emb, flipped = embedded.embeddings, embedded.flipped
    result = evaluate_verification(
        emb[vset.index_a],
        vset.issame,
        embeddings_b=emb[vset.index_b],
        flip=None if flipped is None else flipped[vset.index_a],
        flip_b=None if flipped is None else flipped[vset.index_b],
    )
    prefix = f"eval/{vset.name}"
    return {
        f"{prefix}/accuracy": float(result.accuracy),
        f"{prefix}/accuracy_std": float(result.accuracy_std),
        f"{prefix}/auc": float(result.auc),
        f"{prefix}/eer": float(result.eer),
    }


def evaluate_sets(
    model: nn.Module, sets: Sequence[VerificationSet], cfg: EvalConfig, device: torch.device, **embed_kwargs: Any
) -> dict[str, float]:
    """Metrics of every set, merged."""
    metrics: dict[str, float] = {}
    for vset in sets:
        metrics.update(evaluate_set(model, vset, cfg, device, **embed_kwargs))
    return metrics
