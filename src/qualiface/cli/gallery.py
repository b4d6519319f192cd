"""``qualiface enroll / qualiface search``: galleries of quality-weighted identity templates (docs/galleries.md)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from qualiface.cli.apps import app
from qualiface.cli.outputs import OverwriteOption, refuse_existing_file
from qualiface.cli.photos import (
    AlignedOption,
    AllFacesOption,
    DetectorOption,
    PreprocessingOption,
    ProgressOption,
    ThresholdOption,
    detector_options,
    faces_of,
    open_model,
    report_failures,
)
from qualiface.errors import InputError, RunError

GalleryOption = Annotated[Path, typer.Option("--gallery", "-g", help="The gallery file (.npz).")]


#: ``--model`` of enroll and search: default the model the gallery was enrolled with.
GalleryModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Model file, run directory or ONNX recognizer; default: the model an existing gallery was enrolled with.",
    ),
]


def _model_of(stored: Any, model: str | None, gallery: Path) -> str:
    """``model``, else the existing model file the gallery names (its SHA-256 is checked against the gallery by the
    caller), else a one-line refusal."""
    if model is not None:
        return model
    if stored is None:
        raise InputError(f"give --model: {gallery} is a new gallery")
    if stored.model_file is None or not Path(stored.model_file).exists():
        where = f" ({stored.model_file} is gone)" if stored.model_file else ""
        raise InputError(f"{gallery}: give --model: the gallery does not name an existing model file{where}")
    return str(stored.model_file)


@app.command("enroll")
def enroll(
    gallery: GalleryOption,
    model: GalleryModelOption = None,
    photos: Annotated[
        list[Path] | None,
        typer.Argument(help="Image files or folders (searched recursively); default: the files of --identities."),
    ] = None,
    identities: Annotated[
        Path | None,
        typer.Option(
            help="CSV with columns file,identity (paths relative to the CSV's folder); default: the identity of "
            "a photo is the name of the folder directly above it."
        ),
    ] = None,
    weighting: Annotated[
        str | None,
        typer.Option(help="Template weighting: quality or uniform (default: the gallery's; new galleries: quality)."),
    ] = None,
    quality_weight: Annotated[
        str | None,
        typer.Option(
            help="How a quality becomes a weight: softmax (default; exp(u/temperature), u the quality on a 0-1 "
            "scale), minmax (over the identity's images) or linear (the quality itself, >= 0)."
        ),
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(help="Softmax temperature, in units of the quality scale (default 0.25).")
    ] = None,
    aligned: AlignedOption = False,
    progress: ProgressOption = True,
    preprocessing: PreprocessingOption = None,
    detector: DetectorOption = None,
) -> None:
    """Enroll photos of known people into a gallery: one template per identity, the quality-weighted mean of its
    images' unit embeddings. An existing gallery is appended to (same model only); an image already enrolled is
    skipped."""
    from qualiface.gallery import Weighting, check_model, enroll, load_gallery, save_gallery
    from qualiface.use import expand_photos

    if not photos and identities is None:
        raise InputError("give PHOTOS (files or folders) or --identities ids.csv")
    labels = _read_identities(identities) if identities is not None else None
    paths = expand_photos(photos) if photos else list(labels or {})
    existing = load_gallery(gallery) if gallery.exists() else None
    model = _model_of(existing, model, gallery)
    face_model = open_model(model, preprocessing=preprocessing)
    if existing is not None:
        check_model(existing, face_model.card.stamp(), gallery)  # before any photo is read
    base = existing.weighting if existing is not None else Weighting()
    chosen = Weighting(
        method=weighting or base.method,  # type: ignore[arg-type]  # checked by Weighting
        transform=quality_weight or base.transform,  # type: ignore[arg-type]
        temperature=base.temperature if temperature is None else temperature,
    )
    names = {p: _identity_of(p, labels, identities) for p in paths}
    faces = faces_of(paths, aligned=aligned, progress=progress, detector=detector, what="enroll")
    report_failures(faces)
    if len(faces) == 0:
        raise RunError(f"no face to enroll in {len(paths)} file(s); {gallery} unchanged")
    settings = {"aligned": True} if aligned else detector_options(detector).to_dict()
    if existing is not None:
        typer.echo(f"appending to {gallery} ({existing.summary()})", err=True)
    result = enroll(
        face_model,
        faces,
        [names[path] for path, _ in faces.sources],
        gallery=existing,
        weighting=chosen,
        detector=settings,
        where=str(gallery),
    )
    for file, reason in result.skipped:
        typer.echo(f"skipped {file}: {reason}", err=True)
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    if not result.added and existing is not None and not result.notes:
        typer.echo(f"nothing new to enroll; {gallery} unchanged ({existing.summary()})")
        return
    if Path(model).exists():  # `search` may then omit --model (it checks the file's SHA-256 against the stamp)
        result.gallery.model_file = str(Path(model).resolve())
    save_gallery(result.gallery, gallery)
    typer.echo(
        f"enrolled {len(result.added)} image(s) ({len(result.new_identities)} new identities) into {gallery}: "
        f"{result.gallery.summary()}"
    )


@app.command("search")
def search(
    probes: Annotated[list[Path], typer.Argument(help="Probe image files or folders (searched recursively).")],
    gallery: GalleryOption,
    model: GalleryModelOption = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Identities listed per probe face (1-1000).")] = 5,
    threshold: ThresholdOption = None,
    index: Annotated[
        str,
        typer.Option(
            help="exact (NumPy, default), faiss (FAISS IndexFlatIP, exact) or faiss-hnsw (FAISS HNSW, approximate, "
            "for very large galleries); FAISS needs pip install 'qualiface[faiss]'."
        ),
    ] = "exact",
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON on stdout.")] = False,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the results to a .csv (one row per candidate) or .json.")
    ] = None,
    overwrite: OverwriteOption = False,
    aligned: AlignedOption = False,
    all_faces: AllFacesOption = False,
    progress: ProgressOption = True,
    preprocessing: PreprocessingOption = None,
    detector: DetectorOption = None,
) -> None:
    """Search probe faces in a gallery: the top-k identities with similarity and confidence, and a decision on the
    best one (match / non-match / abstain below the model's quality floor / undecided without a threshold)."""
    from qualiface.atomic import atomic_path
    from qualiface.decisions import DecisionPolicy, parse_threshold
    from qualiface.gallery import GalleryIndex, check_model, load_gallery, search_faces
    from qualiface.gallery.identify import check_top_k

    check_top_k(top_k)
    chosen = parse_threshold(threshold)
    if out is not None:
        if out.suffix.lower() not in (".csv", ".json"):
            raise InputError(f"--out {out}: use a .csv or .json file")
        refuse_existing_file(out, overwrite)
    stored = load_gallery(gallery)
    face_model = open_model(_model_of(stored, model, gallery), preprocessing=preprocessing)
    check_model(stored, face_model.card.stamp(), gallery)
    if not stored.n_identities:
        raise InputError(f"{gallery}: the gallery holds no identity")
    searcher = GalleryIndex(stored.templates, index)  # type: ignore[arg-type]  # checked by GalleryIndex
    policy = DecisionPolicy.from_model(face_model, threshold=chosen)
    faces = faces_of(probes, aligned=aligned, all_faces=all_faces, progress=progress, detector=detector, what="search")
    results = search_faces(face_model, stored, faces, k=top_k, policy=policy, index=searcher)
    report_failures(faces)
    if not results:
        raise RunError(f"no probe face found in {len(faces.failures)} file(s); nothing written")
    document = {
        "model": face_model.card.stamp(),
        "gallery": {"file": str(gallery), "identities": stored.n_identities, "images": stored.n_images},
        "policy": policy.describe(),
        "top_k": top_k,
        "index": index,
        "results": [r.to_dict() for r in results],
        "failures": [{"file": str(f.path), "reason": f.reason, "message": f.message} for f in faces.failures],
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        text = _csv(results) if out.suffix.lower() == ".csv" else json.dumps(document, indent=2, allow_nan=False) + "\n"
        with atomic_path(out) as tmp:
            tmp.write_text(text)
        typer.echo(f"wrote {len(results)} probe face(s) to {out}", err=True)
    if as_json:
        typer.echo(json.dumps(document, indent=2, allow_nan=False))
    elif out is None:
        for result in results:
            typer.echo(_line(result))


def _line(result: Any) -> str:
    """``file[#face]  decision identity (similarity, confidence)  | 2. name 0.41 | ...`` for people."""
    name = result.file if result.face_index == 0 else f"{result.file}#{result.face_index}"
    d = result.decision
    best = result.candidates[0]
    conf = "" if d["confidence"] is None else f", confidence {d['confidence']:.3f}"
    head = f"{name}  {d['decision']}: {best.identity} (similarity {best.similarity:.4f}{conf})"
    rest = " | ".join(f"{c.rank}. {c.identity} {c.similarity:.4f}" for c in result.candidates[1:])
    why = f"  [{'; '.join(d['reasons'])}]" if d["reasons"] else ""
    return head + (f"  | {rest}" if rest else "") + why


def _csv(results: list[Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["file", "face_index", "rank", "identity", "similarity", "confidence", "decision", "threshold", "quality"]
    )
    for r in results:
        for c in r.candidates:
            writer.writerow(
                [
                    r.file,
                    r.face_index,
                    c.rank,
                    c.identity,
                    f"{c.similarity:.6f}",
                    "" if c.confidence is None else f"{c.confidence:.6f}",
                    r.decision["decision"] if c.rank == 1 else "",
                    "" if r.decision["threshold"] is None else f"{r.decision['threshold']:.6f}",
                    "" if r.quality is None else f"{r.quality:.6g}",
                ]
            )
    return buffer.getvalue()


def _read_identities(path: Path) -> dict[Path, str]:
    """``file -> identity`` of a CSV with ``file`` and ``identity`` columns (paths relative to its folder)."""
    from qualiface.gallery.enroll import check_identity

    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason})") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = {c.strip().lower(): c for c in reader.fieldnames or []}
    if "file" not in columns or "identity" not in columns:
        raise InputError(f"{path}: needs a header with columns file,identity (got {', '.join(columns) or 'none'})")
    out: dict[Path, str] = {}
    for line, row in enumerate(reader, start=2):
        file, name = (row.get(columns["file"]) or "").strip(), row.get(columns["identity"]) or ""
        if not file:
            raise InputError(f"{path}:{line}: empty file")
        key = (path.parent / file).resolve()
        value = check_identity(name, f"{path}:{line}")
        if out.get(key, value) != value:
            raise InputError(f"{path}:{line}: {file} is listed with two identities ({out[key]!r}, {value!r})")
        out[key] = value
    if not out:
        raise InputError(f"{path}: no rows")
    return out


def _identity_of(photo: Path, labels: dict[Path, str] | None, source: Path | None) -> str:
    """The identity of a photo: its row of ``labels`` (the --identities CSV), else its folder's name."""
    from qualiface.gallery.enroll import check_identity

    if labels is None:
        return check_identity(photo.absolute().parent.name, f"{photo} (identity from its folder)")
    name = labels.get(photo.resolve())
    if name is None:
        raise InputError(f"{source}: no identity for {photo}; add a row '{photo},<identity>'")
    return name
