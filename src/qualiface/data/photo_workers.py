"""The per-photo work of :func:`qualiface.data.photo_dataset.align_photos`: detect, align, encode, write.

One :class:`Aligner` (one detector, built from the picklable :class:`~qualiface.detect.options.DetectorOptions`)
handles one photo at a time; :func:`run_tasks` runs it in this process or in a pool of worker processes, each with
its own aligner, and yields the results in the tasks' order with a bounded number in flight.
"""

from __future__ import annotations

import io
import itertools
import multiprocessing
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from qualiface.atomic import atomic_path
from qualiface.detect.options import DetectorOptions

Status = Literal["ok", "skipped", "failed"]

#: Output image formats: name -> (file suffix, Pillow format, Pillow save options).
IMAGE_FORMATS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "png": (".png", "PNG", {}),
    "jpg": (".jpg", "JPEG", {"quality": 95}),
}


@dataclass(frozen=True)
class Task:
    """One photo to align: ``index`` in the report, ``stem`` the output path without suffix (folder output)."""

    index: int
    path: Path
    stem: Path | None


@dataclass(frozen=True)
class Job:
    """What every worker needs (picklable)."""

    options: DetectorOptions
    size: int
    all_faces: bool
    image_format: str
    write: bool
    threads: int | None


@dataclass(frozen=True)
class Result:
    """A photo's outcome: ``names`` the files written (folder output), ``payloads`` the encoded crops (``.rec``)."""

    status: Status
    reason: str
    detail: str
    faces: int
    found: str
    names: tuple[str, ...]
    payloads: tuple[bytes, ...]


class Aligner:
    """Detect, align, encode (and write, for a folder output) one photo at a time with one detector."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.detector = job.options.create()
        if job.threads is not None and getattr(self.detector, "threads", 0) is None:
            self.detector.threads = job.threads  # one thread per worker process: the processes are the parallelism
        self.suffix, self.pil_format, self.save_options = IMAGE_FORMATS[job.image_format]

    def __call__(self, task: Task) -> Result:
        from qualiface.use import load_faces

        job = self.job
        faces = load_faces([task.path], all_faces=job.all_faces, detector=self.detector, detector_options=job.options)
        if len(faces) == 0:
            failure = faces.failures[0] if faces.failures else None
            reason, detail = (failure.reason, failure.message) if failure else ("no_face", f"{task.path}: no face")
            return Result("failed", reason, detail, 0, "", (), ())
        found_count = dict(faces.multiple).get(task.path, len(faces))
        retried = dict(getattr(faces, "retried", []))
        found = f"retry:{retried[task.path]}" if task.path in retried else "detected"
        order = list(range(len(faces)))
        if job.all_faces:  # the largest face keeps <stem>, the others follow in the detector's order
            largest = max(order, key=lambda i: _area(faces.detections[i]))
            order = [largest] + [i for i in order if i != largest]
        crops = self._crops(task.path, faces, order)
        payloads = tuple(self._encode(crop) for crop in crops)
        names: tuple[str, ...] = ()
        if job.write:
            assert task.stem is not None
            targets = [task.stem] + [task.stem.with_name(f"{task.stem.name}_{k}") for k in range(1, len(crops))]
            targets = [Path(f"{t}{self.suffix}") for t in targets]  # not with_suffix: a stem may hold dots
            task.stem.parent.mkdir(parents=True, exist_ok=True)
            for target, payload in list(zip(targets, payloads, strict=True))[::-1]:  # <stem> last: it marks done
                with atomic_path(target) as tmp:
                    tmp.write_bytes(payload)
            names, payloads = tuple(str(t) for t in targets), ()
        return Result("ok", "", "", found_count, found, names, payloads)

    def _crops(self, path: Path, faces: Any, order: list[int]) -> list[np.ndarray]:
        if self.job.size == faces.images.shape[1]:
            return [faces.images[i] for i in order]
        from qualiface.data.image_folder import read_image
        from qualiface.detect.faces import align_detection

        image = read_image(path)  # the detections are in the photo's pixels: align again at the wanted size
        return [align_detection(image, faces.detections[i].landmarks, self.job.size) for i in order]

    def _encode(self, crop: np.ndarray) -> bytes:
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(crop)).save(buffer, format=self.pil_format, **self.save_options)
        return buffer.getvalue()


def _area(detection: Any) -> float:
    return 0.0 if detection is None else float(detection.area)


#: Photos in flight per worker process (submitted, or done and waiting for the photos before them).
WINDOW = 16
_WORKER: dict[str, Aligner] = {}  # the aligner of a worker process (its own detector), set by _init_worker


def _init_worker(job: Job) -> None:
    _WORKER["aligner"] = Aligner(job)


def _run_in_worker(task: Task) -> Result:
    return _WORKER["aligner"](task)


def run_tasks(tasks: list[Task], job: Job, workers: int) -> Iterator[Result]:
    """The results of ``tasks`` in order, in this process (``workers == 1``) or in a pool of processes."""
    if workers <= 1 or len(tasks) <= 1:
        aligner = Aligner(job)
        yield from (aligner(task) for task in tasks)
        return
    methods = multiprocessing.get_all_start_methods()
    # fork where there is one: the workers start without importing the package again (as torch's DataLoader does);
    # nothing in a worker uses the parent's threads (each builds its own onnxruntime session)
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(job,))
    window: deque[Future[Result]] = deque()  # at most WINDOW x workers results wait, whatever the input's size
    pending = iter(tasks)
    try:
        for task in itertools.islice(pending, WINDOW * workers):
            window.append(pool.submit(_run_in_worker, task))
        while window:
            result = window.popleft().result()
            for task in itertools.islice(pending, 1):
                window.append(pool.submit(_run_in_worker, task))
            yield result
    finally:  # an interrupted run does not wait for the photos not started yet
        pool.shutdown(wait=True, cancel_futures=True)
