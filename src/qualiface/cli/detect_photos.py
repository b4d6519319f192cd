"""``qualiface detect PHOTOS [--out boxes.csv|boxes.json]``: face boxes, five landmarks and scores (CSV/JSON).

One row per face: :data:`qualiface.detect.rows.COLUMNS` (file, face index, score, box, the five landmarks by name,
the image's size and the step that found the face), in the photos' order, faces best score first. CSV goes to
stdout without ``--out``; ``--json`` prints JSON instead; ``--out`` writes a ``.csv`` or ``.json`` file atomically
(an existing one only with ``--overwrite``). Every file that gives no face is reported on stderr; the exit code is
1 when no photo gave a face.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qualiface.cli.apps import app
from qualiface.cli.outputs import OverwriteOption, refuse_existing_file
from qualiface.cli.photos import DetectorOption, ProgressOption, detector_options, fail, report_failures


@app.command("detect")
def detect(
    photos: Annotated[list[Path], typer.Argument(help="Image files or folders (searched recursively).")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write a .csv or .json file (default: CSV on stdout)."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="JSON on stdout instead of CSV.")] = False,
    all_faces: Annotated[
        bool,
        typer.Option(
            "--all-faces/--largest",
            help="Every face of a photo (default), or only its largest (as the photo commands use).",
        ),
    ] = True,
    detector: DetectorOption = None,
    progress: ProgressOption = True,
    overwrite: OverwriteOption = False,
) -> None:
    """Find the faces in PHOTOS: box, five landmarks, score and how each was found, one row per face."""
    from tqdm.auto import tqdm

    from qualiface.atomic import atomic_path
    from qualiface.detect.rows import detect_rows, rows_to_csv, rows_to_json
    from qualiface.use import expand_photos

    options = detector_options(detector)
    fmt = "json" if json_out else "csv"
    if out is not None:
        suffix = out.suffix.lower()
        if suffix not in (".csv", ".json"):
            raise fail(f"--out {out}: use a .csv or .json file")
        if json_out and suffix != ".json":
            raise fail(f"--json writes JSON; --out {out} is a .csv file (drop --json, or use a .json file)")
        refuse_existing_file(out, overwrite)
        if out.is_dir():
            raise fail(f"--out {out} is a folder; detect writes one .csv or .json file")
        fmt = suffix[1:]
    try:
        paths = expand_photos(photos)
    except FileNotFoundError as exc:
        raise fail(str(exc)) from exc
    bar = tqdm(total=len(paths), desc="faces", unit="file", disable=not progress or len(paths) < 2, leave=False)

    def step(done: int, total: int) -> None:
        bar.update(done - bar.n)

    try:
        rows, faces = detect_rows(paths, options=options, all_faces=all_faces, progress=step)
    finally:
        bar.close()
    text = rows_to_json(rows, faces, options) if fmt == "json" else rows_to_csv(rows)
    report_failures(faces)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            tmp.write_text(text)
        typer.echo(f"wrote {len(rows)} faces of {len(paths)} files to {out}", err=True)
    if not rows:
        raise fail("no face found in any photo", 1)
