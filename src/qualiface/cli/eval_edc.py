"""``qualiface eval edc``: EDC / ERC curves and pAUC of several quality methods at once (docs/protocols.md,
'EDC and ERC')."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from qualiface.atomic import atomic_path
from qualiface.cli.apps import eval_app
from qualiface.cli.outputs import OverwriteOption, refuse_previous_run
from qualiface.errors import InputError
from qualiface.eval.edc.inputs import CONVENTIONS
from qualiface.eval.results import to_plain


def _quality_methods(
    table: dict[str, np.ndarray], exclude: set[str], source: Path
) -> dict[str, np.ndarray | tuple[np.ndarray, np.ndarray]]:
    """Numeric columns/arrays as quality methods: ``NAME`` (per pair), ``NAME_a`` + ``NAME_b`` (per sample), or an
    ``.npz`` array of shape (N, 2)."""
    methods: dict[str, np.ndarray | tuple[np.ndarray, np.ndarray]] = {}
    for name, values in table.items():
        if name in exclude or values.dtype.kind not in "biuf":
            continue
        if values.ndim == 2:
            if values.shape[1] != 2:
                raise ValueError(f"{source}: array {name!r} has shape {values.shape}; use (N,) or (N, 2)")
            methods[name] = (values[:, 0], values[:, 1])
        elif name.endswith("_a") and f"{name[:-2]}_b" in table:
            methods[name[:-2]] = (values, table[f"{name[:-2]}_b"])
        elif name.endswith("_b") and f"{name[:-2]}_a" in table:
            continue
        else:
            methods[name] = values
    return methods


def _safe(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in label)


@eval_app.command("edc")
def eval_edc(
    pairs: Annotated[Path, typer.Argument(help="Scores and labels (.npz or CSV); may also hold the quality columns.")],
    quality: Annotated[
        Path | None,
        typer.Option(help="Quality file (.npz/CSV): one column per method (per pair), NAME_a + NAME_b per sample."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("edc"),
    score_key: Annotated[str, typer.Option(help="Column/array of comparison scores.")] = "score",
    label_key: Annotated[str, typer.Option(help="Column/array of labels (1 mated, 0 non-mated).")] = "label",
    method: Annotated[
        list[str] | None, typer.Option(help="Quality methods to use (default: every numeric one).")
    ] = None,
    convention: Annotated[
        str, typer.Option(help="fixed_threshold, crfiqa or magface (see docs/protocols.md, 'EDC and ERC').")
    ] = "fixed_threshold",
    fmr: Annotated[list[float] | None, typer.Option(help="FMR target(s); default 1e-3 and 1e-4.")] = None,
    starting_error: Annotated[list[float] | None, typer.Option(help="Fixed threshold from a starting error.")] = None,
    threshold: Annotated[list[float] | None, typer.Option(help="Fixed threshold(s), in score units.")] = None,
    discard_limit: Annotated[list[float] | None, typer.Option(help="pAUC discard limit(s); default 0.2, 0.3.")] = None,
    pair_quality: Annotated[
        str | None, typer.Option(help="min, max, mean or product (default min; max if lower is better).")
    ] = None,
    lower_is_better: Annotated[bool, typer.Option(help="Values are uncertainties: the highest go first.")] = False,
    score_kind: Annotated[str, typer.Option(help="cosine, similarity or distance.")] = "cosine",
    error: Annotated[str, typer.Option(help="fnmr (FNM-EDC) or fmr (FM-EDC; fixed threshold only).")] = "fnmr",
    references: Annotated[bool, typer.Option(help="Also compute the random-order and oracle curves.")] = True,
    n_random: Annotated[int, typer.Option(help="Random orders averaged (recomputed conventions).")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the random orders.")] = 0,
    rejection: Annotated[
        bool,
        typer.Option(help="Also the uncertainty rejection curves (ScaleFace: TAR at --fmr vs fraction rejected)."),
    ] = True,
    plot: Annotated[bool, typer.Option(help="Write one PNG per operating point.")] = True,
    report: Annotated[bool, typer.Option(help="Write report.md.")] = True,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    overwrite: OverwriteOption = False,
) -> None:
    """EDC / ERC of every quality method: JSON + CSV per method, summary.json, PNG plots and report.md in OUT."""
    from qualiface.eval.edc import DEFAULT_DISCARD_LIMITS, edc, edc_oracle, edc_random
    from qualiface.eval.inputs import load_table

    refuse_previous_run(out, "summary.json", overwrite)
    table = load_table(pairs)
    for key in (score_key, label_key):
        if key not in table:
            raise InputError(f"{pairs}: no column/array {key!r}; available: {sorted(table)}")
    scores, labels = table[score_key], table[label_key]
    source = quality if quality is not None else pairs
    qualities = _quality_methods(load_table(source) if quality is not None else table, {score_key, label_key}, source)
    if method:
        missing = [m for m in method if m not in qualities]
        if missing:
            raise InputError(f"{source}: no quality method {missing}; available: {sorted(qualities)}")
        qualities = {m: qualities[m] for m in method}
    if not qualities:
        raise InputError(f"{source}: no numeric quality column besides {score_key!r} and {label_key!r}")
    if convention not in CONVENTIONS:
        raise InputError(f"--convention: unknown {convention!r}; use one of {list(CONVENTIONS)}")
    options: dict[str, Any] = {
        "convention": convention,
        "fmr": fmr or None,
        "starting_error": starting_error or None,
        "threshold": threshold or None,
        "discard_limits": tuple(discard_limit) if discard_limit else DEFAULT_DISCARD_LIMITS,
        "error": error,
        "score_kind": score_kind,
    }
    results = {}
    for name, values in qualities.items():
        q, q_b = values if isinstance(values, tuple) else (values, None)
        results[name] = edc(
            scores, labels, q, q_b, pair_quality=pair_quality, higher_is_better=not lower_is_better,
            method=name, **options,
        )  # fmt: skip
    rejections = {}
    if rejection:
        from qualiface.eval.edc import pair_quality as combine
        from qualiface.eval.uncertainty import rejection_curve

        how = pair_quality or ("max" if lower_is_better else "min")
        for name, values in qualities.items():
            q, q_b = values if isinstance(values, tuple) else (values, None)
            confidence = combine(q, q_b, how) if q_b is not None else np.asarray(q, dtype=np.float64)
            rejections[name] = rejection_curve(
                scores if score_kind != "distance" else -np.asarray(scores, dtype=np.float64),
                labels,
                confidence,
                fars=tuple(fmr) if fmr else (1e-4, 1e-3),
                mode="uncertainty" if lower_is_better else "confidence",
            )
    refs = {}
    if references:
        refs["oracle"] = edc_oracle(scores, labels, **options)
        refs["random"] = edc_random(scores, labels, n_permutations=n_random, seed=seed, progress=progress, **options)

    out.mkdir(parents=True, exist_ok=True)
    for name, result in {**results, **{f"reference_{k}": v for k, v in refs.items()}}.items():
        result.to_json(out / f"{_safe(name)}.json")
        result.to_csv(out / f"{_safe(name)}.csv")
    for name, curve in rejections.items():
        curve.to_json(out / f"rejection_{_safe(name)}.json")
        curve.to_csv(out / f"rejection_{_safe(name)}.csv")
    summary = {name: result.summary() for name, result in results.items()}
    for name, curve in rejections.items():
        summary[name].update({f"rejection_auc_far_{far:g}": value for far, value in curve.auc.items()})
    for name in summary:
        summary[name].update(reference_areas(refs))
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(to_plain(summary), indent=2))
    for warning in dict.fromkeys(w for result in results.values() for w in result.warnings):
        typer.echo(f"warning: {warning}", err=True)

    images: list[Path] = []
    if plot:
        from qualiface.eval.plots import plot_edc

        for label in next(iter(results.values())).curves:
            images.append(
                plot_edc(
                    {name: result.curve_points(label) for name, result in results.items()},
                    out / f"edc_{_safe(label)}.png",
                    title=f"{convention} EDC, {label}",
                    reference={name: ref.curve_points(label) for name, ref in refs.items()} or None,
                    ylabel=error.upper(),
                    discard_limit=max(options["discard_limits"]),
                )
            )
        if rejections:
            from qualiface.eval.plots import plot_rejection

            for far in next(iter(rejections.values())).fars:
                images.append(
                    plot_rejection(
                        {name: (curve.portions, curve.tar[far]) for name, curve in rejections.items()},
                        out / f"rejection_far_{far:g}.png",
                        title=f"TAR at FAR {far:g} vs fraction rejected (threshold re-estimated per level)",
                    )
                )
    if report:
        from qualiface.eval.report import Section, write_report

        sections = [Section(f"EDC ({convention})", report_rows(summary, results), images)]
        sections += [Section.from_result(name, result) for name, result in results.items()]
        write_report(sections, out / "report.md", title="qualiface eval edc")

    for name, metrics in summary.items():
        typer.echo(f"{name}: " + ", ".join(f"{k}={_text(v)}" for k, v in metrics.items()))
    typer.echo(f"wrote {out}")


def _text(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if isinstance(value, bool) else "null"
    return f"{value:.6g}" if isinstance(value, float | int) else str(value)


def reference_areas(refs: dict[str, Any]) -> dict[str, float]:
    """The random and oracle references' areas per operating point, as ``"<point>/pauc@L/random"`` (and
    ``pauc-best@L``, ``auc``) keys beside each method's own in ``summary.json``."""
    out: dict[str, float] = {}
    for kind, ref in refs.items():
        for key, value in ref.summary().items():
            if "auc" in key.rsplit("/", 1)[-1]:
                out[f"{key}/{kind}"] = value
    return out


def summary_rows(summary: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Flatten ``{method: {metric: value}}`` to ``{"method/metric": value}`` for a report table."""
    return {f"{name}/{key}": value for name, values in summary.items() for key, value in values.items()}


def report_rows(summary: dict[str, dict[str, Any]], results: dict[str, Any]) -> dict[str, Any]:
    """:func:`summary_rows`, with the threshold of an FMR target the non-mated pairs cannot measure shown as
    ``n/m (needs ≥ N non-mated pairs, has n; achieved FMR f)``."""
    from qualiface.eval.edc import FixedThresholdEDC
    from qualiface.eval.roc import not_measurable_text

    rows = summary_rows(summary)
    for name, result in results.items():
        for label, curve in result.curves.items():
            if isinstance(curve, FixedThresholdEDC) and not curve.measurable and curve.fmr_target is not None:
                text = not_measurable_text(curve.fmr_target, curve.nonmated_count or 0, "non-mated pairs")
                rows[f"{name}/{label}/threshold"] = (
                    f"{curve.threshold:.6g}: {text}; achieved FMR {curve.achieved_fmr:.3g}"
                )
    return rows
