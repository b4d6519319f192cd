"""``qualiface align PHOTOS --out DIR|NAME.rec``: aligned 112x112 crops, or a RecordIO pack, from photos."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from qualiface.cli.apps import app
from qualiface.cli.photos import DetectorOption, ProgressOption, detector_options

#: The one spelling of the worker processes of the photo-to-dataset commands.
WorkersOption = Annotated[
    int | None,
    typer.Option("--workers", help="Worker processes, each with its own detector [default: min(4, CPU cores)].", min=1),
]
#: The one spelling of the crop format.
FormatOption = Annotated[
    str,
    typer.Option(
        "--format", help="Crop format: png (lossless, the default) or jpg (quality 95, about a third of the size)."
    ),
]
SizeOption = Annotated[int, typer.Option("--size", help="Crop side in pixels (ArcFace template: 112, 224, 128...).")]


@contextmanager
def progress_bar(enabled: bool, what: str = "photos") -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback drawing a tqdm bar on stderr (nothing when disabled)."""
    from tqdm.auto import tqdm

    bar = None

    def step(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=what, unit="photo", disable=not enabled or total < 2, leave=False)
        bar.update(done - bar.n)

    try:
        yield step
    finally:
        if bar is not None:
            bar.close()


@app.command("align")
def align(
    photos: Annotated[list[Path], typer.Argument(help="Photo files or folders (searched recursively).")],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="A folder (crops mirroring the input folders; a re-run skips crops that exist) or a NAME.rec "
            "(a RecordIO pack, identities from the folder above each photo).",
        ),
    ],
    detector: DetectorOption = None,
    all_faces: Annotated[
        bool,
        typer.Option("--all-faces/--largest", help="Every face of a photo (<stem>_1, <stem>_2...), or its largest."),
    ] = False,
    size: SizeOption = 112,
    image_format: FormatOption = "png",
    workers: WorkersOption = None,
    overwrite: Annotated[
        bool, typer.Option(help="Folder: align again the photos whose crop exists. NAME.rec: replace it.")
    ] = False,
    progress: ProgressOption = True,
) -> None:
    """Detect and align the faces of PHOTOS into SIZExSIZE crops, with a per-photo report (align_report.csv)."""
    from qualiface.data.photo_dataset import align_photos

    options = detector_options(detector)
    with progress_bar(progress) as step:
        report = align_photos(
            photos,
            out,
            options=options,
            size=size,
            workers=workers,
            all_faces=all_faces,
            image_format=image_format,
            overwrite=overwrite,
            progress=step,
        )
    typer.echo(report.summary(), err=True)
    if report.count("ok") + report.count("skipped") == 0:
        from qualiface.errors import RunError

        raise RunError(f"no face found in any of the {len(report.rows)} photos (report: {report.report_path})")
