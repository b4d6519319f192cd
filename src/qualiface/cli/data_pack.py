"""``qualiface data pack``: an image folder (one subfolder per identity) into an MXNet-free RecordIO pack."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qualiface.cli.align import FormatOption, SizeOption, WorkersOption, progress_bar
from qualiface.cli.apps import data_app
from qualiface.cli.photos import DetectorOption, ProgressOption, detector_options


@data_app.command("pack")
def pack(
    image_folder: Annotated[Path, typer.Argument(help="One subfolder per identity, images inside.")],
    out: Annotated[Path, typer.Argument(help="OUT.rec (writes OUT.idx and property beside it) or a folder.")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing .rec.")] = False,
    detect: Annotated[
        bool,
        typer.Option(
            "--detect/--aligned",
            help="--detect: images that are not SIZExSIZE aligned crops (photos): detect and align them, as "
            "`qualiface align FOLDER --out OUT.rec` does. --aligned (default): such a folder is refused, saying what "
            "to run.",
        ),
    ] = False,
    size: SizeOption = 112,
    detector: DetectorOption = None,
    workers: WorkersOption = None,
    image_format: FormatOption = "png",
    progress: ProgressOption = True,
) -> None:
    """Pack IMAGE_FOLDER into RecordIO (.rec + .idx + property) in the InsightFace layout.

    Aligned SIZExSIZE crops are packed with their bytes unchanged; photos are detected and aligned with --detect.
    """
    from qualiface.data.photo_dataset import pack_photos

    rec = out if out.suffix == ".rec" else out / "train.rec"
    with progress_bar(progress) as step:
        summary, report = pack_photos(
            image_folder,
            rec,
            size=size,
            detect=detect,
            overwrite=overwrite,
            options=detector_options(detector),
            workers=workers,
            image_format=image_format,
            progress=step,
        )
    if report is not None:
        typer.echo(report.summary(), err=True)
    typer.echo(
        f"packed {summary.num_images} images of {summary.num_classes} identities into {summary.rec_path} "
        f"(+ {summary.idx_path.name}, {summary.property_path.name})"
    )
