"""The photo pipeline: detection + alignment of real photos, and embedding of aligned crops, through the library's
public functions (``qualiface.use.load_faces``, ``qualiface.use.embed_faces``, ``qualiface.models.load_model``).

Usage::

    python bench/photos.py                          # ORL photos (detect + align), Glint crops (embed), SFace
    python bench/photos.py --photos 40 --crops 128 --repeat 2

Rows: ``detect+align`` (YuNet + 5-point alignment of ``--photos`` ORL photos, 92x112 grey), ``embed`` (SFace on
``--crops`` aligned 112x112 Glint crops, batch 64), ``photos end to end`` (both for the ORL photos). Each is the
best of ``--repeat`` runs, in images per second, with ``--threads`` PyTorch / onnxruntime threads. Results: a
Markdown table on stdout and ``bench/results/photos_<date>.json`` (command, date, CPU, rows).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any

from _measure import SFACE, SHARED, best_of, cpu_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=SFACE)
    parser.add_argument("--photos", type=int, default=80, help="ORL photos to detect and align")
    parser.add_argument("--crops", type=int, default=512, help="aligned Glint crops to embed")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from qualiface.models import load_model
    from qualiface.use import embed_faces, load_faces

    orl = sorted((SHARED / "orl").glob("s*/*.pgm"))[: args.photos]
    crops = sorted((SHARED / "glint360k-sample" / "images").rglob("*.jpg"))[: args.crops]
    if not orl or not crops or not args.model.is_file():
        sys.exit(f"needs {SHARED}/orl, {SHARED}/glint360k-sample and {args.model}")
    model = load_model(args.model)
    aligned = load_faces(crops, aligned=True)
    embed_faces(model, aligned)  # warm-up
    rows: list[dict[str, Any]] = []

    def row(name: str, count: int, seconds: float) -> None:
        rows.append(
            {"step": name, "images": count, "seconds": round(seconds, 3), "images_per_s": round(count / seconds, 1)}
        )

    row("detect+align", len(orl), best_of(lambda: load_faces(orl), args.repeat))
    row("embed", len(crops), best_of(lambda: embed_faces(model, aligned), args.repeat))
    row("photos end to end", len(orl), best_of(lambda: embed_faces(model, load_faces(orl)), args.repeat))

    print(
        f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads, "
        f"model {args.model.name}"
    )
    print(f"\n| step | images | best of {args.repeat} s | images/s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['step']} | {r['images']} | {r['seconds']} | {r['images_per_s']} |")
    date = datetime.date.today().isoformat()
    out = args.out or Path(__file__).parent / "results" / f"photos_{date}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"command": " ".join(sys.argv), "date": date, "cpu": cpu_model(), "cores": os.cpu_count(), "rows": rows}
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
