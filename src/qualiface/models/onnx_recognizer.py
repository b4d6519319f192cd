"""A minimal ONNX face recognizer: RGB ``uint8`` images in, raw embeddings out (onnxruntime, imported lazily).

Conventions (protocols.md §6.3, methods.md §1.2): the model has one 4-D ``NCHW`` input and one output
``(N, D)``; names and shapes are read from the session, never assumed. A fixed batch dimension is honoured (a
batch of 1 runs image by image, a larger fixed batch is padded), a symbolic one is fed ``batch_size`` images at
a time. Preprocessing is ``(pixel - mean) / std`` on 0..255 values in the model's ``channel_order``:

| model | channel_order | mean | std |
|---|---|---|---|
| OpenCV Zoo SFace (``face_recognition_sface_2021dec``) | RGB | 0 | 1 |
| arcface_torch ``torch2onnx.py`` exports | RGB | 127.5 | 127.5 |
| AdaFace | BGR | 127.5 | 127.5 |
| MagFace | BGR | 0 | 255 |

Images are given as RGB (what Pillow decodes); ``channel_order="BGR"`` swaps them for the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

_INPUT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class ImageSource(Protocol):
    """Anything with a length whose slices are RGB ``uint8`` stacks ``(n, H, W, 3)``: a NumPy array, or a lazy
    decoder such as :class:`qualiface.data.bin_pairs.EncodedImages`."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice) -> np.ndarray: ...


def _per_channel(value: float | Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float32).reshape(-1)
    if array.size == 1:
        array = np.repeat(array, 3)
    if array.size != 3 or not np.isfinite(array).all():
        raise ValueError(f"{name} must be one finite number or three (one per channel), got {value!r}")
    return array


class OnnxRecognizer:
    """Embed aligned face crops with an ONNX recognition model.

    Args:
        path: the ``.onnx`` file.
        channel_order: channel order the network expects (``"RGB"`` or ``"BGR"``); input images are RGB.
        mean: subtracted from the 0..255 pixel values, one value or one per channel (in the network's order).
        std: divisor after the mean, one value or one per channel.
        batch_size: images per run when the batch dimension is symbolic (and per decoded chunk).
        providers: onnxruntime execution providers; default CPU.
        threads: onnxruntime intra-op threads; default onnxruntime's choice.

    Raises:
        ValueError: missing file, a model onnxruntime cannot load, not exactly one 4-D 3-channel input and one
            output, an input type other than float32/float16/float64, bad ``mean``/``std``/``channel_order``.
        ImportError: onnxruntime is not installed (``pip install qualiface[onnx]``).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        channel_order: str = "RGB",
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 1.0,
        batch_size: int = 64,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"{self.path}: no such model file")
        if channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {channel_order!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.channel_order = channel_order
        self.mean = _per_channel(mean, "mean")
        self.std = _per_channel(std, "std")
        if np.any(self.std == 0):
            raise ValueError(f"std must not be 0, got {std!r}")
        self.batch_size = batch_size
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("OnnxRecognizer needs onnxruntime: pip install 'qualiface[onnx]'") from exc
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=list(providers or ["CPUExecutionProvider"])
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ValueError(f"{self.path}: onnxruntime cannot load the model ({exc})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                f"{self.path}: expected one input and one output, got inputs {[i.name for i in inputs]} and outputs "
                f"{[o.name for o in outputs]}"
            )
        shape = list(inputs[0].shape)
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
            raise ValueError(f"{self.path}: input {inputs[0].name!r} has shape {shape}; expected N x 3 x H x W")
        if inputs[0].type not in _INPUT_DTYPES:
            raise ValueError(f"{self.path}: input type {inputs[0].type} is not supported (float32/16/64 only)")
        self.input_name: str = inputs[0].name
        self.output_name: str = outputs[0].name
        self.input_dtype = _INPUT_DTYPES[inputs[0].type]
        self.fixed_batch: int | None = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        height, width = (d if isinstance(d, int) else None for d in shape[2:])
        self.input_size: tuple[int | None, int | None] = (height, width)
        out_dim = outputs[0].shape[-1] if outputs[0].shape else None
        self.embedding_dim: int | None = out_dim if isinstance(out_dim, int) else None

    def __repr__(self) -> str:
        return (
            f"OnnxRecognizer({str(self.path)!r}, input={self.input_name!r} batch={self.fixed_batch or 'symbolic'} "
            f"size={self.input_size}, channel_order={self.channel_order!r}, mean={self.mean.tolist()}, "
            f"std={self.std.tolist()})"
        )

    def preprocess(self, images: np.ndarray, *, flip: bool = False) -> np.ndarray:
        """RGB ``uint8`` ``(N, H, W, 3)`` to the network input ``(N, 3, H, W)``: optional horizontal flip,
        channel order, ``(x - mean) / std``, input dtype."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected RGB uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
        for axis, want in zip((1, 2), self.input_size, strict=True):
            if want is not None and images.shape[axis] != want:
                raise ValueError(
                    f"images are {images.shape[2]}x{images.shape[1]} pixels; {self.path.name} takes "
                    f"{self.input_size[1]}x{self.input_size[0]} (align and crop first)"
                )
        if flip:
            images = images[:, :, ::-1]
        if self.channel_order == "BGR":
            images = images[..., ::-1]
        x = (images.astype(np.float32) - self.mean) / self.std
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=self.input_dtype)

    def _run(self, x: np.ndarray) -> np.ndarray:
        out: Any = self.session.run([self.output_name], {self.input_name: x})[0]
        out = np.asarray(out)
        if out.ndim != 2 or out.shape[0] != x.shape[0]:
            raise ValueError(f"{self.path}: output {self.output_name!r} has shape {out.shape} for {x.shape[0]} images")
        return out

    def embed(self, images: ImageSource | np.ndarray, *, flip: bool = False, progress: bool = True) -> np.ndarray:
        """Raw (not normalised) embeddings ``(N, D)`` float32 of RGB ``uint8`` images ``(N, H, W, 3)``.

        Args:
            images: an array or an :class:`ImageSource` (decoded ``batch_size`` images at a time).
            flip: embed the horizontally flipped images (for flip fusion).
            progress: a tqdm bar, shown only on a terminal.
        """
        from tqdm.auto import tqdm

        n = len(images)
        outputs: list[np.ndarray] = []
        step = self.batch_size
        desc = "embed" + (" (flip)" if flip else "")
        with tqdm(total=n, unit="img", desc=desc, disable=None if progress else True) as bar:  # None: off unless a TTY
            for start in range(0, n, step):
                x = self.preprocess(images[start : start + step], flip=flip)
                if self.fixed_batch is None:
                    outputs.append(self._run(x))
                else:
                    b = self.fixed_batch
                    for s in range(0, x.shape[0], b):
                        chunk = x[s : s + b]
                        if chunk.shape[0] < b:
                            pad = np.zeros((b - chunk.shape[0], *chunk.shape[1:]), dtype=chunk.dtype)
                            outputs.append(self._run(np.concatenate([chunk, pad]))[: chunk.shape[0]])
                        else:
                            outputs.append(self._run(chunk))
                bar.update(x.shape[0])
        if not outputs:
            return np.zeros((0, self.embedding_dim or 0), dtype=np.float32)
        return np.concatenate(outputs).astype(np.float32, copy=False)
