"""``qualiface data pack``: an image folder (one subfolder per identity) into an MXNet-free RecordIO pack."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qualiface.cli.apps import data_app


@data_app.command("pack")
def pack(
    image_folder: Annotated[Path, typer.Argument(help="One subfolder per identity, images inside.")],
    out: Annotated[Path, typer.Argument(help="OUT.rec (writes OUT.idx and property beside it) or a folder.")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing .rec.")] = False,
) -> None:
    """Pack IMAGE_FOLDER into RecordIO (.rec + .idx + property) in the InsightFace layout, bytes unchanged."""
    from qualiface.data.recordio import pack_image_folder

    out_dir, name = (out.parent, out.name) if out.suffix == ".rec" else (out, "train.rec")
    try:
        summary = pack_image_folder(image_folder, out_dir, overwrite=overwrite, rec_name=name)
    except (ValueError, FileExistsError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(
        f"packed {summary.num_images} images of {summary.num_classes} identities into {summary.rec_path} "
        f"(+ {summary.idx_path.name}, {summary.property_path.name})"
    )
