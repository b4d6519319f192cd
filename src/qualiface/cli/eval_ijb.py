"""``qualiface eval ijb``: IJB-B / IJB-C 1:1 TAR@FAR (and optionally 1:N) from per-image features and the IJB meta
folder (see :mod:`qualiface.eval.ijb`)."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from qualiface.cli.apps import eval_app
from qualiface.cli.outputs import OverwriteOption, refuse_previous_run
from qualiface.eval.fusion import FLIP_FUSION_MODES
from qualiface.eval.ijb import POOLING_PRESETS, QUALITY_WEIGHTS

_FEATURE_KEYS = ("embs", "features", "embeddings")
_FLIPPED_KEYS = ("embs_f", "flipped", "flip")


def _load_features(path: Path, key: str | None, flipped: Path | None, flipped_key: str | None) -> tuple[Any, Any]:
    """Image features and (when given or stored beside them) the flipped features."""
    from qualiface.eval.inputs import load_array, load_table, select_key

    flip = None
    if path.suffix.lower() == ".npz":
        table = load_table(path)
        feats = table[select_key(table, path, key, _FEATURE_KEYS, "--feature-key")]
        if flipped is None:
            stored = [k for k in ([flipped_key] if flipped_key else _FLIPPED_KEYS) if k in table]
            flip = table[stored[0]] if stored else None
    else:
        feats = load_array(path, key)
    if flipped is not None:
        flip = load_array(flipped, flipped_key)
    return np.asarray(feats), None if flip is None else np.asarray(flip)


def _load_quality(path: Path, key: str | None, image_names: np.ndarray) -> np.ndarray:
    """Per-image quality in ``face_tid_mid`` order, from:

    - a ``.txt`` score file of ``image_path score`` lines (CR-FIQA's ``getQualityScore.py`` output), matched by file
      name as ``eval_ijbc_qs.py`` does;
    - a CSV with a ``file`` column (``qualiface quality``'s output, any quality method) or ``Filename`` (its
      ``--format ofiq``), matched by file name; the score column is ``key`` (default ``score``);
    - else an array (.npy / .npz / CSV column ``key``) already in that order."""
    from qualiface.eval.inputs import load_array, load_table

    suffix = path.suffix.lower()
    if suffix == ".csv":
        table = load_table(path)
        name_column = next((c for c in ("file", "Filename") if c in table), None)
        if name_column is not None:
            column = key or "score"
            if column not in table:
                raise ValueError(f"{path}: no column {column!r} (say which with --quality-key); has {sorted(table)}")
            try:
                values = [float(v) for v in table[column]]
            except ValueError:
                raise ValueError(f"{path}: column {column!r} holds a value that is not a number") from None
            return _match_by_name(path, zip((str(v) for v in table[name_column]), values, strict=True), image_names)
    if suffix != ".txt":
        return np.asarray(load_array(path, key), dtype=np.float64)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    rows: list[tuple[str, float]] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) != 2:
                raise ValueError
            rows.append((fields[0], float(fields[1])))
        except ValueError:
            raise ValueError(f"{path}: line {number}: expected 'image_path score', got {line.strip()!r}") from None
    return _match_by_name(path, rows, image_names)


def _match_by_name(path: Path, rows: Iterable[tuple[str, float]], image_names: np.ndarray) -> np.ndarray:
    """The scores of ``rows`` (image path, score) in the order of ``image_names``, matched by file name; a file
    scored twice with different values, or an image without a score, is an error naming ``path``."""
    scores: dict[str, float] = {}
    for image, score in rows:
        name = image.replace("\\", "/").split("/")[-1]
        if name in scores and scores[name] != score:
            raise ValueError(f"{path}: {name} has two scores ({scores[name]!r}, {score!r}); one face per image")
        scores[name] = score
    names = [str(name).split("/")[-1] for name in image_names]
    missing = [name for name in names if name not in scores]
    if missing:
        raise ValueError(f"{path}: no quality score for {len(missing)} image(s) of the meta list, first: {missing[0]}")
    return np.asarray([scores[name] for name in names], dtype=np.float64)


def _write_roc_csv(path: Path, fpr: np.ndarray, tpr: np.ndarray, thresholds: np.ndarray) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["fpr", "tpr", "threshold"])
        writer.writerows(zip(fpr.tolist(), tpr.tolist(), thresholds.tolist(), strict=True))
    return path


@eval_app.command("ijb")
def ijb(
    features: Annotated[
        Path,
        typer.Argument(
            help="Per-image features in the order of <x>_face_tid_mid.txt: .npy (N x D), .npz (key 'embs' or "
            "--feature-key; 'embs_f' is read as the flipped features) or CSV."
        ),
    ],
    meta_dir: Annotated[Path, typer.Argument(help="The IJB meta folder, e.g. <root>/IJBC/meta.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the JSON/CSV results, roc.png, report.md.")],
    subset: Annotated[str | None, typer.Option(help="IJBB or IJBC (default: from the meta file names).")] = None,
    feature_key: Annotated[str | None, typer.Option(help="Array (.npz) or columns (CSV) holding features.")] = None,
    flipped: Annotated[Path | None, typer.Option(help="Features of the horizontally flipped images.")] = None,
    flipped_key: Annotated[str | None, typer.Option(help="Array of --flipped (or of the .npz) to use.")] = None,
    flip_halves: Annotated[
        bool, typer.Option(help="Each FEATURES row is f(x) followed by f(flip x) (insightface N x 2D layout).")
    ] = False,
    preset: Annotated[str, typer.Option(help=f"Pooling variant: {', '.join(POOLING_PRESETS)}.")] = "insightface",
    flip_fusion: Annotated[
        str | None, typer.Option(help=f"Override the preset's flip fusion: {', '.join(FLIP_FUSION_MODES)}.")
    ] = None,
    faceness: Annotated[
        bool | None, typer.Option("--faceness/--no-faceness", help="Override: weight by the detector score (D).")
    ] = None,
    normalize_images: Annotated[
        bool | None,
        typer.Option("--normalize-images/--keep-norm", help="Override: L2-normalise image features (N0) or not."),
    ] = None,
    quality: Annotated[
        Path | None,
        typer.Option(
            help="Per-image quality scores for quality-weighted pooling: a .txt file of 'image_path score' lines "
            "(CR-FIQA's score file) or a CSV with a 'file' column (qualiface quality's output, any method), both "
            "matched by file name, or .npy/.npz/CSV in face_tid_mid order."
        ),
    ] = None,
    quality_key: Annotated[str | None, typer.Option(help="Array or column of --quality.")] = None,
    quality_weights: Annotated[
        str | None,
        typer.Option(
            help="Override how --quality becomes weights: minmax ((q - min)/(max - min) over all images, CR-FIQA; "
            "the default) or raw (the scores as weights)."
        ),
    ] = None,
    one_to_n: Annotated[
        bool, typer.Option("--one-to-n", help="Also run 1:N (gallery/probe CSVs in META_DIR).")
    ] = False,
    legacy_1n: Annotated[
        bool, typer.Option("--legacy-1n", help="With --one-to-n, also the legacy insightface ijb_1n.py numbers.")
    ] = False,
    check_counts: Annotated[bool, typer.Option(help="Assert the published IJB sizes.")] = False,
    float64: Annotated[bool, typer.Option("--float64", help="Score pairs in float64 (default float32).")] = False,
    save_scores: Annotated[bool, typer.Option(help="Write scores.npz (t1, t2, label, score).")] = False,
    plot: Annotated[bool, typer.Option(help="Write roc.png.")] = True,
    progress: Annotated[bool, typer.Option(help="Progress bars (only on a terminal).")] = True,
    overwrite: OverwriteOption = False,
) -> None:
    """IJB-B/C template evaluation: media mean, template sum, L2 norm; TAR@FAR 1e-6..1e-1 (insightface nearest
    rule and the conservative one), AUC, EER; with --one-to-n the open-set 1:N (TPIR at FPIR, rank-k)."""
    refuse_previous_run(out, "ijb_11.json", overwrite)
    from qualiface.data.ijb import load_ijb_1n_lists, load_ijb_meta
    from qualiface.eval.ijb import (
        ijb_identification,
        ijb_pair_scores,
        legacy_insightface_1n,
        pool_templates,
        resolve_pooling,
        split_flip_halves,
        verification_from_scores,
    )

    if flip_fusion is not None and flip_fusion not in FLIP_FUSION_MODES:
        raise ValueError(f"--flip-fusion {flip_fusion!r} is unknown; choose one of {', '.join(FLIP_FUSION_MODES)}")
    if quality_weights is not None and quality_weights not in QUALITY_WEIGHTS:
        raise ValueError(
            f"--quality-weights {quality_weights!r} is unknown; choose one of {', '.join(QUALITY_WEIGHTS)}"
        )
    if legacy_1n and not one_to_n:
        raise ValueError("--legacy-1n needs --one-to-n")
    pooling = resolve_pooling(preset)
    if pooling.requires_quality and quality is None:
        raise ValueError(f"--preset {preset} weights images by their quality: give the scores with --quality")
    overrides: dict[str, Any] = {}
    if flip_fusion is not None:
        overrides["flip_fusion"] = flip_fusion
    if faceness is not None:
        overrides["use_faceness"] = faceness
    if normalize_images is not None:
        overrides["normalize_images"] = normalize_images
    if quality_weights is not None:
        overrides["quality_weights"] = quality_weights
    pooling = dataclasses.replace(pooling, **overrides)

    meta = load_ijb_meta(meta_dir, subset, check_counts=check_counts)
    feats, flip = _load_features(features, feature_key, flipped, flipped_key)
    if flip_halves:
        if flip is not None:
            raise ValueError("--flip-halves and separate flipped features exclude each other")
        feats, flip = split_flip_halves(feats)
    if feats.ndim != 2 or feats.shape[0] != meta.template_ids.shape[0]:
        raise ValueError(
            f"{features}: {feats.shape[0] if feats.ndim else 0} feature rows, but {meta_dir} lists "
            f"{meta.template_ids.shape[0]} images (shape {feats.shape})"
        )
    scores_q = None if quality is None else _load_quality(quality, quality_key, meta.image_names)
    if scores_q is not None and scores_q.shape != meta.template_ids.shape:
        raise ValueError(
            f"{quality}: quality scores of shape {scores_q.shape}, but {meta_dir} lists "
            f"{meta.template_ids.shape[0]} images"
        )
    templates = pool_templates(
        feats, meta.template_ids, meta.media_ids, flipped=flip, faceness=meta.faceness, quality=scores_q,
        pooling=pooling, progress=progress,
    )  # fmt: skip
    scores = ijb_pair_scores(
        templates, meta.pair_t1, meta.pair_t2, score=pooling.score,
        dtype=np.float64 if float64 else np.float32, progress=progress,
    )  # fmt: skip
    result = verification_from_scores(
        scores, meta.pair_labels, n_templates=templates.template_ids.shape[0], score_type=pooling.score,
        pooling=pooling,
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    if templates.zero_templates.size:
        typer.echo(
            f"warning: {templates.zero_templates.size} template(s) have only weight-0 (lowest-quality) images and "
            f"score 0 against every template, as in CR-FIQA's eval_ijbc_qs.py; first: "
            f"template {int(templates.zero_templates[0])}",
            err=True,
        )
    written = [
        result.to_json(out / "ijb_11.json"),
        result.to_csv(out / "ijb_11.csv"),
        _write_roc_csv(out / "roc.csv", result.roc_fpr, result.roc_tpr, result.roc_thresholds),
    ]
    if save_scores:
        path = out / "scores.npz"
        np.savez(path, t1=meta.pair_t1, t2=meta.pair_t2, label=meta.pair_labels, score=scores)
        written.append(path)
    images = []
    if plot:
        from qualiface.eval.plots import plot_roc

        curves = {f"{meta.subset} {preset}": (result.roc_fpr, result.roc_tpr)}
        images.append(plot_roc(curves, out / "roc.png", title=f"ROC on {meta.subset}"))
    from qualiface.eval.report import Section, write_report

    sections = [Section.from_result(f"{meta.subset} 1:1 verification", result, images, text=result.summary())]
    if one_to_n:
        lists = load_ijb_1n_lists(meta_dir, meta.subset, check_counts=check_counts)
        ident = ijb_identification(templates, lists.galleries, lists.probe)
        written += [ident.to_json(out / "ijb_1n.json"), ident.to_csv(out / "ijb_1n.csv")]
        sections.append(Section.from_result(f"{meta.subset} 1:N identification (open set)", ident))
        if legacy_1n:
            legacy = legacy_insightface_1n(templates, lists.galleries, lists.probe)
            written.append(legacy.to_json(out / "ijb_1n_legacy.json"))
            sections.append(Section.from_result(f"{meta.subset} 1:N, legacy insightface ijb_1n.py", legacy))
    written.append(write_report(sections, out / "report.md", title=f"qualiface eval ijb ({meta.subset})"))
    typer.echo(result.summary())
    if one_to_n:
        ranks = ", ".join(f"rank-{k} {100 * v:.2f}" for k, v in ident.rank.items())
        tpirs = ", ".join(f"{far:g}: {100 * v:.2f}" for far, v in ident.tpir_at_fpir.items())
        typer.echo(f"1:N {ranks}; TPIR at FPIR {tpirs}")
    typer.echo("wrote " + ", ".join(str(p) for p in written + images))
