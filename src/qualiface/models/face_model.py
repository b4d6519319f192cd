"""One face model object over every supported source: RGB ``uint8`` images in, raw embeddings and quality out.

A :class:`FaceModel` wraps either a PyTorch backbone (``module``) or an onnxruntime session (``session``) and
applies the model's own :class:`~qualiface.backbones.base.Preprocessing` (channel order, ``(x/255 − mean)/std``,
input size), so callers always pass RGB ``uint8`` arrays ``(N, H, W, 3)`` (what Pillow decodes). Build one with
:func:`qualiface.models.load_model`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from qualiface.backbones.base import Preprocessing

QUALITY_METHODS: tuple[str, ...] = ("feature_norm", "cr_fiqa", "scaleface")
_AUX_KEYS = {"cr_fiqa": "quality", "scaleface": "scale"}
_ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class FaceModel:
    """A loaded face recognition model: embeddings, quality scores and the preprocessing they need.

    Attributes:
        name: Human-readable model name (architecture and file), used in messages.
        source_format: The adapter that loaded it (``"qualiface"``, ``"insightface"``, ``"magface"``,
            ``"adaface"``, ``"crfiqa"``, ``"scaleface"``, ``"safetensors"``, ``"onnx"``).
        preprocessing: Channel order, mean/std on 0..1 pixels, input size, flip fusion (methods.md §1.2).
        embedding_dim: Width of the raw embedding.
        quality_method: ``"feature_norm"`` (MagFace, AdaFace), ``"cr_fiqa"`` (the ``qs`` output),
            ``"scaleface"`` (the predicted scale) or ``None`` (no quality output).
        threshold: Cosine decision threshold (a UniTSFace-trained model's learned threshold or a calibration).
        calibration: The calibration sidecar's content, when there is one.
        flip_policy: ``"sum"`` when the family fuses ``f(x) + f(flip x)`` at test time, else ``"none"``.
        module: The PyTorch backbone (eval mode) or ``None``.
        session: The onnxruntime session or ``None``.
        path: The file it was loaded from, when any.
        info: Extra facts from the source (architecture, keys dropped, ...).
    """

    def __init__(
        self,
        *,
        name: str,
        source_format: str,
        preprocessing: Preprocessing,
        embedding_dim: int,
        module: torch.nn.Module | None = None,
        session: Any = None,
        quality_method: str | None = None,
        threshold: float | None = None,
        calibration: dict[str, Any] | None = None,
        device: str | torch.device = "cpu",
        path: str | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        if (module is None) == (session is None):
            raise ValueError("FaceModel needs exactly one of module= and session=")
        if quality_method is not None and quality_method not in QUALITY_METHODS:
            raise ValueError(f"unknown quality_method {quality_method!r}; expected None or one of {QUALITY_METHODS}")
        self.name = name
        self.source_format = source_format
        self.preprocessing = preprocessing
        self.embedding_dim = int(embedding_dim)
        self.quality_method = quality_method
        self.threshold = threshold
        self.calibration = calibration
        self.path = path
        self.info = dict(info or {})
        self.device = torch.device(device)
        self.module = module
        self.session = session
        if module is not None:
            module.to(self.device).eval()
        self._onnx_io: dict[str, Any] = {}
        if session is not None:
            self._describe_session()

    # ------------------------------------------------------------------------------------------------ description

    @property
    def flip_policy(self) -> str:
        """``"sum"`` (the family fuses ``f(x) + f(flip x)``) or ``"none"``, from :attr:`preprocessing`."""
        return self.preprocessing.flip_fusion

    @property
    def input_size(self) -> tuple[int, int]:
        """``(height, width)`` the network takes."""
        _, height, width = self.preprocessing.input_size
        return int(height), int(width)

    def __repr__(self) -> str:
        p = self.preprocessing
        backend = "torch" if self.module is not None else "onnxruntime"
        return (
            f"FaceModel({self.name!r}, format={self.source_format!r}, backend={backend}, dim={self.embedding_dim}, "
            f"quality={self.quality_method!r}, {p.channel_order} mean={list(p.mean)} std={list(p.std)} "
            f"size={self.input_size}, flip={self.flip_policy!r}, threshold={self.threshold})"
        )

    # ------------------------------------------------------------------------------------------------ preprocessing

    def preprocess(self, images: np.ndarray | Sequence[np.ndarray], *, flip: bool = False) -> np.ndarray:
        """RGB ``uint8`` ``(N, H, W, 3)`` (or a list of ``(H, W, 3)``) to the network input ``(N, 3, H, W)``
        float32: optional horizontal flip, the model's channel order, ``(x / 255 − mean) / std``."""
        array = _stack(images)
        height, width = self.input_size
        if array.shape[1:3] != (height, width):
            raise ValueError(
                f"{self.name}: images are {array.shape[2]}x{array.shape[1]} pixels (WxH) but the model takes "
                f"{width}x{height}; align and crop the faces first"
            )
        if flip:
            array = array[:, :, ::-1]
        if self.preprocessing.channel_order == "BGR":
            array = array[..., ::-1]
        mean = np.asarray(self.preprocessing.mean, dtype=np.float32)
        std = np.asarray(self.preprocessing.std, dtype=np.float32)
        x = (array.astype(np.float32) / np.float32(255.0) - mean) / std
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)

    # ------------------------------------------------------------------------------------------------ inference

    def embed(
        self, images: np.ndarray | Sequence[np.ndarray], *, batch_size: int = 64, flip: bool = False
    ) -> np.ndarray:
        """Raw (not normalised) embeddings ``(N, embedding_dim)`` float32.

        Args:
            images: RGB ``uint8`` ``(N, H, W, 3)`` or a list of ``(H, W, 3)`` arrays at the model's input size.
            batch_size: Images per forward pass.
            flip: Return ``f(x) + f(flip x)`` (arcface_torch / AdaFace / UniTSFace flip fusion; for AdaFace this
                is its ``pre_norm_vector_add``).
        """
        embeddings, _ = self._run_all(images, batch_size=batch_size, flip=flip, want_quality=False)
        return embeddings

    def quality(self, images: np.ndarray | Sequence[np.ndarray], *, batch_size: int = 64) -> np.ndarray:
        """Quality scores ``(N,)`` float32, higher = better, on the single non-flipped view.

        Raises:
            ValueError: The model has no quality output (:attr:`quality_method` is ``None``).
        """
        self._require_quality()
        _, scores = self._run_all(images, batch_size=batch_size, flip=False, want_quality=True)
        assert scores is not None
        return scores

    def embed_and_quality(
        self, images: np.ndarray | Sequence[np.ndarray], *, batch_size: int = 64, flip: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings (as :meth:`embed`) and quality (as :meth:`quality`) from one forward pass per batch
        (plus one on the flipped images when ``flip``)."""
        self._require_quality()
        embeddings, scores = self._run_all(images, batch_size=batch_size, flip=flip, want_quality=True)
        assert scores is not None
        return embeddings, scores

    def forward_array(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Run preprocessed input ``(N, 3, H, W)`` float32: raw embeddings and (when available) quality."""
        if self.module is not None:
            return self._forward_torch(x)
        return self._forward_onnx(x)

    # ------------------------------------------------------------------------------------------------ internals

    def _require_quality(self) -> None:
        if self.quality_method is None:
            raise ValueError(
                f"{self.name} ({self.source_format}) has no quality output; quality scores come from MagFace/AdaFace "
                f"feature norms, a CR-FIQA 'qs' branch or a ScaleFace scale predictor"
            )

    def _run_all(
        self, images: np.ndarray | Sequence[np.ndarray], *, batch_size: int, flip: bool, want_quality: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(images)
        embeddings: list[np.ndarray] = []
        scores: list[np.ndarray] = []
        for start in range(0, n, batch_size):
            chunk = images[start : start + batch_size]
            emb, q = self.forward_array(self.preprocess(chunk))
            if flip:
                emb = emb + self.forward_array(self.preprocess(chunk, flip=True))[0]
            embeddings.append(emb)
            if want_quality:
                if q is None:  # pragma: no cover - guarded by _require_quality
                    raise ValueError(f"{self.name}: no quality output")
                scores.append(q)
        emb_out = (
            np.concatenate(embeddings).astype(np.float32, copy=False)
            if embeddings
            else np.zeros((0, self.embedding_dim), dtype=np.float32)
        )
        if not want_quality:
            return emb_out, None
        q_out = np.concatenate(scores).astype(np.float32, copy=False) if scores else np.zeros(0, dtype=np.float32)
        return emb_out, q_out

    def _forward_torch(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        assert self.module is not None
        with torch.inference_mode():
            tensor = torch.from_numpy(x).to(self.device)
            if self.quality_method in _AUX_KEYS:
                emb, aux = self.module.forward_aux(tensor)
                q: torch.Tensor | None = aux[_AUX_KEYS[self.quality_method]].float()
            else:
                emb = self.module(tensor)
                q = torch.linalg.vector_norm(emb.float(), dim=1) if self.quality_method == "feature_norm" else None
            emb_np = emb.float().cpu().numpy()
            return emb_np, None if q is None else q.cpu().numpy()

    def _describe_session(self) -> None:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ValueError(
                f"{self.name}: expected one N x 3 x H x W input, got {[(i.name, i.shape) for i in inputs]}"
            )
        names = [o.name for o in outputs]
        emb_name = "embedding" if "embedding" in names else names[0]
        quality_name = "quality" if "quality" in names else None
        batch = inputs[0].shape[0]
        self._onnx_io = {
            "input": inputs[0].name,
            "dtype": _ONNX_DTYPES.get(inputs[0].type, np.float32),
            "fixed_batch": batch if isinstance(batch, int) and batch > 0 else None,
            "embedding": emb_name,
            "quality": quality_name,
        }
        if self.quality_method in _AUX_KEYS and quality_name is None:
            raise ValueError(
                f"{self.name}: quality_method {self.quality_method!r} but the graph has no 'quality' output"
            )

    def _run_session(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        io = self._onnx_io
        wanted = [io["embedding"]] + ([io["quality"]] if io["quality"] else [])
        results = self.session.run(wanted, {io["input"]: x.astype(io["dtype"], copy=False)})
        emb = np.asarray(results[0], dtype=np.float32).reshape(x.shape[0], -1)
        q = np.asarray(results[1], dtype=np.float32).reshape(x.shape[0]) if len(results) > 1 else None
        return emb, q

    def _forward_onnx(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        fixed = self._onnx_io["fixed_batch"]
        if fixed is None or x.shape[0] == fixed:
            emb, q = self._run_session(x)
        else:  # a fixed batch dimension: run in chunks of that size, padding the last one
            parts: list[tuple[np.ndarray, np.ndarray | None]] = []
            for s in range(0, x.shape[0], fixed):
                chunk = x[s : s + fixed]
                n = chunk.shape[0]
                if n < fixed:
                    chunk = np.concatenate([chunk, np.zeros((fixed - n, *chunk.shape[1:]), dtype=chunk.dtype)])
                e, qq = self._run_session(chunk)
                parts.append((e[:n], None if qq is None else qq[:n]))
            emb = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, self.embedding_dim), np.float32)
            q = None if not parts or parts[0][1] is None else np.concatenate([p[1] for p in parts])  # type: ignore[misc]
        if q is None and self.quality_method == "feature_norm":
            q = np.linalg.norm(emb.astype(np.float32), axis=1)
        return emb, q


def _stack(images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """RGB ``uint8`` images as one ``(N, H, W, 3)`` array."""
    if isinstance(images, np.ndarray):
        array = images
    else:
        items = [np.asarray(image) for image in images]
        if not items:
            raise ValueError("no images given")
        shapes = {item.shape for item in items}
        if len(shapes) != 1:
            raise ValueError(f"images differ in shape {sorted(shapes)}; align and crop them to the model's input size")
        array = np.stack(items)
    if array.ndim == 3 and array.shape[-1] == 3:
        raise ValueError(f"expected a batch (N, H, W, 3) of RGB images, got one image {array.shape}; wrap it in a list")
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected RGB uint8 images (N, H, W, 3), got {array.dtype} {array.shape}")
    return array
