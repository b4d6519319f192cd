"""Training throughput: the trainer's step against a bare PyTorch loop, and the data pipeline per worker.

Usage::

    python bench/train.py                                   # mobilefacenet + iresnet50, fp32 / fp32+cl / bf16
    python bench/train.py --backbones mobilefacenet --precisions fp32 --rounds 2 --steps 2 --parts step
    python bench/train.py --parts data jpeg --batches 40    # only the input pipeline and the JPEG decoders
    python bench/train.py --compile                         # torch.compile both the trainer and the bare loop
    python bench/train.py --parts jpeg   # Pillow vs simplejpeg (the pipeline decodes JPEG with simplejpeg)
    python bench/train.py --device cuda --parts step --precisions fp32 bf16 fp16 --batch 128   # on a GPU

Three parts, each configuration in its own subprocess (its peak memory and thread state are its own):

``step``
    A ``qualiface.train.Trainer`` built from a config (head ``arcface`` over ``--classes`` class centres,
    SGD 0.1 / momentum 0.9 / weight decay 5e-4, poly schedule, gradient clip 5: the defaults) times
    ``trainer.train_step(images, labels)`` on one fixed, pre-made batch: no data loading, no logging. In the same
    process, on a copy of the same backbone (same weights, same memory format) and the same batch, the **bare
    loop** runs ``backbone(x)`` → ``F.linear(F.normalize(emb), F.normalize(W))`` + the ArcFace margin (the usual
    autograd recipe) → cross-entropy of 64·logits → ``backward`` → ``SGD.step`` (same hyper-parameters), under the
    same autocast and ``channels_last`` (``fp32`` runs NCHW; bf16 the trainer's default, NHWC). After ``--warmup`` steps
    of each, ``--rounds`` rounds of ``--steps`` steps alternate between the two (the order flips every round);
    images/s is the batch over the median step time, "trainer / bare" the ratio of median step times (1.00 = no
    overhead; the goal is ≤ 1.1), "best-step ratio" that of the fastest steps (the figure least disturbed by other
    work on a busy machine). ``fp32+cl`` runs float32 with ``train.channels_last: true`` (the trainer's CPU default).
    Peak MiB = the highest
    resident size during that path's timed steps minus the resident size after importing torch. With
    ``--e2e-workers K`` (default 2) the trainer then also runs a plain ``for images, labels in trainer._loader():
    trainer.train_step(...)`` loop with K workers (the loop of ``Trainer.run`` without its logging), which shows
    whether the input pipeline keeps up with training.
``data``
    The training ``DataLoader`` exactly as the trainer builds it (``build_train_samples`` + ``ShardedBatchSampler``,
    ``prefetch_factor=4``, one torch thread per worker) for 0, 1 and 2 workers, over (a) the synthetic source
    (procedural rendering) and (b) a RecordIO pack of real 112x112 JPEG faces (``../shared/data/glint360k-sample``,
    packed into a temporary folder with ``pack_image_folder`` unless ``--rec`` names an existing ``train.rec``),
    with ``augment`` ``flip`` and ``adaface``. The first batch of every worker (start-up) is timed separately;
    images/s is over the next ``--batches`` batches (keep it well above the 4 batches a worker prefetches).
    "per worker" divides by the worker count (0 workers: the main process, run with one torch thread, counts
    as one).
``jpeg``
    Single-threaded decode of the same JPEG payloads by Pillow, by ``qualiface.data.recordio.decode_image`` (what the
    pipeline uses: simplejpeg for JPEG) and by ``simplejpeg`` directly, plus the cost of the
    transforms (``to_tensor`` + ``training_transform``) per image, so the per-sample budget is visible.

``--device cuda`` runs the ``step`` part on the first GPU (``fp16`` then runs with the trainer's GradScaler, and
the bare loop with its own): every timed step ends with ``torch.cuda.synchronize()``, and the peak MiB is
``torch.cuda.max_memory_allocated`` during the timed steps. The ``data`` and ``jpeg`` parts always run on the CPU.
``bench/gpu.sh`` runs this with the CUDA checks of the test suite.

Results: a Markdown table on stdout and ``bench/results/train_<date>.json`` (command, date, CPU model, cores,
torch version, whether the CPU has AMX / AVX512-BF16, every row).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _measure import best_of, cpu_model, reset_peak, rss_kib

DEFAULT_BATCH = {"mobilefacenet": 64, "iresnet50": 32, "vit_t": 32}
SHARED_FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "glint360k-sample" / "images"


# ------------------------------------------------------------------------------------------------ helpers


def _data_cfg(spec: dict[str, Any]) -> dict[str, Any]:
    """The ``data`` section: synthetic (enough samples for several batches) or the RecordIO pack."""
    batch = spec["batch"]
    data: dict[str, Any] = {"batch_size": batch, "augment": spec.get("augment", "flip")}
    if spec.get("source", "synthetic") == "recordio":
        data.update(source="recordio", path=spec["rec"])
    else:
        data.update(source="synthetic", synthetic={"num_identities": 64, "images_per_identity": max(16, batch // 4)})
    return data


# ------------------------------------------------------------------------------------------------ part 1: step


def _bare_step(
    backbone: Any, weight: Any, optimizer: Any, images: Any, labels: Any, autocast_dtype: Any
) -> Callable[[], None]:
    """The bare loop's step: backbone, usual ArcFace recipe (s = 64, m = 0.5), backward, SGD (with a GradScaler
    under fp16, as any fp16 loop needs one)."""
    import contextlib

    import torch
    import torch.nn.functional as F

    device = images.device
    rows = torch.arange(images.shape[0], device=device)
    scaler = torch.amp.GradScaler(device.type, growth_interval=100) if autocast_dtype is torch.float16 else None

    def step() -> None:
        ctx = (
            torch.autocast(device.type, dtype=autocast_dtype)
            if autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with ctx:
            emb = backbone(images)
        cos = F.linear(F.normalize(emb.float()), F.normalize(weight)).clamp(-1, 1)
        target = torch.cos(torch.acos(cos[rows, labels].clamp(-1 + 1e-7, 1 - 1e-7)) + 0.5)
        logits = 64.0 * cos.scatter(1, labels[:, None], target[:, None])
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    return step


def _timed(step: Callable[[], None], n: int, device: Any = None) -> tuple[list[float], int]:
    """Per-step seconds of ``n`` steps and the peak KiB while they ran: resident memory on the CPU, allocated
    device memory on a GPU (each step waits for the GPU to finish before its clock stops)."""
    import torch

    cuda = device is not None and device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times, (torch.cuda.max_memory_allocated(device) // 1024 if cuda else rss_kib("VmHWM"))


def run_step(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from qualiface.config.io import config_from_dict
    from qualiface.train.distributed import DistInfo
    from qualiface.train.loop import Trainer

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec.get("device", "cpu"))
    baseline = 0 if device.type == "cuda" else rss_kib("VmRSS")
    batch, classes = spec["batch"], spec["classes"]
    out_dir = tempfile.mkdtemp(prefix="qualiface-bench-train-")
    try:
        cfg = config_from_dict(
            {
                "model": {"backbone": spec["backbone"]},
                "head": {"name": "arcface"},
                "data": {**_data_cfg(spec), "num_classes": classes, "num_workers": spec["e2e_workers"]},
                "train": {
                    "out_dir": out_dir,
                    "steps": 10**6,
                    "precision": spec["precision"].split("+")[0],
                    # fp32 = NCHW, fp32+cl = NHWC, bf16 = the trainer's default (NHWC)
                    "channels_last": {"fp32": False, "fp32+cl": True}.get(spec["precision"]),
                    "compile": spec["compile"],
                    "device": device.type,
                },
                "log": {"progress": False},
            }
        )
        trainer = Trainer(cfg, DistInfo(0, 0, 1, device))
        trainer.backbone.train()
        trainer.head.train()
        generator = torch.Generator().manual_seed(0)
        keys = next(iter(trainer.sampler))
        images = torch.stack([trainer.samples[k][0] for k in keys]).to(device)
        labels = torch.randint(0, classes, (batch,), generator=generator).to(device)

        # the bare loop: a copy of the same backbone (same weights and memory format), its own class centres
        bare_backbone = copy.deepcopy(trainer.backbone)
        bare_images = images
        if trainer.channels_last:
            bare_backbone.to(memory_format=torch.channels_last)
            bare_images = images.contiguous(memory_format=torch.channels_last)
        forward = torch.compile(bare_backbone) if spec["compile"] else bare_backbone
        weight = torch.nn.Parameter(torch.empty(classes, trainer.backbone.embedding_dim).normal_(0, 0.01).to(device))
        optimizer = torch.optim.SGD(
            [{"params": list(bare_backbone.parameters())}, {"params": [weight]}],
            lr=cfg.optim.lr,
            momentum=cfg.optim.momentum,
            weight_decay=cfg.optim.weight_decay,
        )
        steps: dict[str, Callable[[], None]] = {
            "trainer": lambda: trainer.train_step(images, labels),
            "bare": _bare_step(forward, weight, optimizer, bare_images, labels, trainer.autocast_dtype),
        }
        for name in ("trainer", "bare"):
            start = time.perf_counter()
            _timed(steps[name], spec["warmup"], device)
            print(f"warm-up {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
        times: dict[str, list[float]] = {"trainer": [], "bare": []}
        peaks = {"trainer": 0, "bare": 0}
        for r in range(spec["rounds"]):
            for name in ("trainer", "bare") if r % 2 == 0 else ("bare", "trainer"):
                got, peak = _timed(steps[name], spec["steps"], device)
                times[name] += got
                peaks[name] = max(peaks[name], peak)
        median = {name: statistics.median(t) for name, t in times.items()}
        best = {name: min(t) for name, t in times.items()}
        result: dict[str, Any] = {
            "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
            "channels_last": trainer.channels_last,
            "autocast": str(trainer.autocast_dtype) if trainer.autocast_dtype is not None else "float32",
            "trainer_ips": batch / median["trainer"],
            "bare_ips": batch / median["bare"],
            "ratio": median["trainer"] / median["bare"],
            "ratio_best": best["trainer"] / best["bare"],
            "trainer_ms": 1e3 * median["trainer"],
            "bare_ms": 1e3 * median["bare"],
            "trainer_ms_all": [round(1e3 * t, 2) for t in times["trainer"]],
            "bare_ms_all": [round(1e3 * t, 2) for t in times["bare"]],
            "trainer_peak_mib": (peaks["trainer"] - baseline) / 1024,
            "bare_peak_mib": (peaks["bare"] - baseline) / 1024,
        }
        del forward, bare_backbone, optimizer, weight, steps
        if spec["e2e_workers"] > 0 and spec["e2e_steps"] > 0:
            result.update(_end_to_end(trainer, spec["e2e_steps"], batch))
        return result
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def _end_to_end(trainer: Any, steps: int, batch: int) -> dict[str, Any]:
    """``Trainer.run``'s loop without logging: loader + ``train_step`` + reading the logged values."""
    loader: Iterator[Any] = iter(trainer._loader())
    for _ in range(2):  # worker start-up and a full prefetch queue are not what we measure
        images, labels = next(loader)
        trainer.train_step(images, labels)
    start = time.perf_counter()
    for _ in range(steps):
        images, labels = next(loader)
        loss, logs, grad_norm = trainer.train_step(images, labels)
        _ = [float(v) for v in (loss, *logs.values(), *(() if grad_norm is None else (grad_norm,)))]
    elapsed = time.perf_counter() - start
    del loader
    return {"e2e_ips": steps * batch / elapsed, "e2e_steps": steps}


# ------------------------------------------------------------------------------------------------ part 2: data


def run_data(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    import qualiface
    from qualiface.config.io import config_from_dict
    from qualiface.train.data import ShardedBatchSampler, build_train_samples, make_loader

    workers = spec["workers"]
    torch.set_num_threads(1 if workers == 0 else spec["threads"])
    cfg = config_from_dict({"data": {**_data_cfg(spec), "num_workers": workers}})
    with torch.device("meta"):
        preprocessing = qualiface.create_backbone(spec["backbone"]).preprocessing
    samples = build_train_samples(cfg.data, preprocessing, cfg.train.seed)
    sampler = ShardedBatchSampler(len(samples), cfg.data.batch_size, 1, 0, cfg.train.seed)
    loader = make_loader(samples, sampler, workers, pin_memory=False)
    start = time.perf_counter()
    it = iter(loader)
    for _ in range(max(1, workers)):  # until every worker has delivered its first batch
        next(it)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(spec["batches"]):
        next(it)
    elapsed = time.perf_counter() - start
    del it
    ips = spec["batches"] * spec["batch"] / elapsed
    return {"ips": ips, "ips_per_worker": ips / max(workers, 1), "first_batch_s": first, "samples": len(samples)}


# ------------------------------------------------------------------------------------------------ part 3: jpeg


def run_jpeg(spec: dict[str, Any]) -> dict[str, Any]:
    import io

    import numpy as np
    import torch
    from PIL import Image

    import qualiface
    from qualiface.data.recordio import RecordIOReader, decode_image
    from qualiface.data.transforms import to_tensor, training_transform

    torch.set_num_threads(1)
    reader = RecordIOReader(spec["rec"])
    n = min(spec["images"], len(reader))
    payloads = [reader[i][0] for i in range(n)]
    reps = spec["reps"]
    rows: list[dict[str, Any]] = []

    def pillow(payload: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(payload)) as img:
            return np.asarray(img.convert("RGB"))

    reference = [pillow(p) for p in payloads]
    pillow_seconds = best_of(lambda: [pillow(p) for p in payloads], reps)
    rows.append({"name": "Pillow (RGB)", "us_per_image": 1e6 * pillow_seconds / n, "ips": n / pillow_seconds})
    seconds = best_of(lambda: [decode_image(p) for p in payloads], reps)
    rows.append(
        {
            "name": "decode_image (the pipeline's)",
            "us_per_image": 1e6 * seconds / n,
            "ips": n / seconds,
            "vs_pillow": pillow_seconds / seconds,
        }
    )
    try:
        import simplejpeg
    except ImportError:
        rows.append({"name": "simplejpeg", "note": "not importable (pip install simplejpeg to compare)"})
    else:
        for fast in (False, True):
            kwargs = {"fastdct": fast, "fastupsample": fast}

            def decode(kwargs: dict[str, bool] = kwargs) -> list[Any]:
                return [simplejpeg.decode_jpeg(p, colorspace="RGB", **kwargs) for p in payloads]

            seconds_sj = best_of(decode, reps)
            diff = max(int(np.abs(a.astype(np.int16) - b).max()) for a, b in zip(decode(), reference, strict=True))
            rows.append(
                {
                    "name": f"simplejpeg {simplejpeg.__version__} decode_jpeg (RGB{', fastdct+fastupsample' * fast})",
                    "us_per_image": 1e6 * seconds_sj / n,
                    "ips": n / seconds_sj,
                    "vs_pillow": pillow_seconds / seconds_sj,
                    "max_abs_diff": diff,
                }
            )
    with torch.device("meta"):
        preprocessing = qualiface.create_backbone(spec["backbone"]).preprocessing
    tensors = [to_tensor(a) for a in reference]
    for augment in ("flip", "adaface"):
        transform = training_transform(preprocessing, augment, 0.2)
        generators = [torch.Generator().manual_seed(i) for i in range(n)]

        def apply(transform: Any = transform, generators: list[Any] = generators) -> None:
            for t, g in zip(tensors, generators, strict=True):
                transform(t, g)

        seconds_t = best_of(apply, reps)
        rows.append(
            {"name": f"training_transform {augment}", "us_per_image": 1e6 * seconds_t / n, "ips": n / seconds_t}
        )
    return {"images": n, "rows": rows}


# ------------------------------------------------------------------------------------------------ driver


def _child(kind: str, spec: dict[str, Any]) -> dict[str, Any] | None:
    proc = subprocess.run(
        [sys.executable, __file__, "--one", json.dumps({"kind": kind, **spec})],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        print(f"FAILED {kind} {spec} (exit {proc.returncode})", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", choices=["step", "data", "jpeg"], default=["step", "data", "jpeg"])
    parser.add_argument("--backbones", nargs="+", default=["mobilefacenet", "iresnet50"])
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=["fp32", "fp32+cl", "bf16", "fp16"],
        default=["fp32", "fp32+cl", "bf16"],
        help="fp32+cl: float32 with channels_last; bf16 and fp16 run channels_last (the trainer's default); "
        "fp16 (with a GradScaler) needs --device cuda",
    )
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="where the step part trains (cuda: the first GPU; data and jpeg always run on the CPU)",
    )
    parser.add_argument("--batch", type=int, default=None, help="default: mobilefacenet 64, iresnet50 32")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--compile", action="store_true", help="torch.compile the trainer's and the bare backbone")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each path")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds (trainer, bare)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per path and round")
    parser.add_argument("--e2e-workers", type=int, default=2, help="workers of the loader + step run (0: skip)")
    parser.add_argument("--e2e-steps", type=int, default=10, help="timed steps of the loader + step run")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--augments", nargs="+", choices=["none", "flip", "adaface"], default=["flip", "adaface"])
    parser.add_argument("--sources", nargs="+", choices=["synthetic", "recordio"], default=["synthetic", "recordio"])
    parser.add_argument("--data-batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=30, help="timed batches per data configuration")
    parser.add_argument("--rec", type=Path, default=None, help="an existing train.rec (default: pack the shared faces)")
    parser.add_argument("--faces", type=Path, default=SHARED_FACES, help="image folder to pack when --rec is not set")
    parser.add_argument("--jpeg-images", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/train_<date>.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        spec = json.loads(args.one)
        run = {"step": run_step, "data": run_data, "jpeg": run_jpeg}[spec["kind"]]
        print(json.dumps(run(spec)))
        return

    import torch

    from qualiface.train.precision import cpu_bf16_support, resolve

    date = datetime.date.today().isoformat()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False")
    if "fp16" in args.precisions and args.device != "cuda":
        parser.error("--precisions fp16 needs --device cuda (the trainer refuses fp16 on a CPU)")
    support = cpu_bf16_support()
    machine = {
        "cpu": cpu_model(),
        "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "fast_bf16": support.fast,
        "bf16_units": support.describe(),
        "auto_precision": resolve("auto", torch.device(args.device)).name,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    print(f"{machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, bf16 matrix units: "
          f"{machine['bf16_units']}, train.precision auto = {machine['auto_precision']}, "
          f"{args.threads} threads")  # fmt: skip
    tmp: str | None = None
    rec = args.rec
    needs_rec = "jpeg" in args.parts or ("recordio" in args.sources and "data" in args.parts)
    if rec is None and needs_rec:
        from qualiface.data.recordio import pack_image_folder

        tmp = tempfile.mkdtemp(prefix="qualiface-bench-rec-")
        start = time.perf_counter()
        summary = pack_image_folder(args.faces, tmp)
        rec = summary.rec_path
        print(f"packed {summary.num_images} images of {summary.num_classes} identities from {args.faces} "
              f"in {time.perf_counter() - start:.1f} s")  # fmt: skip
    result: dict[str, Any] = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "date": date,
                              "machine": machine, "args": {k: str(v) for k, v in vars(args).items()}}  # fmt: skip
    try:
        if "step" in args.parts:
            result["step"] = _run_steps(args)
        if "data" in args.parts:
            result["data"] = _run_data(args, rec)
        if "jpeg" in args.parts:
            result["jpeg"] = _run_jpeg(args, rec)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    out = args.out or Path(__file__).parent / "results" / f"train_{date}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


def _run_steps(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    print()
    print(f"Training step on {args.device}, arcface head, C = {args.classes:,}, {args.threads} threads, "
          f"median of {args.rounds} x {args.steps} steps per path (alternating)")  # fmt: skip
    print()
    print("| backbone | precision | channels_last | compile | batch | trainer img/s | bare img/s | trainer / bare | "
          "best-step ratio | "
          f"trainer peak MiB | bare peak MiB | loader + step img/s ({args.e2e_workers} workers) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for backbone in args.backbones:
        for precision in args.precisions:
            spec = {
                "backbone": backbone,
                "precision": precision,
                "batch": args.batch or DEFAULT_BATCH.get(backbone, 64),
                "classes": args.classes,
                "compile": args.compile,
                "threads": args.threads,
                "device": args.device,
                "warmup": max(args.warmup, 3) if args.compile else args.warmup,  # compile + possible recompiles
                "rounds": args.rounds,
                "steps": args.steps,
                "e2e_workers": args.e2e_workers,
                "e2e_steps": args.e2e_steps,
            }
            got = _child("step", spec)
            if got is None:
                continue
            rows.append({**spec, **got})
            e2e = f"{got['e2e_ips']:.1f}" if "e2e_ips" in got else ""
            print(f"| {backbone} | {precision} | {got['channels_last']} | {args.compile} | {spec['batch']} | "
                  f"{got['trainer_ips']:.1f} | {got['bare_ips']:.1f} | {got['ratio']:.3f} | {got['ratio_best']:.3f} | "
                  f"{got['trainer_peak_mib']:.0f} | {got['bare_peak_mib']:.0f} | {e2e} |", flush=True)  # fmt: skip
    return rows


def _run_data(args: argparse.Namespace, rec: Path | None) -> list[dict[str, Any]]:
    rows = []
    print()
    print(f"Training DataLoader, batch {args.data_batch}, {args.batches} timed batches after the first")
    print()
    print("| source | augment | workers | img/s | img/s per worker | start-up s |")
    print("|---|---|---|---|---|---|")
    for source in args.sources:
        for augment in args.augments:
            for workers in args.workers:
                spec = {"source": source, "augment": augment, "workers": workers, "batch": args.data_batch,
                        "batches": args.batches, "threads": args.threads, "backbone": args.backbones[0],
                        "rec": str(rec) if rec else None}  # fmt: skip
                got = _child("data", spec)
                if got is None:
                    continue
                rows.append({**spec, **got})
                print(f"| {source} | {augment} | {workers} | {got['ips']:.0f} | {got['ips_per_worker']:.0f} | "
                      f"{got['first_batch_s']:.2f} |", flush=True)  # fmt: skip
    return rows


def _run_jpeg(args: argparse.Namespace, rec: Path | None) -> dict[str, Any] | None:
    spec = {"rec": str(rec), "images": args.jpeg_images, "reps": 3, "backbone": args.backbones[0]}
    got = _child("jpeg", spec)
    if got is None:
        return None
    print()
    print(f"Per-image cost, one thread, {got['images']} JPEGs (112x112, q95) from the RecordIO pack, best of 3")
    print()
    print("| step | µs / image | images/s | vs Pillow | max abs diff vs Pillow |")
    print("|---|---|---|---|---|")
    for row in got["rows"]:
        if "us_per_image" not in row:
            print(f"| {row['name']} | | | | {row['note']} |")
            continue
        vs = f"{row['vs_pillow']:.2f}x" if "vs_pillow" in row else ""
        print(
            f"| {row['name']} | {row['us_per_image']:.0f} | {row['ips']:.0f} | {vs} | {row.get('max_abs_diff', '')} |"
        )
    return got


if __name__ == "__main__":
    main()
