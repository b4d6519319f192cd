"""``qualiface embed PHOTOS... --model M --out FILE``: embeddings of faces in photos."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Annotated

import typer

from qualiface.atomic import atomic_path
from qualiface.cli.apps import app
from qualiface.cli.outputs import OverwriteOption, refuse_existing_file
from qualiface.cli.photos import (
    AlignedOption,
    AllFacesOption,
    DetectorOption,
    ModelOption,
    PreprocessingOption,
    ProgressOption,
    detector_options,
    faces_of,
    fail,
    open_model,
    report_failures,
)


@app.command("embed")
def embed(
    photos: Annotated[list[Path], typer.Argument(help="Image files or folders (searched recursively).")],
    model: ModelOption,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .npz, .npy (+ .files.csv) or .parquet.")],
    aligned: AlignedOption = False,
    all_faces: AllFacesOption = False,
    normalize: Annotated[bool, typer.Option(help="Write unit-length embeddings.")] = False,
    progress: ProgressOption = True,
    preprocessing: PreprocessingOption = None,
    detector: DetectorOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Detect, align and embed the faces in PHOTOS; writes one row per face with its file name."""
    import numpy as np

    from qualiface.use import embed_faces

    if out.suffix.lower() not in (".npz", ".npy", ".parquet"):
        raise fail(f"--out {out}: use a .npz, .npy or .parquet file")
    refuse_existing_file(out, overwrite)
    detector_options(detector)  # a bad --detector is refused before the model is loaded
    face_model = open_model(model, preprocessing=preprocessing)
    faces = faces_of(photos, aligned=aligned, all_faces=all_faces, progress=progress, detector=detector)
    try:
        embeddings, quality = embed_faces(face_model, faces)
    except ValueError as exc:
        raise fail(str(exc), 1) from exc
    if normalize and len(embeddings):
        embeddings = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True).clip(1e-12)
    files = np.array([str(p) for p, _ in faces.sources])
    face_index = np.array([i for _, i in faces.sources], dtype=np.int64)
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix.lower()
    stamp = json.dumps(face_model.card.stamp())
    if suffix == ".npz":
        arrays = {"embeddings": embeddings, "files": files, "face_index": face_index, "model": np.array(stamp)}
        if quality is not None:
            arrays["quality"] = quality
        with atomic_path(out) as tmp, tmp.open("wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]  # numpy's stub matches **arrays to allow_pickle
    elif suffix == ".npy":
        with atomic_path(out) as tmp, tmp.open("wb") as handle:
            np.save(handle, embeddings)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["row", "file", "face_index"])
        writer.writerows((i, f, k) for i, (f, k) in enumerate(zip(files, face_index, strict=True)))
        out.with_suffix(".files.csv").write_text(buffer.getvalue())
        out.with_suffix(".model.json").write_text(stamp + "\n")
    else:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise fail("--out .parquet needs pyarrow: pip install 'qualiface[parquet]' (.npz needs nothing)") from exc
        columns = {"file": files.tolist(), "face_index": face_index.tolist(), "embedding": embeddings.tolist()}
        if quality is not None:
            columns["quality"] = quality.tolist()
        with atomic_path(out) as tmp:
            pq.write_table(pa.table(columns).replace_schema_metadata({"qualiface.model": stamp}), tmp)
    report_failures(faces)
    typer.echo(f"wrote {len(embeddings)} embeddings ({face_model.embedding_dim}-d, {face_model.name}) to {out}")
    if not len(embeddings):
        raise fail("no face was embedded", 1)
