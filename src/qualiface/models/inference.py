"""The one inference path: aligned face crops in, raw embeddings (both views when the model fuses flips) and
quality out, in batches. ``qualiface embed | quality | verify | calibrate``, ``eval verify --model``, the HTTP
server, the trainer's verification and the demo all call :func:`embed_images`.

Images are RGB ``uint8`` ``(H, W, 3)``: a NumPy stack ``(N, H, W, 3)`` or any sequence whose items are images
(e.g. lazily decoded files). Each crop is brought to the model's input size as its card's ``resize`` says (square
crops only: a non-square image is not an aligned face), then prepared as :meth:`FaceModel.preprocess` says.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from qualiface.backbones.base import Preprocessing
from qualiface.models.card import UNKNOWN_PREPROCESSING, QualityInfo
from qualiface.models.face_model import FaceModel

#: A raw embedding whose norm is within this of 1 for every image is taken as unit-length (no norm quality).
UNIT_NORM_TOLERANCE = 1e-3


class ImageSource(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> np.ndarray: ...


@dataclass
class Embedded:
    """What :func:`embed_images` returns.

    Attributes:
        embeddings: Raw embeddings ``(N, D)`` float32 of the images as given.
        flipped: Raw embeddings of the mirrored images, when flips were embedded, else ``None``.
        quality: ``(N,)`` float32 on the images as given (higher = better), when asked for, else ``None``.
        quality_info: What ``quality`` is (method, trained or a plain embedding norm), else ``None``.
    """

    embeddings: np.ndarray
    flipped: np.ndarray | None = None
    quality: np.ndarray | None = None
    quality_info: QualityInfo | None = None

    def fused(self) -> np.ndarray:
        """``f(x) + f(flip x)`` when flips were embedded (the families that fuse them), else ``f(x)``."""
        return self.embeddings if self.flipped is None else self.embeddings + self.flipped


def prepare_batch(images: list[np.ndarray], preprocessing: Preprocessing, name: str, *, flip: bool) -> np.ndarray:
    """RGB ``uint8`` crops to the network input ``(N, 3, H, W)`` float32: resize (see the module docstring),
    optional horizontal flip, channel order, ``(x / 255 − mean) / std``."""
    _, height, width = preprocessing.input_size
    ready = []
    for index, image in enumerate(images):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(f"{name}: image {index} is {image.dtype} {image.shape}; expected RGB uint8 (H, W, 3)")
        if image.shape[:2] != (height, width):
            image = _resize(image, preprocessing, name, index)
        ready.append(image)
    array = np.stack(ready) if ready else np.zeros((0, height, width, 3), np.uint8)
    if flip:
        array = array[:, :, ::-1]
    if preprocessing.channel_order == "BGR":
        array = array[..., ::-1]
    mean = np.asarray(preprocessing.mean, dtype=np.float64)
    std = np.asarray(preprocessing.std, dtype=np.float64)
    x: np.ndarray
    if np.all(mean == 0) and np.all(np.abs(std * 255.0 - 1.0) < 1e-12):
        x = array.astype(np.float32)  # "raw 0..255 pixels": the values exactly, as the model's own code feeds them
    else:  # in float32, in this order, as the official inference scripts (bit-identical inputs)
        x = (array.astype(np.float32) / np.float32(255.0) - mean.astype(np.float32)) / std.astype(np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def _resize(image: np.ndarray, preprocessing: Preprocessing, name: str, index: int) -> np.ndarray:
    _, height, width = preprocessing.input_size
    size = f"{image.shape[1]}x{image.shape[0]}"
    if preprocessing.resize == "none":
        raise ValueError(
            f"{name}: image {index} is {size} pixels but the model takes {width}x{height} and its preprocessing "
            f"says resize none; align and crop the faces to that size"
        )
    if image.shape[0] != image.shape[1]:
        raise ValueError(
            f"{name}: image {index} is {size} pixels, not a square aligned face crop; the model takes "
            f"{width}x{height} (detect and align the photos first, or run without --aligned)"
        )
    from PIL import Image

    method = Image.Resampling.BOX if preprocessing.resize == "area" else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(image).resize((width, height), method))


def embed_images(
    model: FaceModel,
    images: ImageSource | np.ndarray,
    *,
    batch_size: int = 64,
    flip: bool | None = None,
    quality: bool = False,
    allow_untrained_quality: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Embedded:
    """Embed ``images`` with ``model`` in batches of ``batch_size``.

    Args:
        model: A loaded model (PyTorch or onnxruntime).
        images: Aligned RGB ``uint8`` crops (see the module docstring).
        batch_size: Images per forward pass.
        flip: Also embed the mirrored images (``Embedded.flipped``); default: when the model's card says its family
            fuses flips (``flip_fusion = "sum"``).
        quality: Also return the model's quality scores (of the images as given).
        allow_untrained_quality: Without a trained quality, return the norm of the raw embedding, labelled
            ``embedding_norm`` (refused when the model outputs unit-length embeddings).
        progress: Called as ``progress(done, total)`` after every batch.

    Raises:
        ValueError: Bad images; ``quality`` on a model without one (unless allowed), or on unit-length output.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if model.preprocessing.source == UNKNOWN_PREPROCESSING:
        raise ValueError(f"{model.name}: its preprocessing is unknown; state it with --preprocessing (load_model(...))")
    flip = model.flip_policy == "sum" if flip is None else flip
    info = model.quality_info(allow_untrained=allow_untrained_quality) if quality else None
    if quality and info is None:
        raise ValueError(
            f"{model.name} ({model.source_format}) has no quality output; quality scores come from MagFace/AdaFace "
            f"feature norms, a CR-FIQA 'qs' branch or a ScaleFace scale predictor"
        )
    n = len(images)
    chunks: list[np.ndarray] = []
    flip_chunks: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    with model.inference():
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            batch = _batch(images, start, stop)
            emb, q = model.forward_array(prepare_batch(batch, model.preprocessing, model.name, flip=False))
            chunks.append(emb)
            if flip:
                flip_chunks.append(
                    model.forward_array(prepare_batch(batch, model.preprocessing, model.name, flip=True))[0]
                )
            if info is not None:
                scores.append(
                    np.linalg.norm(emb.astype(np.float32), axis=1) if info.method == "feature_norm" else _need(q, model)
                )
            if progress is not None:
                progress(stop, n)
    empty = np.zeros((0, model.embedding_dim), np.float32)
    embeddings = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else empty
    flipped = (np.concatenate(flip_chunks).astype(np.float32, copy=False) if flip_chunks else empty) if flip else None
    out = Embedded(embeddings, flipped, None, info)
    if info is not None:
        out.quality = np.concatenate(scores).astype(np.float32, copy=False) if scores else np.zeros(0, np.float32)
        if (
            info.source == "embedding_norm"
            and out.quality.size
            and np.all(np.abs(out.quality - 1) < UNIT_NORM_TOLERANCE)
        ):
            raise ValueError(
                f"{model.name} outputs unit-length embeddings: their norm is 1 for every face and says nothing about "
                f"quality; use a model with a quality output (CR-FIQA, ScaleFace, MagFace, AdaFace)"
            )
    return out


def _batch(images: Any, start: int, stop: int) -> list[np.ndarray]:
    if isinstance(images, np.ndarray):
        return list(images[start:stop])
    return [images[i] for i in range(start, stop)]


def _need(q: np.ndarray | None, model: FaceModel) -> np.ndarray:
    if q is None:
        raise ValueError(f"{model.name}: the network gave no quality output")
    return q
