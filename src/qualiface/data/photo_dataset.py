"""From photos to datasets: aligned ``size x size`` crops in a folder tree, or a RecordIO pack, with a report.

:func:`align_photos` is ``qualiface align`` and ``qualiface data pack --detect``: every photo goes through the
library's detection and alignment (:func:`qualiface.use.load_faces` with :class:`DetectorOptions`; the crop is the
ArcFace template of :func:`qualiface.data.align.arcface_template`), and every photo gets one row in the report
(:class:`AlignReport`, written as a CSV beside the output): ``ok``, ``skipped`` (its output exists) or ``failed``
(no face, unreadable, ...), nothing dropped silently.

Two outputs, chosen by ``out``:

* **a folder**: the crops mirror the input tree (paths relative to each input folder; a single file lands in
  ``out``), as ``<stem>.<format>``; with ``all_faces`` the other faces of a photo follow as ``<stem>_1``,
  ``<stem>_2``, ... (the largest face keeps ``<stem>``). Each crop is written atomically (a temporary file renamed
  over the target, the extra faces before ``<stem>``), so a killed run leaves only whole images and a re-run
  resumes: a photo whose ``<stem>`` crop exists is skipped (``overwrite`` re-aligns it). The report is
  ``out/align_report.csv``.
* **a ``.rec`` file**: a RecordIO pack in the layout of ``qualiface data pack``
  (:class:`~qualiface.data.recordio.PackWriter`): the identity of a photo is the folder directly above it;
  identities with at least one face get classes ``0..C-1`` in sorted name order. The report is
  ``<name>.align_report.csv`` beside the ``.rec``; an existing ``.rec`` is refused unless ``overwrite``.

Crops are PNG by default (lossless: the crop is exactly what the alignment produced, so quality scores are not
shifted by a second generation of compression artefacts, and the bytes do not depend on the encoder's settings);
``image_format="jpg"`` writes JPEG at quality 95 (the InsightFace packs' setting, about a third of the size).

Several worker processes (``workers``) each build their own detector from the picklable :class:`DetectorOptions`;
the report keeps the input order whatever the number of workers, and the outputs are the same.
"""

from __future__ import annotations

import csv
import glob
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qualiface.atomic import atomic_path
from qualiface.data.align import arcface_template
from qualiface.data.photo_workers import IMAGE_FORMATS, Job, Status, Task, run_tasks
from qualiface.data.recordio.pack import IMAGE_EXTENSIONS, PackSummary, PackWriter, list_folder
from qualiface.detect.options import DetectorOptions
from qualiface.errors import InputError, RunError

__all__ = [
    "IMAGE_FORMATS",
    "REPORT_COLUMNS",
    "AlignReport",
    "AlignRow",
    "NotAlignedError",
    "Unaligned",
    "align_photos",
    "default_workers",
    "find_unaligned",
    "pack_photos",
    "report_path_for",
]

#: The columns of the report CSV, in order.
REPORT_COLUMNS = ("file", "status", "reason", "detail", "faces", "found", "outputs", "label")
#: The report's name in an output folder.
FOLDER_REPORT = "align_report.csv"


class NotAlignedError(InputError):
    """A folder handed to ``data pack`` that holds images other than aligned ``size x size`` crops; the message
    says how many, gives one example and how to make the crops."""


@dataclass(frozen=True)
class AlignRow:
    """What happened to one photo.

    Attributes:
        file: the photo.
        status: ``ok`` (aligned and written), ``skipped`` (its output existed) or ``failed`` (no crop).
        reason: why it failed or was skipped: ``no_face``, ``unreadable``, ``detector_error`` (from
            :class:`~qualiface.detect.FaceFailure`) or ``output_exists``; empty when ``ok``.
        detail: the one-line message behind ``reason``.
        faces: faces the detector found in the photo (``None`` when skipped and unknown).
        found: how the face was found: ``detected``, or the retry step that found it (e.g. ``retry:pad``);
            empty when no face was found or the photo was skipped without an earlier report.
        outputs: the crops written: paths relative to the output folder, or ``<name>.rec#<key>`` records.
        label: the class of the photo's records in a ``.rec`` (``None`` for a folder output or a failed photo).
    """

    file: Path
    status: Status
    reason: str = ""
    detail: str = ""
    faces: int | None = None
    found: str = ""
    outputs: tuple[str, ...] = ()
    label: int | None = None

    def to_csv(self) -> list[str]:
        """The row as the report's CSV fields (:data:`REPORT_COLUMNS`)."""
        faces = "" if self.faces is None else str(self.faces)
        label = "" if self.label is None else str(self.label)
        return [str(self.file), self.status, self.reason, self.detail, faces, self.found, ";".join(self.outputs), label]


@dataclass
class AlignReport:
    """The outcome of :func:`align_photos`: one row per photo in input order and where everything went.

    Attributes:
        out: the output folder or ``.rec``.
        report_path: the report CSV written beside it.
        rows: one :class:`AlignRow` per photo (folder output: the inputs' order; ``.rec``: grouped by identity).
        size: the crop side.
        image_format: ``png`` or ``jpg``.
        workers: the worker processes used.
        pack: what the ``.rec`` holds (``None`` for a folder output).
    """

    out: Path
    report_path: Path
    rows: list[AlignRow] = field(default_factory=list)
    size: int = 112
    image_format: str = "png"
    workers: int = 1
    pack: PackSummary | None = None

    def count(self, status: Status) -> int:
        """Photos with this status."""
        return sum(row.status == status for row in self.rows)

    @property
    def crops_written(self) -> int:
        """Crops written by this run (extra faces included)."""
        return sum(len(row.outputs) for row in self.rows if row.status == "ok")

    def summary(self) -> str:
        """One line: photos, aligned, skipped, failed by reason, where the crops and the report are."""
        reasons: dict[str, int] = {}
        for row in self.rows:
            if row.status == "failed":
                reasons[row.reason] = reasons.get(row.reason, 0) + 1
        failed = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
        identities = "" if self.pack is None else f" of {self.pack.num_classes} identities"
        return (
            f"{len(self.rows)} photos: {self.count('ok')} aligned ({self.crops_written} crops{identities} written "
            f"to {self.out}), "
            f"{self.count('skipped')} skipped (output exists), {self.count('failed')} failed"
            + (f" ({failed})" if failed else "")
            + f"; report: {self.report_path}"
        )


def default_workers() -> int:
    """``min(4, usable CPU cores)``: detection is CPU-bound, and more processes than cores only add memory."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def report_path_for(out: str | os.PathLike[str]) -> Path:
    """Where :func:`align_photos` writes its report: ``out/align_report.csv`` or ``<name>.align_report.csv``."""
    out = Path(out)
    return out.with_name(out.stem + ".align_report.csv") if out.suffix == ".rec" else out / FOLDER_REPORT


# --- planning --------------------------------------------------------------------------------------------------


def _photos(inputs: Sequence[str | os.PathLike[str]]) -> list[tuple[Path, Path]]:
    """``(photo, path relative to its input)`` for every input, folders expanded recursively (sorted)."""
    from qualiface.use import expand_photos

    found: list[tuple[Path, Path]] = []
    if not inputs:
        raise InputError("no photos given")
    for item in inputs:
        path = Path(item)
        try:
            files = expand_photos([path])
        except FileNotFoundError as exc:
            raise InputError(str(exc)) from None
        found.extend((f, f.relative_to(path) if path.is_dir() else Path(f.name)) for f in files)
    return found


def _plan_folder(photos: list[tuple[Path, Path]], out: Path, suffix: str, all_faces: bool) -> list[Path]:
    """The output stem of each photo; two photos that would write the same crop are refused."""
    stems = [out / rel.with_suffix("") for _, rel in photos]
    owner: dict[Path, Path] = {}
    for (photo, _), stem in zip(photos, stems, strict=True):
        if stem in owner:
            raise InputError(
                f"{owner[stem]} and {photo} would both be written to {stem}{suffix} (each input folder's tree is "
                "mirrored from the top of --out: give their common parent folder instead, or rename one)"
            )
        owner[stem] = photo
    sources = {photo.resolve() for photo, _ in photos}
    for stem, photo in owner.items():
        if Path(f"{stem}{suffix}").resolve() in sources:
            raise InputError(
                f"{photo}: its crop would be written over the photo {stem}{suffix}; choose an --out folder apart "
                "from the photos"
            )
    if all_faces:  # <stem>_1 of one photo must not be another photo's crop
        for stem, photo in owner.items():
            match = re.fullmatch(r"(.+)_\d+", stem.name)
            base = stem.with_name(match.group(1)) if match else None
            if base is not None and base in owner:
                raise InputError(
                    f"{photo}: its crop {stem.name}{suffix} is also the name of an extra face of {owner[base]} "
                    f"under --all-faces; rename one or align without --all-faces"
                )
    return stems


def _check_out_folder(inputs: Sequence[str | os.PathLike[str]], out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder (a .rec name writes a RecordIO pack)")
    resolved = out.resolve()
    for item in inputs:
        folder = Path(item).resolve()
        if Path(item).is_dir() and resolved.is_relative_to(folder):
            raise InputError(
                f"--out {out} lies inside the input folder {item}: a re-run would take the crops for photos; "
                "choose a folder outside it"
            )


def _previous_rows(report: Path) -> dict[str, dict[str, str]]:
    """The rows of an earlier report by file (what a resumed run says about the photos it skips)."""
    if not report.is_file():
        return {}
    try:
        with report.open(newline="", encoding="utf-8") as fh:
            return {row["file"]: row for row in csv.DictReader(fh) if row.get("file")}
    except (OSError, UnicodeDecodeError, csv.Error, KeyError):
        return {}  # an unreadable old report only loses its details


def _skipped_row(photo: Path, stem: Path, out: Path, suffix: str, previous: dict[str, dict[str, str]]) -> AlignRow:
    """The row of a photo whose crop exists: the crops found (``<stem>`` and any ``<stem>_<k>``), and the faces
    and how they were found from the earlier report when there is one."""
    earlier = previous.get(str(photo), {})
    extra = re.compile(re.escape(stem.name) + r"_(\d+)" + re.escape(suffix))
    numbered = [
        (int(m.group(1)), p)
        for p in stem.parent.glob(f"{glob.escape(stem.name)}_*{suffix}")
        if (m := extra.fullmatch(p.name))
    ]
    crops = [Path(f"{stem}{suffix}")] + [p for _, p in sorted(numbered)]
    faces = earlier.get("faces", "")
    return AlignRow(
        photo,
        "skipped",
        "output_exists",
        f"{stem}{suffix} exists (an earlier run)",
        int(faces) if faces.isdigit() else None,
        earlier.get("found", ""),
        tuple(str(p.relative_to(out)) for p in crops),
    )


# --- the public functions ---------------------------------------------------------------------------------------


def align_photos(
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    options: DetectorOptions | None = None,
    size: int = 112,
    workers: int | None = None,
    all_faces: bool = False,
    image_format: str = "png",
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> AlignReport:
    """Align the faces of photos into ``size x size`` crops: a folder tree or a RecordIO pack (module docstring).

    Args:
        inputs: photo files and folders (folders are searched recursively for image files).
        out: a folder (crops mirroring the inputs' trees; created) or a ``name.rec`` (a RecordIO pack, identities
            from the folder above each photo).
        options: how faces are found (default :class:`DetectorOptions` ``()``).
        size: crop side, a multiple of 112 or 128 (the ArcFace template, scaled).
        workers: worker processes (default :func:`default_workers`); 1 runs in this process.
        all_faces: write every face of a photo (``<stem>_1``, ...), not only the largest.
        image_format: ``png`` (lossless, the default) or ``jpg`` (quality 95).
        overwrite: folder: align again photos whose crop exists (default: skip them, so a run resumes);
            ``.rec``: replace an existing pack.
        progress: called as ``progress(done, total)`` after each photo (skipped photos count at once).

    Returns:
        The :class:`AlignReport` (also written as CSV at :attr:`AlignReport.report_path`).

    Raises:
        InputError: a missing input, a folder without images, two photos that would write the same crop, an
            output folder inside an input folder, a bad ``size``, ``workers`` or ``image_format``.
        FileExistsError: ``out`` is an existing ``.rec`` and ``overwrite`` is false.
        RunError: (``.rec``) no photo gave a face, so there is nothing to pack (the report is written).
    """
    out = Path(out)
    options = options if options is not None else DetectorOptions()
    if image_format not in IMAGE_FORMATS:
        raise InputError(f"image format {image_format!r} is not one of {', '.join(IMAGE_FORMATS)}")
    try:
        arcface_template(size)
    except ValueError as exc:
        raise InputError(f"size {size}: {exc}") from None
    count: object = default_workers() if workers is None else workers  # whatever the caller passed
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InputError(f"workers must be an integer >= 1, got {workers!r}")
    workers = count
    to_rec = out.suffix == ".rec"
    if to_rec and out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (pass --overwrite to replace it)")
    if not to_rec:
        _check_out_folder(inputs, out)
    photos = _photos(inputs)
    suffix = IMAGE_FORMATS[image_format][0]
    report = AlignReport(out, report_path_for(out), size=size, image_format=image_format)
    threads = 1 if workers > 1 else None
    job = Job(options, size, all_faces, image_format, write=not to_rec, threads=threads)
    if to_rec:
        _align_to_rec(photos, out, job, workers, overwrite, report, progress)
    else:
        _align_to_folder(photos, out, job, workers, overwrite, report, progress, suffix)
    return report


def _align_to_folder(
    photos: list[tuple[Path, Path]],
    out: Path,
    job: Job,
    workers: int,
    overwrite: bool,
    report: AlignReport,
    progress: Callable[[int, int], None] | None,
    suffix: str,
) -> None:
    stems = _plan_folder(photos, out, suffix, job.all_faces)
    out.mkdir(parents=True, exist_ok=True)
    previous = _previous_rows(report.report_path)
    rows: list[AlignRow | None] = [None] * len(photos)
    tasks = []
    for index, ((photo, _), stem) in enumerate(zip(photos, stems, strict=True)):
        if not overwrite and Path(f"{stem}{suffix}").exists():
            rows[index] = _skipped_row(photo, stem, out, suffix, previous)
        else:
            tasks.append(Task(index, photo, stem))
    total, done = len(photos), len(photos) - len(tasks)
    if progress is not None and done:
        progress(done, total)
    report.workers = min(workers, max(1, len(tasks)))
    try:
        for task, result in zip(tasks, run_tasks(tasks, job, report.workers), strict=True):
            names = tuple(str(Path(name).relative_to(out)) for name in result.names)
            rows[task.index] = AlignRow(
                task.path, result.status, result.reason, result.detail, result.faces, result.found, names
            )
            done += 1
            if progress is not None:
                progress(done, total)
    finally:  # an interrupted run still reports what it did (the unfinished photos are not listed)
        report.rows = [row for row in rows if row is not None]
        _write_report(report)


def _align_to_rec(
    photos: list[tuple[Path, Path]],
    out: Path,
    job: Job,
    workers: int,
    overwrite: bool,
    report: AlignReport,
    progress: Callable[[int, int], None] | None,
) -> None:
    ordered = sorted((photo.parent.name, str(photo), photo) for photo, _ in photos)
    tasks = [Task(i, photo, None) for i, (_, _, photo) in enumerate(ordered)]
    report.workers = min(workers, len(tasks))
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with PackWriter(out, overwrite=overwrite) as writer:
            for (identity, _, photo), result in zip(ordered, run_tasks(tasks, job, report.workers), strict=True):
                if result.status == "ok":
                    keys, label = [], 0
                    for payload in result.payloads:
                        key, label = writer.add(identity, payload, (job.size, job.size))
                        keys.append(f"{out.name}#{key}")
                    row = AlignRow(photo, "ok", "", "", result.faces, result.found, tuple(keys), label)
                else:
                    row = AlignRow(photo, result.status, result.reason, result.detail, result.faces, result.found)
                report.rows.append(row)
                if progress is not None:
                    progress(len(report.rows), len(tasks))
            if writer.num_images == 0:
                raise RunError(
                    f"no face found in any of the {len(tasks)} photos; {out} not written (report: {report.report_path})"
                )
        report.pack = writer.summary
    finally:
        _write_report(report)


def _write_report(report: AlignReport) -> None:
    report.report_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(report.report_path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(REPORT_COLUMNS)
        writer.writerows(row.to_csv() for row in report.rows)


@dataclass(frozen=True)
class Unaligned:
    """What :func:`find_unaligned` found: ``count`` images that are not aligned crops, the first of them
    (``example``) and what it is (``what``: its size, or its format), and ``sizes``: the distinct sizes of those
    images (up to 8), which tell a folder of crops at another size from a folder of photos."""

    count: int = 0
    example: Path | None = None
    what: str = ""
    sizes: frozenset[tuple[int, int]] = frozenset()

    def message(self, root: str | os.PathLike[str], size: int) -> str:
        """The one line ``data pack`` refuses the folder with: what it holds and how to make the crops."""
        plural = self.count > 1
        hint = f"run `qualiface align {root} --out aligned/` first, or pass --detect"
        if len(self.sizes) == 1 and all(w == h for w, h in self.sizes):
            (side, _), *_ = self.sizes
            hint += f" (or --size {side} if they are aligned {side}x{side} crops)"
        return (
            f"{root} holds {self.count} image{'s' if plural else ''} that {'are' if plural else 'is'} not "
            f"{size}x{size} aligned crops (e.g. {self.example} is {self.what}): {hint}"
        )


def find_unaligned(root: str | os.PathLike[str], size: int = 112) -> Unaligned:
    """The images of an identity folder (``root/<identity>/<image>``) that are not aligned ``size x size`` crops
    ``data pack`` can store as they are (:class:`Unaligned`; ``count == 0`` when all are).

    An image counts when its header says another size, or when it is a photo format the pack does not hold verbatim
    (PGM, TIFF, WebP: only JPEG, PNG and BMP are). Only headers are read.

    Raises:
        InputError: a folder that cannot be listed.
        ImageDecodeError: a file that is not a readable image (naming it).
    """
    from qualiface.data.recordio.pack import is_identity_folder
    from qualiface.use import IMAGE_SUFFIXES

    count, example, what = 0, None, ""
    sizes: set[tuple[int, int]] = set()

    def is_photo(path: Path) -> bool:
        return not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()

    for folder in list_folder(Path(root), is_identity_folder):
        for file in list_folder(folder, is_photo):
            width, height = _header_size(file)
            if (width, height) != (size, size):
                description = f"{width}x{height}"
                if len(sizes) < 8:
                    sizes.add((width, height))
            elif file.suffix.lower() not in IMAGE_EXTENSIONS:
                description = f"a {file.suffix.lstrip('.').upper()} file (packs hold JPEG, PNG or BMP)"
                sizes.add((-1, -2))  # a format to convert: not a folder of crops at another size
            else:
                continue
            count += 1
            if example is None:
                example, what = file, description
    return Unaligned(count, example, what, frozenset(sizes))


def _header_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from an image file's header (Pillow reads the header only)."""
    from PIL import Image

    from qualiface.imaging import IMAGE_FORMATS as PIL_FORMATS
    from qualiface.imaging import ImageDecodeError

    try:
        with Image.open(path, formats=list(PIL_FORMATS)) as image:
            return int(image.size[0]), int(image.size[1])
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(str(path), f"not a readable image ({exc})") from None


def pack_photos(
    image_folder: str | os.PathLike[str],
    rec_path: str | os.PathLike[str],
    *,
    size: int = 112,
    detect: bool = False,
    overwrite: bool = False,
    options: DetectorOptions | None = None,
    workers: int | None = None,
    image_format: str = "png",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[PackSummary, AlignReport | None]:
    """``qualiface data pack``: an identity folder into a RecordIO pack, photos detected and aligned on request.

    When every image is an aligned ``size x size`` crop (:func:`find_unaligned`), the bytes are packed as they are
    (:func:`~qualiface.data.recordio.pack_image_folder`). Otherwise, with ``detect`` the folder goes through
    :func:`align_photos` into ``rec_path`` (the same pipeline as ``qualiface align FOLDER --out x.rec``), and
    without it :class:`NotAlignedError` says what is needed and how to make it.

    Returns:
        The pack's summary, and the alignment report when the photos were aligned.

    Raises:
        NotAlignedError: images that are not aligned crops and ``detect`` is false.
        FileExistsError: ``rec_path`` exists and ``overwrite`` is false.
    """
    from qualiface.data.recordio.pack import pack_image_folder

    root, rec = Path(image_folder), Path(rec_path)
    if rec.suffix != ".rec":
        raise InputError(f"{rec}: the pack's name must end in .rec")
    if rec.exists() and not overwrite:
        raise FileExistsError(f"{rec} exists (pass --overwrite to replace it)")
    unaligned = find_unaligned(root, size)
    if unaligned.count == 0:
        return pack_image_folder(root, rec.parent, overwrite=overwrite, rec_name=rec.name), None
    if not detect:
        raise NotAlignedError(unaligned.message(root, size))
    report = align_photos(
        [root],
        rec,
        options=options,
        size=size,
        workers=workers,
        image_format=image_format,
        overwrite=overwrite,
        progress=progress,
    )
    assert report.pack is not None
    return report.pack, report
