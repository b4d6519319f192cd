"""``qualiface eval verify``: the insightface 10-fold verification protocol on embeddings, a ``.bin`` pack or an
image folder with a pairs CSV (see :mod:`qualiface.eval.verification`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, cast

import numpy as np
import typer

from qualiface.cli.apps import eval_app
from qualiface.cli.outputs import OverwriteOption, refuse_previous_run
from qualiface.cli.photos import DetectorOption, PreprocessingOption, detector_options, open_model
from qualiface.errors import InputError
from qualiface.eval.fusion import FLIP_FUSION_MODES
from qualiface.eval.roc import check_scores_labels
from qualiface.eval.verification import (
    ThresholdSearch,
    VerificationResult,
    contiguous_folds,
    evaluate_verification,
)

_LABEL_KEYS = ("issame", "same", "is_same", "label")


def _labels(path: Path, key: str | None) -> np.ndarray:
    from qualiface.eval.inputs import load_table, select_key

    table = load_table(path)
    labels = table[select_key(table, path, key, _LABEL_KEYS, "--labels-key")]
    if labels.dtype.kind in "US" or labels.dtype == object:
        from qualiface.data.pairs import parse_label

        parsed = [parse_label(str(v)) for v in labels.tolist()]
        if None in parsed:
            first = parsed.index(None)
            raise InputError(
                f"{path}: {key or 'the label column'!r} row {first} is {labels[first]!r}; expected 1/0, true/false, "
                "yes/no, same/different, genuine/impostor or match/non-match"
            )
        labels = np.array(parsed, dtype=bool)
    return labels


def _from_embedding_files(
    embeddings: Path, labels: Path | None, label_key: str | None, flipped: Path | None
) -> dict[str, Any]:
    """Arrays for :func:`evaluate_verification` from an ``.npy`` / ``.npz`` / CSV embedding file."""
    from qualiface.eval.inputs import load_array, load_table

    kwargs: dict[str, Any] = {}
    if embeddings.suffix.lower() == ".npz":
        table = load_table(embeddings)
        if "embeddings_a" in table or "embeddings_b" in table:
            missing = {"embeddings_a", "embeddings_b"} - set(table)
            if missing:
                raise ValueError(f"{embeddings}: has one side of the pairs but no {sorted(missing)}")
            kwargs["embeddings"], kwargs["embeddings_b"] = table["embeddings_a"], table["embeddings_b"]
            if "flip_a" in table or "flip_b" in table:
                kwargs["flip"], kwargs["flip_b"] = table.get("flip_a"), table.get("flip_b")
        elif "embeddings" in table:
            kwargs["embeddings"] = table["embeddings"]
            kwargs["flip"] = table.get("flip")
        else:
            raise ValueError(
                f"{embeddings}: expected the key 'embeddings' (interleaved, 2P x D) or 'embeddings_a' and "
                f"'embeddings_b'; found {sorted(table)}"
            )
        if labels is None:
            found = [k for k in _LABEL_KEYS if k in table]
            if not found:
                raise ValueError(f"{embeddings}: no 'issame' array; give the labels with --labels")
            kwargs["issame"] = table[found[0]]
    else:
        kwargs["embeddings"] = load_array(embeddings)
        if labels is None:
            raise ValueError(f"{embeddings}: give the pair labels with --labels")
    if labels is not None:
        kwargs["issame"] = _labels(labels, label_key)
    if flipped is not None:
        if "embeddings_b" in kwargs:
            raise ValueError("--flip-embeddings takes interleaved flips; with embeddings_a/_b put flip_a/_b in the npz")
        kwargs["flip"] = load_array(flipped)
    return kwargs


def _embed(
    images: Any, *, model: Any, batch_size: int, flip: bool, progress: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Embeddings (and those of the mirrored images) through the library's one inference path, exactly as
    ``qualiface embed`` computes them."""
    from tqdm.auto import tqdm

    from qualiface.models import embed_images

    with tqdm(total=len(images), unit="img", desc="embed", disable=None if progress else True) as bar:

        def advance(done: int, total: int) -> None:
            bar.update(done - bar.n)

        out = embed_images(model, images, batch_size=batch_size, flip=flip, progress=advance)
    return out.embeddings, out.flipped


def _from_bin(path: Path, embed: Callable[[Any], tuple[np.ndarray, np.ndarray | None]]) -> dict[str, Any]:
    """Arrays for :func:`evaluate_verification` from a ``.bin`` pack embedded with ``embed``."""
    from qualiface.data.bin_pairs import load_bin

    pack = load_bin(path)
    check_scores_labels(np.zeros(len(pack)), pack.issame)  # a single class fails before embedding
    emb, emb_flip = embed(pack.images)
    return {"embeddings": emb, "flip": emb_flip, "issame": pack.issame}


def _from_pairs(
    path: Path,
    root: Path | None,
    folds: int,
    embed: Callable[[Any], tuple[np.ndarray, np.ndarray | None]],
    *,
    columns: str | None,
    input_size: tuple[int, int],
    aligned: bool | None,
    detector: str | None,
    progress: bool,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Arrays for :func:`evaluate_verification` from a pair list; each distinct image is embedded once. Photos
    that are not aligned crops are detected and aligned; pairs whose image gave no face are left out, named in a
    warning and in ``meta``."""
    from tqdm.auto import tqdm

    from qualiface.data.pairs import load_pairs_csv, pair_images

    pairs = load_pairs_csv(path, root, columns=columns)
    check_scores_labels(np.zeros(len(pairs)), pairs.issame)
    if pairs.folds is not None and not np.array_equal(pairs.folds, contiguous_folds(len(pairs), folds)):
        typer.echo(
            f"warning: {path}: its fold column is not the contiguous {folds}-fold split of the rows that the "
            "protocol uses; the column is ignored",
            err=True,
        )
    with tqdm(total=len(pairs), unit="file", desc="faces", disable=None if progress else True, leave=False) as bar:

        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        prepared = pair_images(
            pairs, input_size=input_size, aligned=aligned, detector_options=detector_options(detector),
            progress=advance,
        )  # fmt: skip
    meta.update(
        faces="detected and aligned" if prepared.detected else "aligned crops as given",
        faces_reason=prepared.reason,
        pairs_listed=len(pairs),
        pairs_dropped=prepared.n_dropped,
        images_without_face=[{"path": str(p), "reason": r, "message": m} for p, r, m in prepared.failures],
    )
    if prepared.detected:
        meta["detector"] = detector_options(detector).to_dict()
    typer.echo(f"faces: {prepared.reason}", err=True)
    warning = prepared.warning()
    if warning is not None:
        typer.echo(f"warning: {path}: {warning}", err=True)
    prepared.require_pairs(path)
    keep = prepared.keep
    emb, emb_flip = embed(prepared.images)
    index_a, index_b = prepared.index_a[keep], prepared.index_b[keep]
    kwargs = {"embeddings": emb[index_a], "embeddings_b": emb[index_b], "issame": pairs.issame[keep]}
    if emb_flip is not None:
        kwargs["flip"], kwargs["flip_b"] = emb_flip[index_a], emb_flip[index_b]
    return kwargs


def _save_embeddings(path: Path, kwargs: dict[str, Any]) -> None:
    """Write the evaluated arrays under the key names ``--embeddings`` reads back."""
    split = "embeddings_b" in kwargs
    names = {"embeddings": "embeddings_a" if split else "embeddings", "flip": "flip_a" if split else "flip"}
    arrays = {names.get(k, k): np.asarray(v) for k, v in kwargs.items()}
    np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stub matches **arrays to allow_pickle too


def _write_outputs(result: VerificationResult, out: Path, plot: bool, name: str) -> list[Path]:
    written = [result.to_json(out / "verification.json"), result.to_csv(out / "verification_folds.csv")]
    images: list[Path] = []
    if plot:
        try:
            from qualiface.eval import plots
        except ImportError:  # the plotting module is optional
            pass
        else:
            curves = {
                f"{name} (all pairs)": (result.all_pairs_fpr, result.all_pairs_tpr),
                f"{name} (10-fold mean)": (result.roc_fpr, result.roc_tpr),
            }
            images.append(plots.plot_roc(curves, out / "roc.png", title=f"ROC: {name}"))
    try:
        from qualiface.eval.report import Section, write_report
    except ImportError:
        return written + images
    section = Section.from_result(f"Verification: {name}", result, images, text=result.summary())
    return [*written, *images, write_report([section], out / "report.md", title="qualiface eval verify")]


@eval_app.command("verify")
def verify(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for verification.json, the fold CSV, plots.")],
    embeddings: Annotated[
        Path | None,
        typer.Option(
            help="Embeddings: .npy interleaved (2P x D, pair i = rows 2i, 2i+1), CSV (numeric columns, same rows) "
            "or .npz with 'embeddings' (interleaved) or 'embeddings_a'/'embeddings_b', optional 'flip' "
            "(or 'flip_a'/'flip_b') and 'issame'."
        ),
    ] = None,
    labels: Annotated[
        Path | None, typer.Option(help="Pair labels (1 = genuine), .npy / .npz / CSV (column issame or same).")
    ] = None,
    label_key: Annotated[str | None, typer.Option(help="Array or column of --labels holding the labels.")] = None,
    flipped: Annotated[
        Path | None, typer.Option(help="Embeddings of the flipped images, laid out like --embeddings.")
    ] = None,
    bin_pack: Annotated[
        Path | None, typer.Option("--bin", help="An insightface verification pack (lfw.bin ...); needs --model.")
    ] = None,
    pairs: Annotated[
        Path | None,
        typer.Option(
            help="Pair list (CSV/TSV/text with a header: two image columns and a label column under common names, "
            "docs/formats.md 'Pair lists'); photos are detected and aligned unless they are aligned crops; "
            "needs --model."
        ),
    ] = None,
    root: Annotated[Path | None, typer.Option(help="Folder the --pairs image paths are relative to.")] = None,
    columns: Annotated[
        str | None,
        typer.Option(help="The --pairs columns as A,B,LABEL (first image, second image, label) when not recognised."),
    ] = None,
    aligned: Annotated[
        bool | None,
        typer.Option(
            "--aligned/--detect",
            help="--aligned: the --pairs images are aligned crops (no detection); --detect: detect and align every "
            "image; default: detect unless every image is an aligned crop of the model's input size.",
        ),
    ] = None,
    detector: DetectorOption = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="Model for --bin / --pairs: a model file, run directory or ONNX recognizer."
        ),
    ] = None,
    preprocessing: PreprocessingOption = None,
    batch_size: Annotated[int, typer.Option(help="Images per model run (fixed batch sizes are honoured).")] = 64,
    flip: Annotated[
        bool | None,
        typer.Option(
            help="Also embed the mirrored images and fuse them (--flip-fusion); default: as the model card says."
        ),
    ] = None,
    flip_fusion: Annotated[
        str | None,
        typer.Option(help=f"Flip fusion: {', '.join(FLIP_FUSION_MODES)}; default sum_raw with flips, else none."),
    ] = None,
    folds: Annotated[int, typer.Option(help="Number of contiguous folds.")] = 10,
    threshold_search: Annotated[
        str,
        typer.Option(help="grid: insightface's arange(0, 4, 0.01) (default); exhaustive: every observed score."),
    ] = "grid",
    save_embeddings: Annotated[
        bool, typer.Option(help="Write the computed embeddings to embeddings.npz (re-usable with --embeddings).")
    ] = False,
    plot: Annotated[bool, typer.Option(help="Write roc.png.")] = True,
    progress: Annotated[bool, typer.Option(help="Progress bars (only on a terminal).")] = True,
    overwrite: OverwriteOption = False,
) -> None:
    """1:1 verification: insightface 10-fold accuracy (squared L2, strict <, arange(0,4,0.01) grid, contiguous
    folds), VAL@FAR=1e-3, and all-pairs ROC, TAR@FAR, EER and AUC of the cosine. Rates that the number of pairs
    cannot measure are marked n/m (docs/protocols.md, 'Small samples')."""
    sources = [s for s in (embeddings, bin_pack, pairs) if s is not None]
    if len(sources) != 1:
        raise InputError("give exactly one input: --embeddings, --bin or --pairs")
    if flip_fusion is not None and flip_fusion not in FLIP_FUSION_MODES:
        raise InputError(f"--flip-fusion {flip_fusion!r} is unknown; choose one of {', '.join(FLIP_FUSION_MODES)}")
    if pairs is None and (columns is not None or aligned is not None or detector is not None or root is not None):
        raise InputError("--columns, --root, --aligned/--detect and --detector apply to --pairs only")
    refuse_previous_run(out, "verification.json", overwrite)
    meta: dict[str, Any] = {"input": str(sources[0])}
    if embeddings is not None:
        if model is not None:
            raise InputError("--model is for --bin / --pairs; --embeddings are already embedded")
        kwargs = _from_embedding_files(embeddings, labels, label_key, flipped)
    else:
        if model is None:
            raise InputError(f"{sources[0]}: images need a model to embed them: give --model path.onnx")
        if flip_fusion not in (None, "none") and flip is False:
            raise InputError(f"--flip-fusion {flip_fusion} needs --flip")
        face_model = open_model(model, preprocessing=preprocessing)
        flip = face_model.flip_policy == "sum" if flip is None else flip
        embed = functools.partial(_embed, model=face_model, batch_size=batch_size, flip=flip, progress=progress)
        if bin_pack is not None:
            kwargs = _from_bin(bin_pack, embed)
        else:
            kwargs = _from_pairs(
                sources[0], root, folds, embed, columns=columns, input_size=face_model.input_size, aligned=aligned,
                detector=detector, progress=progress, meta=meta,
            )  # fmt: skip
        meta.update(face_model.card.stamp(), model_path=str(model))
    if kwargs.get("flip") is None:
        kwargs.pop("flip", None)
    result = evaluate_verification(
        **kwargs,
        fusion=flip_fusion,
        n_folds=folds,
        threshold_search=cast(ThresholdSearch, threshold_search),  # checked there
    )
    result.meta.update(meta)
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    out.mkdir(parents=True, exist_ok=True)
    if save_embeddings:
        _save_embeddings(out / "embeddings.npz", kwargs)
    written = _write_outputs(result, out, plot, sources[0].stem)
    typer.echo(result.summary())
    typer.echo("wrote " + ", ".join(str(p) for p in written))
