"""``qualiface eval identify``: 1:N identification, closed-set rank-k (CMC) and open-set DIR at FPIR, from gallery
and probe features with labels (see :mod:`qualiface.eval.identification`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from qualiface.cli.apps import eval_app
from qualiface.cli.outputs import OverwriteOption, refuse_previous_run

_NAME_LIST_SUFFIXES = (".txt", ".lst")


def _labels_file(path: Path, key: str) -> np.ndarray:
    """Labels from .npy/.npz/CSV, or from a list of image paths (one per line; TinyFace ``<id>_...`` names)."""
    if path.suffix.lower() in _NAME_LIST_SUFFIXES:
        from qualiface.eval.identification import tinyface_label

        if not path.is_file():
            raise ValueError(f"{path}: no such file")
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        labels = []
        for number, name in enumerate(names, start=1):
            try:
                labels.append(tinyface_label(name))
            except ValueError as exc:
                raise ValueError(f"{path}: line {number}: {exc}") from None
        return np.asarray(labels, dtype=np.int64)
    from qualiface.eval.inputs import load_array, load_table

    if path.suffix.lower() == ".npz":
        table = load_table(path)
        if key in table:
            return table[key]
        return load_array(path)
    return load_array(path, key if path.suffix.lower() == ".csv" else None)


def _features_and_labels(
    path: Path, feature_key: str, label_key: str, labels: Path | None, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(features, labels or None)`` of one side: .npz arrays by key, CSV label column + numeric columns, .npy."""
    from qualiface.eval.inputs import load_array, load_table

    found = None
    suffix = path.suffix.lower()
    if suffix == ".npz":
        table = load_table(path)
        if feature_key in table:
            feats = table[feature_key]
        else:
            two_d = [k for k, v in table.items() if v.ndim == 2]
            if len(two_d) != 1:
                raise ValueError(f"{path}: no array {feature_key!r} ({what} features); available: {sorted(table)}")
            feats = table[two_d[0]]
        found = table.get(label_key)
    elif suffix == ".csv":
        table = load_table(path)
        found = table.get(label_key)
        columns = [k for k, v in table.items() if k != label_key and v.dtype.kind in "if"]
        if not columns:
            raise ValueError(f"{path}: no numeric feature columns")
        feats = np.stack([table[k].astype(np.float64) for k in columns], axis=1)
    else:
        feats = load_array(path)
    if labels is not None:
        found = _labels_file(labels, label_key)
    if found is None:
        raise ValueError(f"{path}: no {label_key!r} labels for the {what}; give them with --{what}-labels")
    found = np.asarray(found)
    if found.dtype.kind == "f" and np.all(found == np.round(found)):
        found = found.astype(np.int64)
    return np.asarray(feats), found


@eval_app.command("identify")
def identify(
    gallery: Annotated[
        Path,
        typer.Option(
            help="Gallery features: .npz (keys --feature-key, --label-key), CSV (label column + numeric "
            "feature columns) or .npy (labels via --gallery-labels)."
        ),
    ],
    probe: Annotated[Path, typer.Option(help="Probe features, laid out like --gallery.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for identification.json / .csv and report.md.")],
    gallery_labels: Annotated[
        Path | None,
        typer.Option(help="Gallery labels: .npy/.npz/CSV, or a .txt list of image paths (TinyFace '<id>_' names)."),
    ] = None,
    probe_labels: Annotated[Path | None, typer.Option(help="Probe labels, like --gallery-labels.")] = None,
    distractors: Annotated[
        Path | None, typer.Option(help="Distractor features (.npy/.npz/CSV) appended to the gallery with label -100.")
    ] = None,
    feature_key: Annotated[str, typer.Option(help="Array name of the features in .npz inputs.")] = "features",
    label_key: Annotated[str, typer.Option(help="Array / column name of the labels.")] = "labels",
    rank: Annotated[list[int] | None, typer.Option(help="Rank to report (repeatable); default 1, 5, 20.")] = None,
    fpir: Annotated[
        list[float] | None, typer.Option(help="Open-set FPIR target (repeatable), e.g. 0.01; needs unmated probes.")
    ] = None,
    normalize: Annotated[
        bool,
        typer.Option(
            "--normalize/--keep-norm",
            help="L2-normalise each feature before the inner product (default, as the TinyFace protocol), or score "
            "the raw features with their norm.",
        ),
    ] = True,
    overwrite: OverwriteOption = False,
) -> None:
    """1:N identification (TinyFace protocol): rank-k over probes with a mate, and DIR at FPIR with --fpir, on unit
    features (--keep-norm scores the raw ones)."""
    refuse_previous_run(out, "identification.json", overwrite)
    from qualiface.eval.identification import DISTRACTOR_LABEL, identification
    from qualiface.eval.inputs import load_array, load_table

    g_feats, g_labels = _features_and_labels(gallery, feature_key, label_key, gallery_labels, "gallery")
    p_feats, p_labels = _features_and_labels(probe, feature_key, label_key, probe_labels, "probe")
    if distractors is not None:
        if distractors.suffix.lower() == ".npz":
            table = load_table(distractors)
            d_feats = table[feature_key] if feature_key in table else load_array(distractors)
        else:
            d_feats = load_array(distractors)
        d_feats = np.asarray(d_feats)
        if d_feats.ndim != 2 or d_feats.shape[1:] != g_feats.shape[1:]:
            raise ValueError(f"{distractors}: distractor features of shape {d_feats.shape}, gallery {g_feats.shape}")
        g_feats = np.concatenate([g_feats, d_feats])
        g_labels = np.concatenate([g_labels, np.full(d_feats.shape[0], DISTRACTOR_LABEL, dtype=g_labels.dtype)])
    result = identification(
        p_feats, p_labels, g_feats, g_labels, ranks=rank or (1, 5, 20), fpirs=fpir or (), normalize=normalize
    )
    out.mkdir(parents=True, exist_ok=True)
    written = [result.to_json(out / "identification.json"), result.to_csv(out / "identification.csv")]
    from qualiface.eval.report import Section, write_report

    written.append(
        write_report([Section.from_result("1:N identification", result)], out / "report.md", title="qualiface")
    )
    ranks = ", ".join(f"rank-{k} {100 * v:.2f}" for k, v in result.rank.items())
    scored = "unit features" if normalize else "raw features (--keep-norm)"
    typer.echo(f"{result.n_mated} mated / {result.n_probes} probes, gallery {result.n_gallery}, {scored}: {ranks}")
    for target, dirs in result.dir_at_fpir.items():
        values = ", ".join(f"rank-{k} {100 * v:.2f}" for k, v in dirs.items())
        typer.echo(f"DIR at FPIR {target:g} (reached {result.fpir_actual[target]:.4g}): {values}")
    for warning in result.warnings:  # e.g. an FPIR target below 1 / (non-mated probes): not measurable
        typer.echo(f"warning: {warning}", err=True)
    typer.echo("wrote " + ", ".join(str(p) for p in written))
