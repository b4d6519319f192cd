"""One evaluation of one or several models on a labelled set: recognition and quality together
(``qualiface eval benchmark``; docs/protocols.md, 'Benchmark').

The labelled set is a pair list (:func:`qualiface.data.pairs.load_pairs_csv`) or identity folders
(:func:`qualiface.eval.benchmark_pairs.identity_folder_pairs`). Every distinct image is read once, detected and
aligned once (:func:`qualiface.use.load_faces`; every model takes the same ArcFace-aligned 112x112 crop and resizes
it as its card says) and embedded once per model (:func:`qualiface.models.embed_images`, with the model's flip
fusion). A pair with a side that gave no face is left out of every model's figures; the files are listed in the
result.

Per model (:class:`ModelBenchmark`):

- **verification**: :func:`qualiface.eval.evaluate_verification` on the kept pairs: the insightface 10-fold
  accuracy ± std, VAL@FAR, and over all pairs the cosine ROC, TAR at the FAR targets, EER and AUC. A target below
  ``1 / #impostor pairs`` cannot be measured: its TAR is kept but marked (``tar_at_far_measurable`` of the
  :class:`~qualiface.eval.verification.VerificationResult`; :func:`qualiface.eval.roc.rate_measurable`).
- **quality** (a model with a quality output, or with ``norm_quality`` the raw embedding norm; else a note):
  pair quality ``min(q_a, q_b)``; the fixed-threshold FNM-EDC (:func:`qualiface.eval.edc.edc`) at the FMR target
  with its pAUC at the default discard limits, and the random and oracle references (``edc_random``,
  ``edc_oracle``) with the same options; the threshold's achieved FMR, marked not measurable below
  ``1 / #impostor pairs``.
- **rejection curves** over all pairs, the lowest pair qualities rejected first (stable order), ``int(N(1 - p))``
  pairs kept for each rejected fraction ``p`` (0, 0.002, ..., 0.5): FNMR and FMR at the EDC's fixed threshold
  (:func:`fixed_threshold_rejection`), accuracy at the 10-fold threshold (mean of the folds' thresholds, as a
  cosine; :func:`qualiface.eval.uncertainty.accuracy_rejection_curve`) and TAR at the FMR target with the
  threshold re-estimated at every fraction (:func:`qualiface.eval.uncertainty.rejection_curve`, ScaleFace).

:func:`run_benchmark` returns a :class:`BenchmarkResult`; :func:`qualiface.eval.benchmark_report.write_benchmark`
writes it as results.json, report.md, report.html and plots.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from qualiface.data.pairs import PairList
from qualiface.detect.options import DetectorOptions
from qualiface.errors import InputError
from qualiface.eval.edc import (
    DEFAULT_DISCARD_LIMITS,
    DEFAULT_FMRS,
    EDCResult,
    FixedThresholdEDC,
    edc,
    edc_oracle,
    edc_random,
)
from qualiface.eval.edc.kept import _stable_order
from qualiface.eval.inputs import binary_labels, finite_vector
from qualiface.eval.results import Result, to_plain
from qualiface.eval.roc import not_measurable_text
from qualiface.eval.uncertainty import (
    AccuracyRejectionCurve,
    RejectionCurve,
    _portions,
    accuracy_rejection_curve,
    rejection_curve,
)
from qualiface.eval.verification import VerificationResult, evaluate_verification, pair_distances
from qualiface.models.card import QualityInfo
from qualiface.models.face_model import FaceModel

#: FAR targets of the TAR table (the all-pairs TAR of :func:`qualiface.eval.evaluate_verification`).
DEFAULT_FARS: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
#: FMR of the EDC's fixed threshold (the first default of ``qualiface eval edc``).
DEFAULT_FMR: float = DEFAULT_FMRS[0]
#: Rejected fractions at which the report's tables show the rejection curves.
REPORTED_PORTIONS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2)

Progress = Callable[[str, int, int], None]
NO_QUALITY_NOTE = "no quality output: recognition only (norm_quality / --norm-quality scores its embedding norm)"


@dataclass
class FixedThresholdRejection(Result):
    """FNMR and FMR at one threshold fixed for the whole curve, against the fraction of all pairs rejected
    (:func:`fixed_threshold_rejection`); NaN where the kept pairs lack the class."""

    threshold: float
    n_pairs: int
    portions: np.ndarray
    kept_counts: np.ndarray
    fnmr: np.ndarray
    fmr: np.ndarray

    def rows(self) -> list[dict[str, Any]]:
        """One row per portion."""
        return [
            {
                "portion": float(self.portions[i]),
                "fnmr": float(self.fnmr[i]),
                "fmr": float(self.fmr[i]),
                "kept": int(self.kept_counts[i]),
            }
            for i in range(self.portions.size)
        ]


def fixed_threshold_rejection(
    scores: ArrayLike,
    labels: ArrayLike,
    pair_quality: ArrayLike,
    threshold: float,
    portions: ArrayLike | None = None,
) -> FixedThresholdRejection:
    """FNMR (``s < threshold`` among kept genuine pairs) and FMR (``s >= threshold`` among kept impostor pairs)
    after rejecting the lowest-quality fraction ``p`` of all pairs: the pairs sorted by quality, highest first
    (stable), the first ``int(N (1 - p))`` kept, as :func:`qualiface.eval.uncertainty.rejection_curve` keeps them;
    ``portions`` strictly increasing in [0, 1), default 0, 0.002, ..., 0.5.

    Raises:
        ValueError: non-finite scores, qualities or threshold, lengths that differ, labels other than 0/1, bad
            portions.
    """
    s = finite_vector("scores", scores)
    genuine = binary_labels(labels, s.size)
    q = finite_vector("pair_quality", pair_quality, s.size)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold: must be finite, got {threshold}")
    p = _portions(portions)
    rank = np.empty(s.size, dtype=np.int64)
    rank[_stable_order(-q)] = np.arange(s.size)
    kept = (s.size * (1 - p)).astype(np.int64)

    def kept_count(mask: np.ndarray) -> np.ndarray:
        return np.searchsorted(np.sort(rank[mask]), kept).astype(np.float64)  # members with rank < kept

    n_gen, n_imp = kept_count(genuine), kept_count(~genuine)
    false_nm, false_m = kept_count(genuine & (s < threshold)), kept_count(~genuine & (s >= threshold))
    with np.errstate(divide="ignore", invalid="ignore"):
        fnmr = np.where(n_gen > 0, false_nm / n_gen, np.nan)
        fmr = np.where(n_imp > 0, false_m / n_imp, np.nan)
    return FixedThresholdRejection(float(threshold), int(s.size), p, kept, fnmr, fmr)


@dataclass
class QualityBenchmark(Result):
    """The quality part of one model's benchmark (module docstring).

    Attributes:
        method: The quality method (``cr_fiqa``, ``scaleface``, ``feature_norm``) and its source.
        source: ``branch``, ``head`` or ``embedding_norm`` (a recognizer's norm: a heuristic).
        fmr_target: The FMR of the EDC's fixed threshold (its achieved FMR and whether the target is measurable are
            the curve's: :attr:`achieved_fmr`, :attr:`fmr_measurable`).
        edc: The model's FNM-EDC; ``random`` and ``oracle`` its references, with the same options.
        fnmr_rejection, accuracy_rejection, tar_rejection: The rejection curves.
    """

    method: str
    source: str
    fmr_target: float
    edc: EDCResult
    random: EDCResult
    oracle: EDCResult
    fnmr_rejection: FixedThresholdRejection
    accuracy_rejection: AccuracyRejectionCurve
    tar_rejection: RejectionCurve

    @property
    def operating_point(self) -> str:
        """The EDC's curve label (``"fmr=0.001"``)."""
        return next(iter(self.edc.curves))

    @property
    def threshold_curve(self) -> FixedThresholdEDC:
        """The model's fixed-threshold FNM-EDC at :attr:`fmr_target`."""
        curve = self.edc.curves[self.operating_point]
        assert isinstance(curve, FixedThresholdEDC)  # run_benchmark uses the fixed-threshold convention
        return curve

    @property
    def achieved_fmr(self) -> float | None:
        """The FMR the EDC's threshold gives on every impostor pair (``s >= threshold``)."""
        return self.threshold_curve.achieved_fmr

    @property
    def fmr_measurable(self) -> bool:
        """Whether ``fmr_target >= 1 / #impostor pairs`` (:func:`qualiface.eval.roc.rate_measurable`)."""
        return self.threshold_curve.measurable

    def pauc(self) -> dict[str, dict[float, float]]:
        """pAUC of the model, the random and the oracle quality at every discard limit."""
        label = self.operating_point
        out: dict[str, dict[float, float]] = {}
        for name, result in (("model", self.edc), ("random", self.random), ("oracle", self.oracle)):
            curve = result.curves[label]
            out[name] = dict(curve.pauc)
        return out

    def to_dict(self) -> dict[str, Any]:
        """All fields as plain values (the EDCs through their own ``to_dict()``)."""
        plain: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            plain[name] = value.to_dict() if isinstance(value, Result) else to_plain(value)
        plain["achieved_fmr"] = to_plain(self.achieved_fmr)
        plain["fmr_measurable"] = self.fmr_measurable
        plain["pauc"] = to_plain({k: {f"{lim:g}": v for lim, v in d.items()} for k, d in self.pauc().items()})
        return plain


@dataclass
class ModelBenchmark(Result):
    """One model's results on the benchmark's pairs.

    Attributes:
        name: The model's name in the report (its card's name; ``#2``, ``#3`` appended to repeated names).
        model: The card's stamp (name, format, SHA-256, preprocessing) and the path it was loaded from.
        verification: :func:`qualiface.eval.evaluate_verification` on the kept pairs.
        accuracy_threshold: The 10-fold threshold as a cosine, ``1 - mean(fold thresholds) / 2``.
        quality: The quality part, or ``None`` with :attr:`note` saying why.
        note: Why a part is missing, else ``""``.
    """

    name: str
    model: dict[str, Any]
    verification: VerificationResult
    accuracy_threshold: float
    quality: QualityBenchmark | None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """All fields as plain values."""
        return {
            "name": self.name,
            "model": to_plain(self.model),
            "verification": self.verification.to_dict(),
            "accuracy_threshold": to_plain(self.accuracy_threshold),
            "quality": None if self.quality is None else self.quality.to_dict(),
            "note": self.note,
        }

    @property
    def tar_measurable(self) -> dict[str, bool]:
        """Per FAR target (keys as in ``verification.tar_at_far``), whether the impostor pairs can measure it."""
        return self.verification.tar_at_far_measurable

    def summary(self) -> dict[str, float | str | None]:
        """The headline figures, one value per key (the CLI's table and ``--json``); a TAR the pairs cannot
        measure reads ``n/m (needs ≥ N impostor pairs, has n)``."""
        v = self.verification
        out: dict[str, float | str | None] = {"accuracy": v.accuracy, "accuracy_std": v.accuracy_std}
        for key, tar in v.tar_at_far.items():
            ok = self.tar_measurable.get(key, True)
            out[f"tar@far={key}"] = tar if ok else not_measurable_text(float(key), v.n_impostor)
        out.update(eer=v.eer, auc=v.auc)
        if self.quality is not None:
            pauc = self.quality.pauc()
            for limit, value in pauc["model"].items():
                out[f"pauc@{limit:g}"] = value
                out[f"pauc@{limit:g}/random"] = pauc["random"][limit]
                out[f"pauc@{limit:g}/oracle"] = pauc["oracle"][limit]
        else:
            out["quality"] = self.note
        return out


@dataclass
class BenchmarkResult(Result):
    """Everything :func:`run_benchmark` measured: the pair set, the settings and one :class:`ModelBenchmark` per
    model (in the order given)."""

    dataset: dict[str, Any]
    settings: dict[str, Any]
    models: dict[str, ModelBenchmark]
    images_without_face: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """All fields as plain values; each model through its own ``to_dict()``."""
        return {
            "dataset": to_plain(self.dataset),
            "settings": to_plain(self.settings),
            "models": {name: m.to_dict() for name, m in self.models.items()},
            "images_without_face": list(self.images_without_face),
            "warnings": list(self.warnings),
        }

    def summary(self) -> dict[str, dict[str, float | str | None]]:
        """``{model: headline figures}`` (:meth:`ModelBenchmark.summary`)."""
        return {name: m.summary() for name, m in self.models.items()}


def _unique_names(models: Sequence[FaceModel], names: Sequence[str] | None) -> list[str]:
    if names is not None and len(names) != len(models):
        raise InputError(f"{len(names)} model names for {len(models)} models")
    base = list(names) if names is not None else [m.name for m in models]
    out: list[str] = []
    for name in base:
        candidate, k = name, 2
        while candidate in out:
            candidate, k = f"{name} #{k}", k + 1
        out.append(candidate)
    return out


def _quality_part(
    quality: np.ndarray,
    quality_source: QualityInfo,
    scores: np.ndarray,
    labels: np.ndarray,
    index_a: np.ndarray,
    index_b: np.ndarray,
    *,
    fmr: float,
    discard_limits: Sequence[float],
    accuracy_threshold: float,
) -> QualityBenchmark:
    q_a, q_b = quality[index_a].astype(np.float64), quality[index_b].astype(np.float64)
    options: dict[str, Any] = {"fmr": fmr, "discard_limits": tuple(discard_limits), "score_kind": "cosine"}
    higher = quality_source.higher_is_better  # True for every method here; an uncertainty would sort the other way
    result = edc(
        scores, labels, q_a, q_b, pair_quality="min" if higher else "max", higher_is_better=higher,
        method=quality_source.method, **options,
    )  # fmt: skip
    random = edc_random(scores, labels, progress=False, **options)
    oracle = edc_oracle(scores, labels, **options)
    curve = next(iter(result.curves.values()))
    assert isinstance(curve, FixedThresholdEDC)
    threshold = float(curve.threshold)
    pair_q = np.minimum(q_a, q_b) if higher else -np.maximum(q_a, q_b)  # larger = more confident
    return QualityBenchmark(
        method=quality_source.method,
        source=quality_source.source,
        fmr_target=float(fmr),
        edc=result,
        random=random,
        oracle=oracle,
        fnmr_rejection=fixed_threshold_rejection(scores, labels, pair_q, threshold),
        accuracy_rejection=accuracy_rejection_curve(scores, labels, pair_q, threshold=accuracy_threshold),
        tar_rejection=rejection_curve(scores, labels, pair_q, fars=(fmr,)),
    )


def run_benchmark(
    pairs: PairList,
    models: Sequence[FaceModel],
    *,
    names: Sequence[str] | None = None,
    model_paths: Sequence[str] | None = None,
    aligned: bool = False,
    detector_options: DetectorOptions | None = None,
    n_folds: int = 10,
    fmr: float = DEFAULT_FMR,
    fars: Sequence[float] = DEFAULT_FARS,
    discard_limits: Sequence[float] = DEFAULT_DISCARD_LIMITS,
    norm_quality: bool = False,
    batch_size: int = 64,
    chunk_size: int = 256,
    dataset: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> BenchmarkResult:
    """Evaluate every model on ``pairs`` (module docstring).

    Args:
        pairs: The labelled pairs (a pairs CSV or identity folders), in fold order.
        models: Loaded models (:func:`qualiface.models.load_model`).
        names: Their names in the report; default the cards' names (repeats get ``#2``, ``#3``...).
        model_paths: Where each model was loaded from, recorded in the result.
        aligned: The files are aligned 112x112 crops (no detection).
        detector_options: How faces are found otherwise (default the detector's defaults).
        n_folds: Folds of the accuracy protocol.
        fmr: FMR of the EDC's fixed threshold and of the TAR rejection curve.
        fars: FAR targets of the TAR table.
        discard_limits: Discard limits of the pAUC.
        norm_quality: Models without a trained quality are evaluated with their raw embedding norm as quality
            (a heuristic, labelled ``embedding_norm``); by default they get the recognition part and a note.
        batch_size: Images per forward pass.
        chunk_size: Files detected (or read) and embedded at a time: the crops of one chunk only are held in memory.
        dataset: How the pairs were made (recorded in the result; default the pair list's source).
        progress: Called as ``progress("images", done, total)`` after every chunk of files read (or detected) and
            embedded by every model.

    Raises:
        InputError: no model, pairs of one class, no pair with a face on both sides, too few kept pairs for the
            folds, or a target out of range.
    """
    if not models:
        raise InputError("no model: give at least one (--model/-m)")
    if not 0.0 < fmr < 1.0:
        raise InputError(f"--fmr: must be in (0, 1), got {fmr}")
    for far in fars:
        if not 0.0 < far <= 1.0:
            raise InputError(f"--far: must be in (0, 1], got {far}")
    labels_all = np.asarray(pairs.issame, dtype=bool)
    if labels_all.all() or not labels_all.any():
        kind = "genuine" if labels_all.all() else "impostor"
        raise InputError(f"{pairs.source}: all {labels_all.size} pairs are {kind}; need genuine and impostor pairs")
    model_names = _unique_names(models, names)
    files, index_a, index_b = pairs.unique_images()
    embedded, has_face, failures = _embed_files(
        files.paths, models, model_names, aligned=aligned, detector_options=detector_options,
        norm_quality=norm_quality, batch_size=batch_size, chunk_size=chunk_size, progress=progress,
    )  # fmt: skip
    keep = has_face[index_a] & has_face[index_b]
    without = [{"path": str(f.path), "reason": f.reason, "message": f.message} for f in failures]
    warnings: list[str] = []
    if not keep.all():
        warnings.append(
            f"{int((~keep).sum())} of {keep.size} pairs left out: {len(without)} image(s) gave no face "
            f"(listed in images_without_face)"
        )
    labels = labels_all[keep]
    a, b = index_a[keep], index_b[keep]
    if not keep.any():
        how = "check --detector (e.g. score=0.3)" if not aligned else "the files are not 112x112 crops"
        raise InputError(f"{pairs.source}: no pair has a face on both sides; {how}")
    if labels.all() or not labels.any():
        raise InputError(f"{pairs.source}: the pairs with faces on both sides are all of one class")
    n_impostor = int((~labels).sum())
    results: dict[str, ModelBenchmark] = {}
    for k, (model, name) in enumerate(zip(models, model_names, strict=True)):
        results[name] = _benchmark_model(
            model, name, embedded[name], a, b, labels,
            path=None if model_paths is None else model_paths[k], n_folds=n_folds, fmr=fmr, fars=fars,
            discard_limits=discard_limits,
        )  # fmt: skip
    for m in results.values():  # targets below 1/n, one-class folds: the same pairs for every model, said once
        found = m.verification.warnings + ([f"EDC {w}" for w in m.quality.edc.warnings] if m.quality else [])
        warnings += [w for w in found if w not in warnings]
    data: dict[str, Any] = dict(dataset) if dataset is not None else {"source": "pair list", "path": pairs.source}
    data.update(
        pairs_listed=int(labels_all.size),
        pairs_evaluated=int(labels.size),
        pairs_dropped=int((~keep).sum()),
        genuine=int(labels.sum()),
        impostor=n_impostor,
        images=len(files),
        faces="aligned crops as given" if aligned else "detected and aligned",
    )
    settings = {
        "n_folds": n_folds,
        "fmr": fmr,
        "fars": list(fars),
        "discard_limits": list(discard_limits),
        "pair_quality": "min",
        "edc_convention": "fixed_threshold",
        "rejected_portions": "0, 0.002, ..., 0.5",
        "norm_quality": norm_quality,
        "aligned": aligned,
        "detector": None if aligned else (detector_options or DetectorOptions()).to_dict(),
    }
    return BenchmarkResult(data, settings, results, without, warnings)


@dataclass
class _Embedded:
    """One model's embeddings (fused as its card says) and quality of every file, and why quality is missing."""

    embeddings: np.ndarray
    quality: np.ndarray | None
    info: QualityInfo | None
    note: str


def _embed_files(
    paths: Sequence[Path],
    models: Sequence[FaceModel],
    names: Sequence[str],
    *,
    aligned: bool,
    detector_options: DetectorOptions | None,
    norm_quality: bool,
    batch_size: int,
    chunk_size: int,
    progress: Progress | None,
) -> tuple[dict[str, _Embedded], np.ndarray, list[Any]]:
    """Detect and align (or read) the files chunk by chunk, each chunk once, and embed it with every model: the
    crops of one chunk only are in memory, the embeddings of all files are kept. Returns the embeddings per
    model, whether each file gave a face, and the failures."""
    from qualiface.use import face_index, load_faces

    if chunk_size < 1:
        raise InputError(f"chunk_size: must be >= 1, got {chunk_size}")
    n = len(paths)
    detector = None if aligned else (detector_options or DetectorOptions()).create()
    has_face = np.zeros(n, dtype=bool)
    failures: list[Any] = []
    out: dict[str, _Embedded] = {}
    for model, name in zip(models, names, strict=True):
        info = model.quality_info(allow_untrained=norm_quality)
        note = "" if info is not None else NO_QUALITY_NOTE
        quality = np.zeros(n, np.float64) if info is not None else None
        out[name] = _Embedded(np.zeros((n, 0), np.float32), quality, info, note)  # width set by the first chunk
    for start in range(0, n, chunk_size):
        chunk = list(paths[start : start + chunk_size])
        faces = load_faces(chunk, aligned=aligned, detector=detector)
        failures += faces.failures
        rows = face_index(faces, chunk)
        found = np.flatnonzero(rows >= 0)
        has_face[start + found] = True
        if found.size:
            for model, name in zip(models, names, strict=True):
                _embed_chunk(model, out[name], faces.images[rows[found]], start + found, norm_quality, batch_size)
        if progress is not None:
            progress("images", start + len(chunk), n)
    return out, has_face, failures


def _embed_chunk(
    model: FaceModel, into: _Embedded, images: np.ndarray, rows: np.ndarray, norm_quality: bool, batch_size: int
) -> None:
    from qualiface.models import embed_images

    want = into.info is not None
    try:
        result = embed_images(
            model, images, batch_size=batch_size, quality=want, allow_untrained_quality=norm_quality
        )  # fmt: skip
    except ValueError as exc:
        if into.info is None or into.info.source != "embedding_norm":
            raise
        into.info, into.quality = None, None  # e.g. unit-length embeddings: no norm to score
        into.note = f"no quality ({exc})"
        result = embed_images(model, images, batch_size=batch_size)
    fused = result.fused()
    if into.embeddings.shape[1] != fused.shape[1]:  # the first chunk with faces
        into.embeddings = np.zeros((into.embeddings.shape[0], fused.shape[1]), np.float32)
    into.embeddings[rows] = fused
    if into.quality is not None and result.quality is not None:
        into.quality[rows] = result.quality


def _benchmark_model(
    model: FaceModel,
    name: str,
    embedded: _Embedded,
    index_a: np.ndarray,
    index_b: np.ndarray,
    labels: np.ndarray,
    *,
    path: str | None,
    n_folds: int,
    fmr: float,
    fars: Sequence[float],
    discard_limits: Sequence[float],
) -> ModelBenchmark:
    info, note = embedded.info, embedded.note
    embeddings = embedded.embeddings
    verification = evaluate_verification(
        embeddings[index_a], labels, embeddings_b=embeddings[index_b], n_folds=n_folds, fars=tuple(fars)
    )
    stamp = {**model.card.stamp(), **({"path": path} if path is not None else {})}
    verification.meta.update(stamp)
    accuracy_threshold = float(1.0 - np.mean(verification.fold_thresholds) / 2.0)
    quality = None
    if info is not None and embedded.quality is not None:
        _, scores = pair_distances(embeddings[index_a], embeddings[index_b])  # the cosine of the verification
        quality = _quality_part(
            embedded.quality, info, scores, labels, index_a, index_b,
            fmr=fmr, discard_limits=discard_limits, accuracy_threshold=accuracy_threshold,
        )  # fmt: skip
        if info.source == "embedding_norm":
            note = "quality is the norm of the raw embedding (the model was not trained for quality): a heuristic"
    return ModelBenchmark(name, stamp, verification, accuracy_threshold, quality, note)
