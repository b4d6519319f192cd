"""One face model object over every supported source: RGB ``uint8`` images in, raw embeddings and quality out.

A :class:`FaceModel` holds the model's :class:`~qualiface.models.card.ModelCard` and either a PyTorch backbone
(``module``) or an onnxruntime session (``session``); batches go through the one inference path
(:func:`qualiface.models.inference.embed_images`), which applies the card's preprocessing, so callers always pass
RGB ``uint8`` arrays ``(N, H, W, 3)`` (what Pillow decodes). Build one with :func:`qualiface.models.load_model` or
:meth:`FaceModel.from_backbone`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from qualiface.backbones.base import Preprocessing
from qualiface.models.card import ModelCard, QualityInfo, ThresholdInfo
from qualiface.quality.branches import branch_names, get_branch

_ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class FaceModel:
    """A loaded face recognition model: its :class:`~qualiface.models.card.ModelCard` and the network.

    Attributes:
        card: What the model is (name, format, architecture, preprocessing, quality, thresholds, SHA-256, ...).
        module: The PyTorch backbone (eval mode) or ``None``.
        session: The onnxruntime session or ``None``.
        path: The file it was loaded from, when any.
        calibration: The calibration file's content, when there is one.
        info: Extra facts from the source (architecture, keys dropped, ONNX metadata, ...).

    ``name``, ``source_format``, ``preprocessing``, ``embedding_dim``, ``quality_method`` and ``threshold`` read
    the card; setting ``preprocessing`` or ``threshold`` updates it.
    """

    def __init__(
        self,
        card: ModelCard,
        *,
        module: Any = None,
        session: Any = None,
        device: str | torch.device = "cpu",
        path: str | None = None,
        info: dict[str, Any] | None = None,
        calibration: dict[str, Any] | None = None,
    ) -> None:
        if (module is None) == (session is None):
            raise ValueError("FaceModel needs exactly one of module= and session=")
        known = ("feature_norm", *branch_names())  # the embedding norm, or a registered quality branch's output
        for quality in card.quality:
            if quality.method not in known:
                raise ValueError(f"unknown quality method {quality.method!r}; expected one of {known}")
        self.card = card
        self.calibration = calibration
        self.path = path
        self.info = dict(info or {})
        self.device = torch.device(device)
        self.module = module
        self.session = session
        if module is not None:
            module.to(self.device)
        self.autocast_dtype: torch.dtype | None = None  # the trainer's evaluation runs under its autocast
        self.channels_last = False
        self._onnx_io: dict[str, Any] = {}
        if session is not None:
            self._describe_session()

    @classmethod
    def from_backbone(
        cls,
        backbone: Any,
        *,
        name: str | None = None,
        head: str | None = None,
        device: str | torch.device | None = None,
    ) -> FaceModel:
        """A model over a backbone built in Python (or being trained): its card from the backbone's description,
        quality from its branch or from the ``head`` it is trained with (MagFace, AdaFace: the norm)."""
        from qualiface.models.formats.common import branch_quality, head_quality

        arch = getattr(backbone, "arch", "") or type(backbone).__name__
        card = ModelCard(
            name=name or arch,
            source_format="qualiface",
            embedding_dim=int(backbone.embedding_dim),
            preprocessing=backbone.preprocessing,
            architecture=arch,
            architecture_kwargs=dict(getattr(backbone, "arch_kwargs", {}) or _recovered_kwargs(backbone)),
            quality=branch_quality(getattr(backbone, "quality_branch", None)) or head_quality(head),
        )
        if device is None:
            first = next(iter(backbone.parameters()), None)
            device = first.device if first is not None else "cpu"
        return cls(card, module=backbone, device=device)

    # ------------------------------------------------------------------------------------------------ description

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def source_format(self) -> str:
        return self.card.source_format

    @property
    def embedding_dim(self) -> int:
        return self.card.embedding_dim

    @property
    def preprocessing(self) -> Preprocessing:
        return self.card.preprocessing

    @preprocessing.setter
    def preprocessing(self, value: Preprocessing) -> None:
        self.card = replace(self.card, preprocessing=value)
        if self.module is not None:
            self.module.preprocessing = value

    @property
    def quality_method(self) -> str | None:
        """The trained quality method (``"feature_norm"`` of a MagFace/AdaFace model, ``"cr_fiqa"``,
        ``"scaleface"``) or ``None``; see :meth:`quality_info` for the untrained embedding-norm fallback."""
        return self.card.quality_method

    @property
    def threshold(self) -> float | None:
        """The cosine threshold decisions use by default: one set here, else the card's calibrated one, else
        ``None``. A threshold learned in training is not one of them (see :attr:`learned_threshold`).

        Setting it records a ``"given"`` threshold in the card, which decides until a newer calibration; ``None``
        removes it (the calibration decides again)."""
        decision = self.card.decision_threshold
        return None if decision is None else decision.value

    @threshold.setter
    def threshold(self, value: float | None) -> None:
        kept = tuple(t for t in self.card.thresholds if t.kind != "given")
        added = () if value is None else (ThresholdInfo(value=float(value), kind="given", source="set in Python"),)
        self.card = replace(self.card, thresholds=(*kept, *added))

    @property
    def learned_threshold(self) -> float | None:
        """The threshold learned in training (UniTSFace's ``b / γ``), or ``None``. It decides only when asked for
        (``threshold="learned"``, ``--threshold learned``); ``qualiface calibrate`` measures its FMR and FNMR."""
        learned = self.card.learned_threshold
        return None if learned is None else learned.value

    def quality_info(self, *, allow_untrained: bool = False) -> QualityInfo | None:
        """The quality the model outputs; with ``allow_untrained`` a recognizer without one gets the norm of its
        raw embedding, labelled ``source="embedding_norm"`` (refused at scoring time if the output is unit-length)."""
        if self.card.quality:
            return self.card.quality[0]
        if not allow_untrained:
            return None
        return QualityInfo(
            method="feature_norm",
            source="embedding_norm",
            description="norm of the raw embedding (the model was not trained for quality)",
        )

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
        backend = "torch" if self.module is not None else "onnxruntime"
        return (
            f"FaceModel({self.name!r}, format={self.source_format!r}, backend={backend}, dim={self.embedding_dim}, "
            f"quality={self.quality_method!r}, {self.preprocessing.describe()}, threshold={self.threshold})"
        )

    # ------------------------------------------------------------------------------------------------ inference

    def preprocess(self, images: np.ndarray | Sequence[np.ndarray], *, flip: bool = False) -> np.ndarray:
        """RGB ``uint8`` ``(N, H, W, 3)`` (or a list of ``(H, W, 3)``) to the network input ``(N, 3, H, W)``
        float32 (see :func:`qualiface.models.inference.prepare_batch`)."""
        from qualiface.models.inference import prepare_batch

        return prepare_batch(list(_stack(images)), self.preprocessing, self.name, flip=flip)

    def embed(
        self, images: np.ndarray | Sequence[np.ndarray], *, batch_size: int = 64, flip: bool = False
    ) -> np.ndarray:
        """Raw (not normalised) embeddings ``(N, embedding_dim)`` float32.

        Args:
            images: RGB ``uint8`` ``(N, H, W, 3)`` or a list of ``(H, W, 3)`` aligned crops.
            batch_size: Images per forward pass.
            flip: Return ``f(x) + f(flip x)`` (arcface_torch / AdaFace / UniTSFace flip fusion; for AdaFace this
                is its ``pre_norm_vector_add``).
        """
        from qualiface.models.inference import embed_images

        return embed_images(self, _stack(images), batch_size=batch_size, flip=flip).fused()

    def quality(self, images: np.ndarray | Sequence[np.ndarray], *, batch_size: int = 64) -> np.ndarray:
        """Quality scores ``(N,)`` float32, higher = better, on the single non-flipped view.

        Raises:
            ValueError: The model has no quality output (:attr:`quality_method` is ``None``).
        """
        from qualiface.models.inference import embed_images

        scores = embed_images(self, _stack(images), batch_size=batch_size, flip=False, quality=True).quality
        assert scores is not None
        return scores

    def embed_and_quality(
        self, images: np.ndarray | Sequence[np.ndarray], *, batch_size: int = 64, flip: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings (as :meth:`embed`) and quality (as :meth:`quality`) from one forward pass per batch
        (plus one on the flipped images when ``flip``)."""
        from qualiface.models.inference import embed_images

        out = embed_images(self, _stack(images), batch_size=batch_size, flip=flip, quality=True)
        assert out.quality is not None
        return out.fused(), out.quality

    @contextlib.contextmanager
    def inference(self) -> Iterator[None]:
        """The PyTorch module in eval mode for the duration (its previous mode restored afterwards)."""
        if self.module is None:
            yield
            return
        was_training = self.module.training
        self.module.eval()
        try:
            yield
        finally:
            self.module.train(was_training)

    def forward_array(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Run preprocessed input ``(N, 3, H, W)`` float32: raw embeddings and (for a quality branch) its output."""
        if self.module is not None:
            return self._forward_torch(x)
        return self._forward_onnx(x)

    # ------------------------------------------------------------------------------------------------ internals

    def _forward_torch(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        assert self.module is not None
        amp = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), amp:
            tensor = torch.from_numpy(x).to(self.device)
            if self.channels_last:
                tensor = tensor.contiguous(memory_format=torch.channels_last)
            branch = getattr(self.module, "quality_branch", None)
            if branch is not None:
                emb, aux = self.module.forward_aux(tensor)
                q: torch.Tensor | None = aux[get_branch(branch).aux_key].float()
            else:
                emb = self.module(tensor)
                q = None
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
        if self.quality_method not in (None, "feature_norm") and quality_name is None:
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
            q = None if not parts or parts[0][1] is None else np.concatenate([p[1] for p in parts])
        return emb, q


def _recovered_kwargs(backbone: Any) -> dict[str, Any]:
    """Constructor arguments read back from a backbone built without ``create_backbone`` (which records them):
    the embedding width, the input side, the quality branch and its options."""
    import inspect

    kwargs: dict[str, Any] = {"embedding_dim": int(backbone.embedding_dim)}
    accepted = inspect.signature(type(backbone).__init__).parameters
    side = int(backbone.preprocessing.input_size[1])
    if "input_size" in accepted and side != 112:
        kwargs["input_size"] = side
    bn1 = getattr(backbone, "bn1", None)
    if "bn_eps" in accepted and isinstance(bn1, torch.nn.BatchNorm2d) and bn1.eps != 1e-5:
        kwargs["bn_eps"] = bn1.eps  # MagFace's iResNet
    branch = getattr(backbone, "quality_branch", None)
    if branch is not None:
        kwargs["quality_branch"] = branch
        module = getattr(backbone, get_branch(branch).module_name)
        for option in get_branch(branch).options:  # e.g. scale_activation is stored as the head's .activation
            value = getattr(module, option.removeprefix("scale_"), None)
            if value is not None:
                kwargs[option] = value
    return kwargs


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
