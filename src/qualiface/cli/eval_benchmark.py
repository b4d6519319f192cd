"""``qualiface eval benchmark``: recognition and quality of one or several models on a labelled set, one report
(:mod:`qualiface.eval.benchmark`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from qualiface.cli.apps import eval_app
from qualiface.cli.photos import AlignedOption, DetectorOption, detector_options, open_model
from qualiface.errors import InputError


def _progress_bars(enabled: bool) -> tuple[Any, Any]:
    """A ``progress(stage, done, total)`` callback drawing one tqdm bar per stage, and a closer."""
    from tqdm.auto import tqdm

    bars: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            for bar in bars.values():
                bar.close()
            bars[stage] = tqdm(total=total, desc=stage, unit="img", disable=None if enabled else True, leave=False)
        bars[stage].update(done - bars[stage].n)

    def close() -> None:
        for bar in bars.values():
            bar.close()

    return progress, close


def _table(summary: dict[str, dict[str, Any]]) -> list[str]:
    """The headline figures as a plain table: one row per metric, one column per model."""
    names = list(summary)
    keys = list(dict.fromkeys(k for values in summary.values() for k in values if k != "quality"))
    width = max(len(k) for k in keys) if keys else 6

    def cell(value: Any) -> str:
        if value is None:
            return "not measurable"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    columns = [max(len(name), 14) for name in names]
    lines = ["metric".ljust(width) + "  " + "  ".join(n.ljust(w) for n, w in zip(names, columns, strict=True))]
    for key in keys:
        values = [cell(summary[n].get(key, "—")) if key in summary[n] else "—" for n in names]
        lines.append(key.ljust(width) + "  " + "  ".join(v.ljust(w) for v, w in zip(values, columns, strict=True)))
    return lines


@eval_app.command("benchmark")
def benchmark(
    model: Annotated[
        list[str],
        typer.Option("--model", "-m", help="A model (file, run directory or ONNX recognizer); repeat for several."),
    ],
    pairs: Annotated[
        Path | None,
        typer.Option(help="Pair list (CSV/TSV: two image columns and a label column, see docs/formats.md)."),
    ] = None,
    root: Annotated[Path | None, typer.Option(help="Folder the --pairs paths are relative to.")] = None,
    columns: Annotated[
        str | None, typer.Option(help="The --pairs columns as A,B,LABEL when their names are not recognised.")
    ] = None,
    folders: Annotated[
        Path | None,
        typer.Option(help="Identity folders (one subfolder per identity) instead of --pairs: pairs built from them."),
    ] = None,
    impostor_ratio: Annotated[
        float | None, typer.Option(help="--folders: impostor pairs per genuine pair; default 1 (balanced).")
    ] = None,
    max_pairs: Annotated[
        int | None, typer.Option(help="--folders: at most this many pairs (sampled above it); default 100000.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="--folders: seed of the pair sampling; default 0.")] = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder: report.md, report.html, results.json, plots.")
    ] = Path("benchmark"),
    aligned: AlignedOption = False,
    detector: DetectorOption = None,
    preprocessing: Annotated[
        list[str] | None,
        typer.Option(
            "--preprocessing",
            help="State a model's preprocessing (see `qualiface embed --help`): once for every model, or once per "
            "--model in order.",
        ),
    ] = None,
    fmr: Annotated[float, typer.Option(help="FMR of the EDC's fixed threshold and of the TAR rejection curve.")] = 1e-3,
    far: Annotated[
        list[float] | None, typer.Option(help="FAR targets of the TAR table (repeatable); default 1e-4, 1e-3, 1e-2.")
    ] = None,
    discard_limit: Annotated[
        list[float] | None, typer.Option(help="pAUC discard limit(s); default 0.2 and 0.3.")
    ] = None,
    folds: Annotated[int, typer.Option(help="Folds of the accuracy protocol (contiguous blocks of pairs).")] = 10,
    norm_quality: Annotated[
        bool,
        typer.Option(help="Models without a trained quality: use the raw embedding norm as quality (a heuristic)."),
    ] = False,
    batch_size: Annotated[int, typer.Option(help="Images per model run.")] = 64,
    overwrite: Annotated[bool, typer.Option(help="Replace a previous benchmark in --out.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the headline figures as JSON on stdout.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Verification (10-fold accuracy, ROC, TAR@FAR, EER, AUC), quality (EDC and pAUC with random and oracle
    references) and rejection curves of every --model on one labelled set: report.md, report.html (plots
    embedded), results.json and PNG plots in --out."""
    from qualiface.eval.benchmark import DEFAULT_FARS, run_benchmark
    from qualiface.eval.benchmark_report import check_out, write_benchmark
    from qualiface.eval.edc import DEFAULT_DISCARD_LIMITS

    if (pairs is None) == (folders is None):
        raise InputError("give the labelled set with exactly one of --pairs or --folders")
    if pairs is None and (root is not None or columns is not None):
        raise InputError("--root and --columns go with --pairs")
    if folders is None and (impostor_ratio is not None or max_pairs is not None or seed is not None):
        raise InputError("--impostor-ratio, --max-pairs and --seed go with --folders")
    if aligned and detector is not None:
        raise InputError("--detector says how to find faces, and --aligned says there is nothing to find: choose one")
    if preprocessing and len(preprocessing) not in (1, len(model)):
        raise InputError(f"--preprocessing: give it once or once per --model ({len(model)}), got {len(preprocessing)}")
    check_out(out, overwrite=overwrite)
    folder_pairs = None
    if folders is not None:
        from qualiface.eval.benchmark_pairs import DEFAULT_MAX_PAIRS, identity_folder_pairs

        folder_pairs = identity_folder_pairs(
            folders,
            impostor_ratio=1.0 if impostor_ratio is None else impostor_ratio,
            max_pairs=DEFAULT_MAX_PAIRS if max_pairs is None else max_pairs,
            seed=0 if seed is None else seed,
        )
        pair_list, dataset = folder_pairs.pairs, folder_pairs.describe()
    else:
        from qualiface.data.pairs import load_pairs_csv

        assert pairs is not None
        pair_list = load_pairs_csv(pairs, root, columns=columns)
        dataset = {"source": "pair list", "path": str(pairs)}
    per_model = preprocessing * len(model) if preprocessing and len(preprocessing) == 1 else preprocessing
    models = [
        open_model(path, preprocessing=per_model[k] if per_model else None, quiet=json_output)
        for k, path in enumerate(model)
    ]
    bar, close = _progress_bars(progress)
    try:
        result = run_benchmark(
            pair_list, models, model_paths=model, aligned=aligned, detector_options=detector_options(detector),
            n_folds=folds, fmr=fmr, fars=tuple(far) if far else DEFAULT_FARS,
            discard_limits=tuple(discard_limit) if discard_limit else DEFAULT_DISCARD_LIMITS,
            norm_quality=norm_quality, batch_size=batch_size, dataset=dataset, progress=bar,
        )  # fmt: skip
    finally:
        close()
    for item in result.images_without_face:
        typer.echo(f"skipped {item['path']}: {item['reason']}: {item['message']}", err=True)
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    for m in result.models.values():
        if m.note:
            typer.echo(f"note: {m.name}: {m.note}", err=True)
    written = write_benchmark(result, out, overwrite=overwrite, folder_pairs=folder_pairs)
    if json_output:
        typer.echo(json.dumps({"models": result.summary(), "out": str(out)}, indent=1))
        return
    d = result.dataset
    counted = f"{len(models)} models" if len(models) > 1 else "1 model"
    typer.echo(f"{d['pairs_evaluated']} pairs ({d['genuine']} genuine, {d['impostor']} impostor), {counted}")
    for line in _table(result.summary()):
        typer.echo(line)
    typer.echo("wrote " + ", ".join(str(p) for p in written))
