"""The files of ``qualiface eval benchmark``: results.json, report.md, report.html and PNG plots in one folder.

Tables put the models side by side (one column per model). The Markdown report links the PNGs beside it; the
HTML report embeds them (base64), so it can be sent alone. Every file is written atomically; results.json, the
mark of a finished run, is written last (and an earlier run's is removed first under ``overwrite``), so a folder
with a results.json is a complete benchmark. A folder holding a previous benchmark is refused unless
``overwrite``.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qualiface.atomic import atomic_path
from qualiface.errors import InputError
from qualiface.eval.benchmark import REPORTED_PORTIONS, BenchmarkResult, ModelBenchmark
from qualiface.eval.benchmark_pairs import FolderPairs
from qualiface.eval.roc import not_measurable_text

#: The files a benchmark writes besides its plots; their presence means a previous run.
REPORT_FILES: tuple[str, ...] = ("results.json", "report.md", "report.html")

Table = tuple[list[str], list[list[str]]]  # header, rows


def check_out(out: str | Path, *, overwrite: bool = False) -> Path:
    """The output folder, refused when it is a file or already holds a benchmark (unless ``overwrite``); check
    it before the run, so that a long run never ends on this error."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: --out is a folder for the report, and this is a file")
    found = [name for name in REPORT_FILES if (out / name).exists()]
    if found and not overwrite:
        raise InputError(
            f"{out}: already holds a benchmark ({', '.join(found)}); choose another --out or pass --overwrite"
        )
    return out


def _safe(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in label)


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{float(value):.{digits}f}"


def _at(portions: np.ndarray, values: np.ndarray, portion: float) -> float:
    return float(values[int(np.argmin(np.abs(portions - portion)))])


def _verification_table(models: Sequence[ModelBenchmark]) -> Table:
    header = ["metric", *(m.name for m in models)]
    first = models[0].verification
    rows = [
        ["pairs (genuine / impostor)", *(f"{m.verification.n_genuine} / {m.verification.n_impostor}" for m in models)],
        [
            f"accuracy ({first.n_folds}-fold, mean ± std)",
            *(f"{_num(m.verification.accuracy)} ± {_num(m.verification.accuracy_std)}" for m in models),
        ],
        ["accuracy threshold (cosine)", *(_num(m.accuracy_threshold) for m in models)],
    ]
    val_cells = []
    for m in models:
        v = m.verification
        if v.val_measurable:
            val_cells.append(f"{_num(v.val)} ± {_num(v.val_std)}")
        else:
            val_cells.append("n/m (the target is below 1 over the training folds' impostor pairs)")
    rows.append([f"VAL@FAR={first.far_target:g} ({first.n_folds}-fold)", *val_cells])
    for key in first.tar_at_far:
        rows.append(
            [
                f"TAR@FAR={key}",
                *(
                    _num(m.verification.tar_at_far.get(key))
                    if m.tar_measurable.get(key, True)
                    else not_measurable_text(float(key), m.verification.n_impostor)
                    for m in models
                ),
            ]
        )
    rows.append(["EER", *(_num(m.verification.eer) for m in models)])
    rows.append(["AUC", *(_num(m.verification.auc) for m in models)])
    return header, rows


def _quality_table(models: Sequence[ModelBenchmark]) -> Table | None:
    rated = [m for m in models if m.quality is not None]
    if not rated:
        return None
    header = ["metric", *(m.name for m in models)]

    def row(name: str, cell: Callable[[ModelBenchmark], str]) -> list[str]:
        return [name, *(cell(m) if m.quality is not None else "—" for m in models)]

    def quality(m: ModelBenchmark) -> Any:
        return m.quality

    fmr = rated[0].quality.fmr_target if rated[0].quality is not None else float("nan")
    rows = [
        row("quality (pair = min of the two)", lambda m: f"{quality(m).method} ({quality(m).source})"),
        row(f"EDC threshold at FMR {fmr:g} (cosine)", lambda m: _num(_curve(m).threshold)),
        row(
            "achieved FMR",
            lambda m: (
                _num(quality(m).achieved_fmr)
                + ("" if quality(m).fmr_measurable else f" ({not_measurable_text(fmr, m.verification.n_impostor)})")
            ),
        ),
        row("FNMR at the threshold (nothing discarded)", lambda m: _num(_curve(m).starting_error)),
    ]
    for limit in _curve(rated[0]).pauc:
        for which, suffix in (("edc", " (lower is better)"), ("random", " random"), ("oracle", " oracle")):
            cells = [_num(_curve(m, which).pauc[limit]) if m.quality is not None else "—" for m in models]
            rows.append([f"pAUC@{limit:g}{suffix}", *cells])
    return header, rows


def _curve(m: ModelBenchmark, which: str = "edc") -> Any:
    assert m.quality is not None
    result = getattr(m.quality, which)
    return result.curves[m.quality.operating_point]


def _rejection_table(models: Sequence[ModelBenchmark]) -> Table | None:
    rated = [m for m in models if m.quality is not None]
    if not rated:
        return None
    header = ["rejected", *(m.name for m in models)]
    rows: list[list[str]] = []
    fmr = rated[0].quality.fmr_target if rated[0].quality is not None else float("nan")
    curves = (
        ("FNMR at the EDC threshold", "fnmr_rejection", "fnmr"),
        ("accuracy at the 10-fold threshold", "accuracy_rejection", "accuracy"),
        (f"TAR@FMR={fmr:g} (threshold per fraction)", "tar_rejection", "tar"),
    )
    for label, curve_name, field in curves:
        for portion in REPORTED_PORTIONS:
            cells = []
            for m in models:
                if m.quality is None:
                    cells.append("—")
                    continue
                curve = getattr(m.quality, curve_name)
                values = getattr(curve, field)
                values = values[m.quality.fmr_target] if isinstance(values, dict) else values
                cells.append(_num(_at(curve.portions, values, portion)))
            rows.append([f"{label}, {portion:.0%} rejected", *cells])
    return header, rows


def _plots(result: BenchmarkResult, out: Path) -> list[tuple[str, Path]]:
    from qualiface.eval.plots import plot_edc, plot_rejection, plot_roc

    models = list(result.models.values())
    images = [
        (
            "ROC (all pairs, cosine)",
            plot_roc(
                {m.name: (m.verification.all_pairs_fpr, m.verification.all_pairs_tpr) for m in models},
                out / "roc.png",
                title="ROC, all pairs",
            ),
        )
    ]
    rated = [m for m in models if m.quality is not None]
    limit = max(result.settings["discard_limits"]) if result.settings.get("discard_limits") else None
    stems: dict[str, str] = {}
    for m in rated:  # one file per model, also when two names differ only in characters a file name cannot hold
        stem = f"edc_{_safe(m.name)}"
        stems[m.name] = f"{stem}.png" if f"{stem}.png" not in stems.values() else f"{stem}_{len(stems) + 1}.png"
    for m in rated:
        assert m.quality is not None
        label = m.quality.operating_point
        images.append(
            (
                f"EDC: {m.name}",
                plot_edc(
                    {f"{m.name} ({m.quality.method})": m.quality.edc.curve_points(label)},
                    out / stems[m.name],
                    title=f"FNM-EDC at {label}: {m.name}",
                    reference={
                        "random": m.quality.random.curve_points(label),
                        "oracle": m.quality.oracle.curve_points(label),
                    },
                    discard_limit=limit,
                ),
            )
        )
    if rated:
        curves = {m.name: m.quality for m in rated if m.quality is not None}
        fmr = next(iter(curves.values())).fmr_target
        images += [
            (
                "FNMR at the fixed threshold vs fraction rejected",
                plot_rejection(
                    {n: (q.fnmr_rejection.portions, q.fnmr_rejection.fnmr) for n, q in curves.items()},
                    out / "rejection_fnmr.png",
                    title=f"FNMR at the EDC threshold (FMR {fmr:g}) vs fraction rejected",
                    ylabel="FNMR",
                ),
            ),
            (
                "Accuracy vs fraction rejected",
                plot_rejection(
                    {n: (q.accuracy_rejection.portions, q.accuracy_rejection.accuracy) for n, q in curves.items()},
                    out / "rejection_accuracy.png",
                    title="Accuracy at the 10-fold threshold vs fraction rejected",
                    ylabel="accuracy",
                ),
            ),
            (
                "TAR vs fraction rejected",
                plot_rejection(
                    {n: (q.tar_rejection.portions, q.tar_rejection.tar[fmr]) for n, q in curves.items()},
                    out / "rejection_tar.png",
                    title=f"TAR at FMR {fmr:g} (threshold re-estimated) vs fraction rejected",
                    ylabel="TAR",
                ),
            ),
        ]
    return images


def _dataset_lines(result: BenchmarkResult) -> list[str]:
    d = result.dataset
    lines = [f"Pairs: {d.get('source', 'pair list')} {d.get('path') or d.get('root', '')}".rstrip()]
    lines.append(
        f"{d['pairs_evaluated']} pairs evaluated ({d['genuine']} genuine, {d['impostor']} impostor) of "
        f"{d['pairs_listed']} listed; {d['pairs_dropped']} left out (a side without a face); {d['images']} images, "
        f"faces {d['faces']}."
    )
    if d.get("source") == "identity folders":
        lines.append(
            f"Built from {d['identities']} identities ({d['images_in_folders']} images): "
            f"{d['genuine_pairs']} of {d['genuine_available']} genuine pairs, {d['impostor_pairs']} of "
            f"{d['impostor_available']} impostor pairs (ratio {d['impostor_ratio']:g}, at most {d['max_pairs']} "
            f"pairs, seed {d['seed']}); written to pairs.csv."
        )
    s = result.settings
    lines.append(
        f"Settings: {s['n_folds']} folds; EDC: fixed threshold at FMR {s['fmr']:g}, pair quality min, pAUC at "
        f"discard limits {', '.join(f'{x:g}' for x in s['discard_limits'])}; rejected fractions "
        f"{s['rejected_portions']}."
    )
    return lines


def _notes(result: BenchmarkResult) -> list[str]:
    notes = [f"{m.name}: {m.note}" for m in result.models.values() if m.note]
    notes += result.warnings
    missing = result.images_without_face
    for item in missing[:20]:
        notes.append(f"no face: {item['path']} ({item['reason']})")
    if len(missing) > 20:
        notes.append(f"... and {len(missing) - 20} more files without a face (results.json lists them all)")
    return notes


def _sections(result: BenchmarkResult) -> list[tuple[str, Table | None]]:
    models = list(result.models.values())
    return [
        ("Verification", _verification_table(models)),
        ("Quality: error versus discard (FNM-EDC)", _quality_table(models)),
        ("Rejection curves", _rejection_table(models)),
    ]


def _markdown(result: BenchmarkResult, images: Sequence[tuple[str, Path]], title: str) -> str:
    lines = [f"# {title}", "", *(f"{line}  " for line in _dataset_lines(result)), ""]
    for name, table in _sections(result):
        if table is None:
            continue
        header, rows = table
        lines += [f"## {name}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        lines.append("")
    notes = _notes(result)
    if notes:
        lines += ["## Notes", "", *(f"- {note}" for note in notes), ""]
    lines += ["## Plots", ""]
    lines += [f"![{caption}]({path.name})" for caption, path in images]
    lines.append("")
    return "\n".join(lines)


def _html(result: BenchmarkResult, images: Sequence[tuple[str, Path]], title: str) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        f"<html><head><meta charset='utf-8'><title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:75em;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}img{max-width:48%}</style>",
        f"</head><body><h1>{esc(title)}</h1>",
        *(f"<p>{esc(line)}</p>" for line in _dataset_lines(result)),
    ]
    for name, table in _sections(result):
        if table is None:
            continue
        header, rows = table
        head = "".join(f"<th>{esc(cell)}</th>" for cell in header)
        body = "".join("<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in rows)
        parts.append(f"<h2>{esc(name)}</h2><table><tr>{head}</tr>{body}</table>")
    notes = _notes(result)
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(note)}</li>" for note in notes) + "</ul>")
    parts.append("<h2>Plots</h2>")
    for caption, path in images:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(f"<img src='data:image/png;base64,{data}' alt='{esc(caption)}' title='{esc(caption)}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _write_text(path: Path, text: str) -> Path:
    with atomic_path(path, fsync=False) as tmp:
        tmp.write_text(text)
    return path


def write_benchmark(
    result: BenchmarkResult,
    out: str | Path,
    *,
    overwrite: bool = False,
    folder_pairs: FolderPairs | None = None,
    title: str = "qualiface eval benchmark",
) -> list[Path]:
    """Write ``result`` to the folder ``out`` (module docstring): the plots, pairs.csv (pairs built from identity
    folders), report.md, report.html and results.json last. Returns the paths written."""
    out = check_out(out, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").unlink(missing_ok=True)  # under overwrite: no stale mark of a finished run
    written: list[Path] = []
    if folder_pairs is not None:
        with atomic_path(out / "pairs.csv", fsync=False) as tmp:
            folder_pairs.write_csv(tmp, int(result.settings["n_folds"]))
        written.append(out / "pairs.csv")
    images = _plots(result, out)
    written += [path for _, path in images]
    written.append(_write_text(out / "report.md", _markdown(result, images, title)))
    written.append(_write_text(out / "report.html", _html(result, images, title)))
    written.append(_write_text(out / "results.json", json.dumps(result.to_dict(), indent=1)))
    return written
