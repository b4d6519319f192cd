"""YuNet (OpenCV Zoo ``face_detection_yunet_2023mar``) through onnxruntime, decoded in NumPy.

The network takes ``input`` ``1x3xHxW`` float32 BGR 0..255 (the shipped model is fixed at 640x640) and gives, per
stride ``s`` in 8, 16, 32, one prior per cell of the ``(H/s) x (W/s)`` grid in row-major order
(``index = row * (W/s) + col``): ``cls_s``, ``obj_s`` ``(1, P, 1)``, ``bbox_s`` ``(1, P, 4)`` and ``kps_s``
``(1, P, 10)``. The decoding is OpenCV's ``FaceDetectorYN`` (``objdetect/src/face_detect.cpp``):

* ``score = sqrt(clip(cls, 0, 1) * clip(obj, 0, 1))``
* ``cx = (col + bbox[0]) * s``, ``cy = (row + bbox[1]) * s``, ``w = exp(bbox[2]) * s``, ``h = exp(bbox[3]) * s``;
  the box is ``(cx - w/2, cy - h/2, cx + w/2, cy + h/2)``
* landmark ``k``: ``x = (kps[2k] + col) * s``, ``y = (kps[2k+1] + row) * s``

then candidates with ``score >= score_threshold`` are sorted by score, cut to ``top_k`` and reduced by greedy NMS
(IoU ``> nms_threshold`` suppresses). YuNet's landmark order (right eye, left eye, nose, right mouth corner, left
mouth corner, "right" being the subject's right, i.e. the smaller image x) is already the ArcFace template order.

Arbitrary image sizes (a letterbox, like OpenCV's own padding): the image is scaled by
``r = input_size / max(H, W)`` (Pillow bilinear, antialiased when shrinking), placed at the top-left corner of a
black ``input_size`` square, and points map back as ``x = (x_net + 0.5) / r - 0.5`` (pixel centres at integer
coordinates on both sides; ``r`` per axis is the rounded new size over the old one). Small images are scaled up
(a 92x112 ORL photo by 5.7): YuNet finds such faces well. When the model's input size is symbolic and no
``input_size`` is given, the image is not scaled and is padded on the right and bottom to a multiple of 32.
"""

from __future__ import annotations

import threading
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from qualiface.detect.base import Detection

__all__ = ["STRIDES", "YuNetDetector", "decode_yunet", "default_yunet_path", "nms"]

#: Feature strides of the three YuNet heads.
STRIDES = (8, 16, 32)
_WEIGHTS = "face_detection_yunet_2023mar.onnx"


def default_yunet_path() -> Path:
    """The YuNet ONNX file shipped in the package (``qualiface/detect/weights``; see the ``NOTICE`` beside it)."""
    return Path(str(resources.files("qualiface.detect") / "weights" / _WEIGHTS))


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, top_k: int | None = None) -> np.ndarray:
    """Greedy non-maximum suppression; indices of kept boxes, best score first.

    Args:
        boxes: ``(N, 4)`` ``(x1, y1, x2, y2)``.
        scores: ``(N,)``.
        iou_threshold: a box whose IoU with an already kept box is ``> iou_threshold`` is dropped.
        top_k: only the ``top_k`` best-scoring boxes enter the suppression (OpenCV ``NMSBoxes`` ``top_k``).
    """
    order = np.argsort(-scores, kind="stable")
    if top_k is not None and top_k > 0:
        order = order[:top_k]
    b = boxes.astype(np.float64)
    areas = np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0]), 0)
        ih = np.maximum(np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1]), 0)
        inter = iw * ih
        union = areas[i] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def decode_yunet(
    outputs: dict[str, np.ndarray],
    input_hw: tuple[int, int],
    *,
    score_threshold: float = 0.6,
    nms_threshold: float = 0.3,
    top_k: int = 5000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode raw YuNet outputs (names ``cls_8`` ... ``kps_32``) for a network input of ``input_hw`` pixels.

    Returns:
        ``boxes (K, 4)`` ``(x1, y1, x2, y2)``, ``scores (K,)`` and ``landmarks (K, 5, 2)`` (float64) in network input
        pixels, after the score threshold, ``top_k`` and NMS, best score first.
    """
    height, width = input_hw
    all_boxes, all_scores, all_kps = [], [], []
    for s in STRIDES:
        rows, cols = -(-height // s), -(-width // s)
        cls = np.asarray(outputs[f"cls_{s}"], dtype=np.float64).reshape(-1)
        obj = np.asarray(outputs[f"obj_{s}"], dtype=np.float64).reshape(-1)
        bbox = np.asarray(outputs[f"bbox_{s}"], dtype=np.float64).reshape(-1, 4)
        kps = np.asarray(outputs[f"kps_{s}"], dtype=np.float64).reshape(-1, 10)
        if cls.size != rows * cols:
            raise ValueError(f"YuNet output cls_{s} has {cls.size} priors; expected {rows}x{cols} for {width}x{height}")
        score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
        sel = np.flatnonzero(score >= score_threshold)
        if sel.size == 0:
            continue
        row, col = np.divmod(sel, cols)
        grid = np.stack([col, row], axis=1).astype(np.float64)  # (n, 2) as (x, y)
        centre = (grid + bbox[sel, :2]) * s
        size = np.exp(bbox[sel, 2:]) * s
        all_boxes.append(np.concatenate([centre - size / 2, centre + size / 2], axis=1))
        all_scores.append(score[sel])
        all_kps.append((kps[sel].reshape(-1, 5, 2) + grid[:, None, :]) * s)
    if not all_scores:
        return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
    boxes = np.concatenate(all_boxes)
    scores = np.concatenate(all_scores)
    landmarks = np.concatenate(all_kps)
    keep = nms(boxes, scores, nms_threshold, top_k)
    return boxes[keep], scores[keep], landmarks[keep]


class YuNetDetector:
    """The YuNet face detector (five landmarks) on onnxruntime's CPU provider.

    Args:
        model_path: the ``.onnx`` file; default :func:`default_yunet_path` (the copy shipped in the package).
        score_threshold: minimum ``sqrt(cls * obj)`` score (OpenCV's default 0.6; the Zoo demo uses 0.9).
        nms_threshold: IoU above which a lower-scoring overlapping box is suppressed.
        top_k: at most this many candidates (best scores) enter NMS.
        input_size: side of the square network input the image is letterboxed into; default the model's fixed input
            side (640 for the shipped file). With a model whose spatial input is symbolic, ``None`` runs each image at
            its own size padded to a multiple of 32 ("adaptive").
        threads: onnxruntime ``intra_op_num_threads`` (default: onnxruntime's choice).

    The onnxruntime session is created on the first :meth:`detect` call (one per detector, guarded by a lock).

    Raises:
        ValueError: a missing model file or bad thresholds (at construction); a model onnxruntime cannot load or
            without YuNet's input/outputs (at the first :meth:`detect`).
        ImportError: onnxruntime is not installed (``pip install 'qualiface[onnx]'``), at the first :meth:`detect`.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        top_k: int = 5000,
        input_size: int | None = None,
        threads: int | None = None,
    ) -> None:
        self.model_path = Path(model_path) if model_path is not None else default_yunet_path()
        if not self.model_path.is_file():
            raise ValueError(f"{self.model_path}: no such YuNet model file")
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        if not 0.0 <= nms_threshold <= 1.0:
            raise ValueError(f"nms_threshold must be in [0, 1], got {nms_threshold}")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if input_size is not None and (input_size < 32 or input_size % 32):
            raise ValueError(f"input_size must be a positive multiple of 32, got {input_size}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.top_k = int(top_k)
        self.input_size = input_size
        self.threads = threads
        self._session: Any = None
        self._input_name = "input"
        self._fixed_hw: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"YuNetDetector({str(self.model_path)!r}, score_threshold={self.score_threshold}, "
            f"nms_threshold={self.nms_threshold}, top_k={self.top_k}, input_size={self.input_size})"
        )

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the session and lock (they are rebuilt lazily, e.g. in a worker process)."""
        state = self.__dict__.copy()
        state["_session"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def session(self) -> Any:
        """The onnxruntime ``InferenceSession``, created on first use."""
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = self._load()
        return self._session

    def _load(self) -> Any:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("YuNetDetector needs onnxruntime: pip install 'qualiface[onnx]'") from exc
        options = ort.SessionOptions()
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
        try:
            session = ort.InferenceSession(
                str(self.model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ValueError(f"{self.model_path}: onnxruntime cannot load the model ({exc})") from None
        inputs = session.get_inputs()
        names = {o.name for o in session.get_outputs()}
        want = {f"{k}_{s}" for k in ("cls", "obj", "bbox", "kps") for s in STRIDES}
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or not want <= names:
            raise ValueError(
                f"{self.model_path}: not a YuNet model (want one NCHW input and outputs {sorted(want)}, got inputs "
                f"{[i.name for i in inputs]} and outputs {sorted(names)})"
            )
        self._input_name = inputs[0].name
        h, w = inputs[0].shape[2:]
        if isinstance(h, int) and isinstance(w, int):
            if self.input_size is not None and (h, w) != (self.input_size, self.input_size):
                raise ValueError(
                    f"{self.model_path}: the model input is fixed at {w}x{h}; input_size={self.input_size}"
                )
            self._fixed_hw = (h, w)
        return session

    def _letterbox(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The BGR float32 ``1x3xHxW`` network input and the ``(x, y)`` scales (network pixels per image pixel)."""
        from PIL import Image

        h, w = image.shape[:2]
        if self._fixed_hw is not None:
            net_h, net_w = self._fixed_hw
            ratio = min(net_h / h, net_w / w)
        elif self.input_size is not None:
            net_h = net_w = self.input_size
            ratio = self.input_size / max(h, w)
        else:
            net_h, net_w = -(-h // 32) * 32, -(-w // 32) * 32
            ratio = 1.0
        new_w, new_h = min(net_w, max(1, round(w * ratio))), min(net_h, max(1, round(h * ratio)))
        if (new_w, new_h) != (w, h):
            image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR))
        canvas = np.zeros((3, net_h, net_w), dtype=np.float32)
        canvas[:, :new_h, :new_w] = image[:, :, ::-1].transpose(2, 0, 1)  # RGB -> BGR, HWC -> CHW
        return canvas[None], np.array([new_w / w, new_h / h])

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in an RGB ``uint8`` ``(H, W, 3)`` image (greyscale ``(H, W)`` is accepted), best score first."""
        img = np.asarray(image)
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or min(img.shape[:2]) < 1:
            raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {img.dtype} {img.shape}")
        session = self.session
        x, scale = self._letterbox(img)
        names = [o.name for o in session.get_outputs()]
        raw = dict(zip(names, session.run(names, {self._input_name: x}), strict=True))
        boxes, scores, landmarks = decode_yunet(
            raw,
            (x.shape[2], x.shape[3]),
            score_threshold=self.score_threshold,
            nms_threshold=self.nms_threshold,
            top_k=self.top_k,
        )
        # back to image pixels, pixel centres at integer coordinates on both sides of the resize
        landmarks = (landmarks + 0.5) / scale - 0.5
        boxes = ((boxes.reshape(-1, 2, 2) + 0.5) / scale - 0.5).reshape(-1, 4)
        return [
            Detection(box=tuple(b), score=float(s), landmarks=k.astype(np.float32))
            for b, s, k in zip(boxes, scores, landmarks, strict=True)
        ]
