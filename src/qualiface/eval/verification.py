"""1:1 verification on pair lists: the insightface 10-fold accuracy protocol, VAL@FAR, and all-pairs ROC metrics.

The 10-fold protocol is that of ``deepinsight/insightface: recognition/arcface_torch/eval/verification.py``
(``evaluate``, ``calculate_roc``, ``calculate_accuracy``, ``calculate_val``; identical in
``mk-minchul/AdaFace: evaluate_utils.py``; docs/protocols.md, '1:1 verification (10-fold)'), to the letter:

- pairs ``(e1_i, e2_i)`` of L2-normalised embeddings, distance ``d_i = ‖e1_i − e2_i‖²`` (squared L2,
  ``2 − 2 cos``), decision "same" iff ``d_i < t`` (strict);
- threshold grid exactly ``numpy.arange(0, 4, 0.01)``;
- folds: ``sklearn.model_selection.KFold(n_splits=10, shuffle=False)``: contiguous blocks in pair order, the
  first ``P % 10`` folds one pair longer (never shuffle: the pack order is the official fold order);
- per fold, the threshold is the **first** maximiser of the accuracy on the other nine folds; the fold's
  accuracy is measured on its own pairs at that threshold; TPR/FPR of the test fold at every grid threshold are
  averaged over the folds (the fold-mean ROC); reported: mean and ``numpy.std`` (ddof 0) of the fold accuracies.

The threshold sweep is vectorised (one ``searchsorted`` of the distances into the grid, a ``bincount`` per fold
and class, cumulative sums), and its fold accuracies, thresholds and ROC are bit-identical to the reference
loop over 400 thresholds × 10 folds (``tests/_helpers/reference_verification.py``).

**VAL@FAR** (``calculate_val``, target 1e-3): grid ``numpy.arange(0, 4, 0.001)``; per fold the training FAR at
every threshold; if its maximum reaches the target, the threshold is interpolated as SciPy <= 1.8.1's
``interp1d(far, thresholds, kind="slinear")`` did, i.e. ``numpy.interp`` on the UNMERGED arrays (from the last
threshold of the FAR plateau at or below the target to the first threshold of the next one), else 0; VAL and FAR
are measured on the test fold. The official code crashes on SciPy > 1.8.1 ("Expect x to not have duplicates",
insightface #2152, #2290, #2438) because the FAR vector always repeats values; merging the duplicates instead
changes the number, so neither is done here. A fold whose test (or training) pairs lack a class has an
undefined VAL/FAR (the reference divides by zero): NaN here.

**All pairs** (not part of the 10-fold protocol, reported beside it): ROC, TAR at FAR 1e-6 … 1e-1, EER and AUC
of the cosine similarity over every pair, computed with :mod:`qualiface.eval.roc`.

**Small samples** (docs/protocols.md, 'Small samples'): a FAR target below ``1/n_impostor`` cannot be measured (one
false accept is already more): its TAR is kept in ``tar_at_far`` and marked ``False`` in
``tar_at_far_measurable`` (``impostors_needed`` says how many impostor pairs it needs); VAL is marked in
``val_measurable`` when its target is below 1 over the fewest training-fold impostor pairs. Folds that hold one
class only are named in ``warnings``, and every NaN of the result is explained in ``nan_reasons``.

Numerics: embeddings are normalised and compared in float64, as arcface_torch does (its ``test`` copies the
network outputs into float64 arrays before ``sklearn.preprocessing.normalize``). Unlike the reference, which
silently uses ``min(len(issame), len(e1))`` pairs, mismatched lengths raise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from qualiface.eval.fusion import FLIP_FUSION_MODES, check_embeddings, fuse_flip, l2_normalize
from qualiface.eval.results import Result, flat_scalars
from qualiface.eval.roc import (
    IJB_FARS,
    TarMode,
    auc,
    check_scores_labels,
    decimate_roc,
    eer_from_counts,
    not_measurable_text,
    roc_counts,
    tar_at_far_from_counts,
)
from qualiface.eval.verification_notes import far_key, small_sample_notes

PROTOCOL = "insightface 10-fold (arcface_torch eval/verification.py)"
ThresholdSearch = Literal["grid", "exhaustive"]
DEFAULT_FARS: tuple[float, ...] = IJB_FARS
"""FAR targets of the all-pairs TAR: 1e-6 … 1e-1."""


def accuracy_thresholds() -> np.ndarray:
    """The accuracy threshold grid, exactly ``numpy.arange(0, 4, 0.01)`` (400 values)."""
    return np.arange(0, 4, 0.01)


def val_thresholds() -> np.ndarray:
    """The VAL@FAR threshold grid, exactly ``numpy.arange(0, 4, 0.001)`` (4,000 values)."""
    return np.arange(0, 4, 0.001)


def contiguous_folds(n_pairs: int, n_folds: int = 10) -> np.ndarray:
    """Fold index of every pair under ``KFold(n_splits=n_folds, shuffle=False)``: contiguous blocks, the first
    ``n_pairs % n_folds`` folds one pair longer. ``n_folds == 1`` is one fold (insightface ``LFold``: it is
    trained and tested on all pairs)."""
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    if n_pairs < n_folds:
        raise ValueError(f"{n_pairs} pairs cannot be split into {n_folds} folds")
    sizes = np.full(n_folds, n_pairs // n_folds, dtype=np.int64)
    sizes[: n_pairs % n_folds] += 1
    return np.repeat(np.arange(n_folds), sizes)


def pair_distances(embeddings_a: np.ndarray, embeddings_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(‖â_i − b̂_i‖², â_i·b̂_i)`` of the L2-normalised rows (float64): the squared-L2 distance of the 10-fold
    protocol, computed as the reference does (``np.sum(np.square(e1 - e2), 1)``), and the cosine similarity."""
    na, nb = l2_normalize(embeddings_a), l2_normalize(embeddings_b)  # new arrays: updated in place below
    cosine = np.einsum("ij,ij->i", na, nb)
    np.subtract(na, nb, out=na)
    return np.sum(np.square(na, out=na), 1), cosine


def _check_pairs(distances: np.ndarray, issame: np.ndarray, n_folds: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated float64 distances, int64 0/1 labels and the fold index of every pair."""
    distances, labels = check_scores_labels(distances, issame, name="distances")
    folds = contiguous_folds(distances.shape[0], n_folds)
    return distances.astype(np.float64, copy=False), labels.astype(np.int64), folds


def _check_grid(thresholds: np.ndarray | None, default: np.ndarray) -> np.ndarray:
    if thresholds is None:
        return default
    grid = np.asarray(thresholds, dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0 or not np.isfinite(grid).all() or np.any(np.diff(grid) < 0):
        raise ValueError("thresholds must be a non-empty, finite, non-decreasing 1-D array")
    return grid


def _below_counts(
    distances: np.ndarray, labels: np.ndarray, folds: np.ndarray, n_folds: int, grid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per fold, the genuine and impostor pairs with ``d < t`` at every grid threshold: two ``(folds, T)`` int64.

    ``k_i = #{t in grid : t <= d_i}``, so ``d_i < grid[j]`` iff ``j >= k_i`` (the same float comparison as
    ``numpy.less``); a histogram of ``k`` per fold and class, cumulated, gives the counts.
    """
    n_t = grid.shape[0]
    k = np.searchsorted(grid, distances, side="right")
    hist = np.bincount((folds * 2 + labels) * (n_t + 1) + k, minlength=n_folds * 2 * (n_t + 1))
    below = np.cumsum(hist.reshape(n_folds, 2, n_t + 1), axis=2)[:, :, :n_t]
    return below[:, 1], below[:, 0]


def _class_counts(labels: np.ndarray, folds: np.ndarray, n_folds: int) -> tuple[np.ndarray, np.ndarray]:
    per = np.bincount(folds * 2 + labels, minlength=n_folds * 2).reshape(n_folds, 2)
    return per[:, 1], per[:, 0]


def _train(test: np.ndarray, n_folds: int) -> np.ndarray:
    """Training counts of every fold: all folds minus the test fold (``LFold``: the fold itself when alone)."""
    return test if n_folds == 1 else test.sum(axis=0, keepdims=True) - test


def _rate(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den``, 0 where ``den == 0`` (``calculate_accuracy``'s convention for TPR/FPR)."""
    out = np.zeros(np.broadcast_shapes(num.shape, den.shape), dtype=np.float64)
    np.divide(num, den, out=out, where=np.broadcast_to(den != 0, out.shape))
    return out


@dataclass
class KFoldAccuracy(Result):
    """Output of :func:`kfold_accuracy`: per-fold accuracies and best thresholds, and the fold-mean ROC."""

    fold_accuracies: np.ndarray
    fold_thresholds: np.ndarray
    fold_sizes: np.ndarray
    thresholds: np.ndarray
    tpr: np.ndarray
    fpr: np.ndarray

    @property
    def mean(self) -> float:
        """Mean of the fold accuracies."""
        return float(np.mean(self.fold_accuracies))

    @property
    def std(self) -> float:
        """``numpy.std`` (ddof 0) of the fold accuracies."""
        return float(np.std(self.fold_accuracies))


def exhaustive_thresholds(distances: np.ndarray) -> np.ndarray:
    """Every distinct decision on ``distances``: the midpoints of consecutive distinct values, plus one threshold
    below the smallest and one above the largest."""
    values = np.unique(np.asarray(distances, dtype=np.float64))
    ends = [values[:1] - 1.0, (values[1:] + values[:-1]) / 2, values[-1:] + 1.0]
    return np.concatenate(ends)


def kfold_accuracy(
    distances: np.ndarray,
    issame: np.ndarray,
    *,
    n_folds: int = 10,
    thresholds: np.ndarray | None = None,
    search: ThresholdSearch = "grid",
) -> KFoldAccuracy:
    """The insightface 10-fold accuracy (``calculate_roc``) on squared-L2 ``distances`` (lower = more similar).

    Args:
        distances: ``(P,)`` pair distances in pair (= fold) order.
        issame: ``(P,)`` bool or 0/1, 1 = genuine.
        n_folds: number of contiguous folds (10 in every published number).
        thresholds: the grid; default exactly ``numpy.arange(0, 4, 0.01)``.
        search: ``"grid"`` (default, insightface): the grid above, the first (smallest) best threshold of the
            training folds. ``"exhaustive"``: every distinct decision (:func:`exhaustive_thresholds` of all
            pairs), ties between equally accurate training thresholds going to the largest distance, i.e. the
            lowest similarity: what scripts that sweep every observed similarity in ascending order and keep the
            first maximum compute (the SFace reference figure of the shared Glint360K sample, 97.3% +- 0.7%, was
            measured so; the insightface grid gives 97.15% +- 0.57% on the same embeddings).

    Raises:
        ValueError: NaN/inf distances, labels other than 0/1, a single class, mismatched lengths, fewer pairs
            than folds.
    """
    distances, labels, folds = _check_pairs(distances, issame, n_folds)
    if search not in ("grid", "exhaustive"):
        raise ValueError(f"search must be 'grid' or 'exhaustive', got {search!r}")
    if search == "exhaustive" and thresholds is not None:
        raise ValueError("give either thresholds or search='exhaustive', not both")
    default = exhaustive_thresholds(distances) if search == "exhaustive" else accuracy_thresholds()
    grid = _check_grid(thresholds, default)
    tp, fp = _below_counts(distances, labels, folds, n_folds, grid)
    n_pos, n_neg = _class_counts(labels, folds, n_folds)
    n_pos, n_neg = n_pos[:, None], n_neg[:, None]
    sizes = n_pos + n_neg
    # training folds: accuracy (TP + TN) / n at every threshold, first argmax
    tp_tr, fp_tr = _train(tp, n_folds), _train(fp, n_folds)
    n_neg_tr, size_tr = _train(n_neg, n_folds), _train(sizes, n_folds)
    acc_train = (tp_tr + (n_neg_tr - fp_tr)) / size_tr
    if search == "grid":
        best = np.argmax(acc_train, axis=1)
    else:  # the last maximum: the largest distance among the best thresholds
        best = grid.shape[0] - 1 - np.argmax(acc_train[:, ::-1], axis=1)
    rows = np.arange(n_folds)
    acc = (tp[rows, best] + (n_neg[:, 0] - fp[rows, best])) / sizes[:, 0]
    tprs = np.ascontiguousarray(_rate(tp, n_pos))
    fprs = np.ascontiguousarray(_rate(fp, n_neg))
    return KFoldAccuracy(
        fold_accuracies=acc,
        fold_thresholds=grid[best],
        fold_sizes=sizes[:, 0],
        thresholds=grid,
        tpr=np.mean(tprs, 0),
        fpr=np.mean(fprs, 0),
    )


@dataclass
class ValAtFar(Result):
    """Output of :func:`val_at_far`: per-fold VAL, FAR and interpolated thresholds (NaN where undefined)."""

    far_target: float
    fold_val: np.ndarray
    fold_far: np.ndarray
    fold_thresholds: np.ndarray

    @property
    def val(self) -> float:
        """Mean VAL over the folds."""
        return float(np.mean(self.fold_val))

    @property
    def val_std(self) -> float:
        """``numpy.std`` (ddof 0) of the fold VALs."""
        return float(np.std(self.fold_val))

    @property
    def far(self) -> float:
        """Mean FAR over the folds."""
        return float(np.mean(self.fold_far))


def val_at_far(
    distances: np.ndarray,
    issame: np.ndarray,
    *,
    far_target: float = 1e-3,
    n_folds: int = 10,
    thresholds: np.ndarray | None = None,
) -> ValAtFar:
    """insightface ``calculate_val``: VAL (TAR) at a training-fold FAR target, with SciPy <= 1.8.1 semantics.

    Per fold: FAR of the training pairs at every threshold of the grid (default ``numpy.arange(0, 4, 0.001)``);
    if ``max(FAR) >= far_target`` the threshold is ``numpy.interp(far_target, FAR, grid)`` on the unmerged arrays,
    else 0; then VAL = TP / n_same and FAR = FP / n_diff on the test fold with ``d < threshold``.
    """
    distances, labels, folds = _check_pairs(distances, issame, n_folds)
    if not 0.0 < far_target <= 1.0:
        raise ValueError(f"far_target must be in (0, 1], got {far_target}")
    grid = _check_grid(thresholds, val_thresholds())
    _, fp = _below_counts(distances, labels, folds, n_folds, grid)
    n_pos, n_neg = _class_counts(labels, folds, n_folds)
    fp_tr, n_neg_tr = _train(fp, n_folds), _train(n_neg[:, None], n_folds)
    taus = np.full(n_folds, np.nan)
    for k in range(n_folds):  # one interpolation per fold; the counting above is vectorised
        if n_neg_tr[k, 0] == 0:
            continue
        far_train = fp_tr[k] / n_neg_tr[k, 0]
        taus[k] = np.interp(far_target, far_train, grid) if far_train.max() >= far_target else 0.0
    accept = distances < taus[folds]  # NaN threshold: nothing accepted, and the fold is NaN below anyway
    accepted = np.bincount(folds[accept] * 2 + labels[accept], minlength=n_folds * 2).reshape(n_folds, 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        val = np.where(n_pos > 0, accepted[:, 1] / n_pos, np.nan)
        far = np.where(n_neg > 0, accepted[:, 0] / n_neg, np.nan)
    undefined = np.isnan(taus)
    val[undefined] = far[undefined] = np.nan
    return ValAtFar(far_target=float(far_target), fold_val=val, fold_far=far, fold_thresholds=taus)


@dataclass
class VerificationResult(Result):
    """Everything :func:`evaluate_verification` measures; ``to_dict()``/``to_json()``, ``rows()`` = folds.

    ``tar_at_far`` (keys ``"1e-06"`` … ``"0.1"``), ``eer``, ``auc`` and ``all_pairs_*`` (a decimated ROC for
    plots) come from every pair at once with the score named in ``all_pairs_score_type``; the other metrics are
    the 10-fold protocol on ``score_type``; ``roc_*`` is its fold-mean ROC on the threshold grid. ``meta`` holds
    free-form provenance (input files, model) set by the caller.
    """

    n_pairs: int
    n_genuine: int
    n_impostor: int
    n_folds: int
    accuracy: float
    accuracy_std: float
    fold_accuracies: np.ndarray
    fold_thresholds: np.ndarray
    fold_sizes: np.ndarray
    val: float
    val_std: float
    far: float
    far_target: float
    fold_val: np.ndarray
    fold_far: np.ndarray
    fold_val_thresholds: np.ndarray
    tar_at_far: dict[str, float]
    eer: float
    eer_threshold: float
    auc: float
    roc_thresholds: np.ndarray
    roc_tpr: np.ndarray
    roc_fpr: np.ndarray
    all_pairs_fpr: np.ndarray
    all_pairs_tpr: np.ndarray
    all_pairs_thresholds: np.ndarray
    protocol: str = PROTOCOL
    score_type: str = "squared_l2"
    all_pairs_score_type: str = "cosine"
    tar_mode: str = "nearest"
    fusion: str = "none"
    threshold_search: str = "grid"
    meta: dict[str, Any] = field(default_factory=dict)
    far_floor: float = float("nan")
    tar_at_far_measurable: dict[str, bool] = field(default_factory=dict)
    impostors_needed: dict[str, int | None] = field(default_factory=dict)
    val_measurable: bool = True
    nan_reasons: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """One row per fold: size, accuracy, best threshold, VAL, FAR, VAL threshold."""
        plain = self.to_dict()
        return [
            {
                "fold": k,
                "n_pairs": plain["fold_sizes"][k],
                "accuracy": plain["fold_accuracies"][k],
                "threshold": plain["fold_thresholds"][k],
                "val": plain["fold_val"][k],
                "far": plain["fold_far"][k],
                "val_threshold": plain["fold_val_thresholds"][k],
            }
            for k in range(self.n_folds)
        ]

    def summary(self) -> str:
        """One line in the arcface_torch log style plus the all-pairs figures; targets the pairs cannot measure
        read ``n/m (needs ≥ N impostor pairs, has n)``."""
        key = far_key(1e-3)
        tar = self.tar_at_far.get(key)
        if tar is None:
            tar_text = ""
        elif self.tar_at_far_measurable.get(key, True):
            tar_text = f", TAR@FAR=1e-3 {tar:.4f}"
        else:
            tar_text = f", TAR@FAR=1e-3 {not_measurable_text(1e-3, self.n_impostor)}"
        val_text = f"{self.val:1.5f}+-{self.val_std:1.5f}"
        if not self.val_measurable:
            val_text += " (n/m: below 1 over the training-fold impostor pairs)"
        elif "val" in self.nan_reasons:
            val_text += f" ({self.nan_reasons['val']})"
        return (
            f"Accuracy: {self.accuracy:1.5f}+-{self.accuracy_std:1.5f} ({self.n_folds} folds, {self.n_pairs} pairs: "
            f"{self.n_genuine} genuine, {self.n_impostor} impostor); VAL@FAR={self.far_target:g}: "
            f"{val_text}; all pairs: AUC {self.auc:.5f}, EER {self.eer:.5f}{tar_text}"
        )

    def report_metrics(self) -> dict[str, Any]:
        """The scalars of a report table: a TAR or VAL the pairs cannot measure reads ``n/m (needs ≥ N impostor
        pairs, has n)``, a NaN reads ``nan: <reason>``; the bookkeeping fields are left out."""
        plain = self.to_dict()
        for name in ("tar_at_far_measurable", "impostors_needed", "nan_reasons", "warnings"):
            plain.pop(name, None)
        metrics = flat_scalars(plain)
        for key, measurable in self.tar_at_far_measurable.items():
            if not measurable:
                metrics[f"tar_at_far.{key}"] = not_measurable_text(float(key), self.n_impostor)
        if not self.val_measurable:
            metrics["val"] = f"n/m (the FAR target {self.far_target:g} is below 1 over the training-fold impostors)"
        for name, reason in self.nan_reasons.items():
            if name in metrics and metrics[name] is None:
                metrics[name] = f"nan: {reason}"
        return metrics


def evaluate_distances(
    distances: np.ndarray,
    issame: np.ndarray,
    *,
    scores: np.ndarray | None = None,
    n_folds: int = 10,
    far_target: float = 1e-3,
    fars: Sequence[float] = DEFAULT_FARS,
    tar_mode: TarMode = "nearest",
    fusion: str = "none",
    threshold_search: ThresholdSearch = "grid",
) -> VerificationResult:
    """:func:`kfold_accuracy`, :func:`val_at_far` and the all-pairs metrics on precomputed squared-L2 distances.

    ``scores`` (similarities, higher = more similar) feed the all-pairs ROC/TAR/EER/AUC; by default
    ``-distances`` (reported as ``negative_squared_l2``). ``threshold_search`` is :func:`kfold_accuracy`'s
    ``search``.
    """
    folds = kfold_accuracy(distances, issame, n_folds=n_folds, search=threshold_search)
    val = val_at_far(distances, issame, far_target=far_target, n_folds=n_folds)
    score_type = "cosine"
    if scores is None:
        scores, score_type = -np.asarray(distances, dtype=np.float64), "negative_squared_l2"
    counts = roc_counts(scores, issame)
    fpr, tpr, thr = counts.curve(drop_intermediate=True)
    eer_value, eer_threshold = eer_from_counts(counts)
    tar = tar_at_far_from_counts(counts, fars, mode=tar_mode)
    fpr_d, tpr_d, thr_d = decimate_roc(fpr, tpr, thr)
    notes = _small_sample_notes(issame, n_folds, far_target, fars, counts.n_neg, val)
    return VerificationResult(
        n_pairs=int(folds.fold_sizes.sum()),
        n_genuine=counts.n_pos,
        n_impostor=counts.n_neg,
        n_folds=n_folds,
        accuracy=folds.mean,
        accuracy_std=folds.std,
        fold_accuracies=folds.fold_accuracies,
        fold_thresholds=folds.fold_thresholds,
        fold_sizes=folds.fold_sizes,
        val=val.val,
        val_std=val.val_std,
        far=val.far,
        far_target=val.far_target,
        fold_val=val.fold_val,
        fold_far=val.fold_far,
        fold_val_thresholds=val.fold_thresholds,
        tar_at_far={far_key(k): v for k, v in tar.items()},
        eer=eer_value,
        eer_threshold=eer_threshold,
        auc=auc(fpr, tpr),
        roc_thresholds=folds.thresholds,
        roc_tpr=folds.tpr,
        roc_fpr=folds.fpr,
        all_pairs_fpr=fpr_d,
        all_pairs_tpr=tpr_d,
        all_pairs_thresholds=thr_d,
        all_pairs_score_type=score_type,
        tar_mode=tar_mode,
        fusion=fusion,
        threshold_search=threshold_search,
        far_floor=1.0 / counts.n_neg,
        **notes,
    )


def _small_sample_notes(
    issame: np.ndarray, n_folds: int, far_target: float, fars: Sequence[float], n_impostor: int, val: ValAtFar
) -> dict[str, Any]:
    """The small-sample fields of :class:`VerificationResult`: the notes
    (:func:`~qualiface.eval.verification_notes.small_sample_notes`) of this protocol's fold counts."""
    labels = np.asarray(issame).astype(bool).astype(np.int64)
    folds = contiguous_folds(labels.shape[0], n_folds)
    n_pos, n_neg = _class_counts(labels, folds, n_folds)
    return small_sample_notes(
        n_pos=n_pos,
        n_neg=n_neg,
        train_impostors=int(_train(n_neg, n_folds).min()),
        val=val,
        far_target=far_target,
        fars=fars,
        n_impostor=n_impostor,
    )


def split_pairs(embeddings: np.ndarray, name: str = "embeddings") -> tuple[np.ndarray, np.ndarray]:
    """``(e[0::2], e[1::2])`` of an interleaved ``(2P, D)`` array (the ``.bin`` pack order)."""
    e = np.asarray(embeddings)
    if e.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (2P, D), got shape {e.shape}")
    if e.shape[0] % 2:
        raise ValueError(f"{name}: an interleaved array needs an even number of rows, got {e.shape[0]}")
    return e[0::2], e[1::2]


def evaluate_verification(
    embeddings: np.ndarray,
    issame: np.ndarray,
    *,
    embeddings_b: np.ndarray | None = None,
    flip: np.ndarray | None = None,
    flip_b: np.ndarray | None = None,
    fusion: str | None = None,
    n_folds: int = 10,
    far_target: float = 1e-3,
    fars: Sequence[float] = DEFAULT_FARS,
    tar_mode: TarMode = "nearest",
    threshold_search: ThresholdSearch = "grid",
) -> VerificationResult:
    """Evaluate raw embeddings on a pair list with the insightface 10-fold protocol (module docstring).

    Args:
        embeddings: interleaved ``(2P, D)`` (pair ``i`` = rows ``2i``, ``2i+1``), or the first images ``(P, D)``
            when ``embeddings_b`` is given.
        issame: ``(P,)`` bool or 0/1, 1 = genuine, in fold order.
        embeddings_b: the second images ``(P, D)``.
        flip: raw embeddings of the horizontally flipped images, laid out like ``embeddings``.
        flip_b: flipped second images, laid out like ``embeddings_b``.
        fusion: flip fusion (:mod:`qualiface.eval.fusion`); default ``"sum_raw"`` (arcface_torch) when flips are
            given, else ``"none"``. ``"none"`` with flips ignores them.
        n_folds: number of folds (10).
        far_target: FAR target of VAL (1e-3).
        fars: FAR targets of the all-pairs TAR.
        tar_mode: TAR selection, see :func:`qualiface.eval.roc.tar_at_far`.
        threshold_search: ``"grid"`` (insightface, default) or ``"exhaustive"``, see :func:`kfold_accuracy`.

    Raises:
        ValueError: NaN/inf embeddings, mismatched shapes or lengths, an odd interleaved array, a single class,
            unknown fusion, a fusion without flips.
    """
    embeddings = check_embeddings(embeddings, "embeddings")
    embeddings_b, flip, flip_b = (
        None if x is None else check_embeddings(x, name)
        for x, name in ((embeddings_b, "embeddings_b"), (flip, "flip"), (flip_b, "flip_b"))
    )
    if fusion is None:
        fusion = "sum_raw" if flip is not None else "none"
    if fusion not in FLIP_FUSION_MODES:
        raise ValueError(f"flip fusion {fusion!r} is unknown; choose one of {', '.join(FLIP_FUSION_MODES)}")
    if embeddings_b is None:
        if flip_b is not None:
            raise ValueError("flip_b is given but embeddings_b is not")
        a, b = split_pairs(embeddings)
        fa, fb = split_pairs(flip, "flip embeddings") if flip is not None else (None, None)
    else:
        a, b, fa, fb = embeddings, embeddings_b, flip, flip_b
        if (fa is None) != (fb is None):
            raise ValueError("give the flip embeddings of both sides (flip and flip_b) or of neither")
        if a.shape != b.shape:
            raise ValueError(f"embeddings have shape {a.shape}, embeddings_b {b.shape}")
    if fusion != "none" and fa is None:
        raise ValueError(f"flip fusion {fusion!r} needs the flip embeddings")
    a = fuse_flip(a, fa, fusion)
    b = fuse_flip(b, fb, fusion)
    if np.shape(issame) != (a.shape[0],):
        raise ValueError(f"{a.shape[0]} embedding pairs but issame has shape {np.shape(issame)}")
    distances, cosine = pair_distances(a, b)
    return evaluate_distances(
        distances,
        issame,
        scores=cosine,
        n_folds=n_folds,
        far_target=far_target,
        fars=fars,
        tar_mode=tar_mode,
        fusion=fusion,
        threshold_search=threshold_search,
    )
