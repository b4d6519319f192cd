"""Detection of tightly cropped, grey, variously lit faces: which retry finds them, and what it costs elsewhere.

Usage::

    python bench/detect_tight_crops.py                    # 100 Glint + 100 ORL tight crops, 100 non-face images
    python bench/detect_tight_crops.py --crops 60 --quick # only the library's default and the old behaviour

The crops are ``tests/_helpers/tight_crops.py`` (the set of the acceptance test). Rows: YuNet's first pass at
score thresholds 0.6 (the old behaviour), 0.5 and 0.3; the photo padded on every side with a border of a quarter,
a half or one longer side, black, mean-colour, edge-replicated or mirrored, at 0.6; and the library's default
(:func:`qualiface.detect.find.find_faces` with ``DetectorOptions()``: first pass, then ``pad``, then
``upscale``). Columns: the share found, overall, per lighting and per source; the landmark error on the Glint crops
(mean distance to the template's points, in 112-pixel units: the crop's own scale); and on non-face images
(ORL background corners, Glint hair and shoulders, noise, smooth gradients) the share where a face was "found".
Results: a Markdown table on stdout and ``bench/results/detect_tight_crops_<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from _measure import cpu_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the shared test-set builder


def _pad(image: np.ndarray, ratio: float, border: str) -> tuple[np.ndarray, int]:
    h, w = image.shape[:2]
    p = round(ratio * max(h, w))
    if border == "black":
        return np.pad(image, ((p, p), (p, p), (0, 0))), p
    if border == "mean":
        out = np.empty((h + 2 * p, w + 2 * p, 3), np.uint8)
        out[:] = image.reshape(-1, 3).mean(axis=0).round().astype(np.uint8)
        out[p : p + h, p : p + w] = image
        return out, p
    return np.pad(image, ((p, p), (p, p), (0, 0)), mode="edge" if border == "edge" else "reflect"), p


def _non_faces(count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Images without a face: ORL background corners, Glint hair/shoulder strips, noise, smooth gradients."""
    from PIL import Image

    from _helpers.shared_data import GLINT, ORL

    out = []
    glint = sorted((GLINT / "images").rglob("*.jpg"))
    for k in range(count):
        kind = k % 4
        if kind == 0:
            grey = np.asarray(Image.open(ORL / f"s{k % 40 + 1}" / f"{k % 10 + 1}.pgm").convert("L"))
            patch = grey[:24, :24] if (k // 4) % 2 else grey[:24, -24:]
            img = np.repeat(patch[:, :, None], 3, axis=2)
        elif kind == 1:
            rgb = np.asarray(Image.open(glint[int(rng.integers(len(glint)))]).convert("RGB"))
            img = rgb[:20] if (k // 4) % 2 else rgb[:, :18]
        elif kind == 2:
            img = rng.integers(0, 256, (int(rng.integers(40, 200)), int(rng.integers(40, 200)), 3), dtype=np.uint8)
        else:
            h, w = (int(v) for v in rng.integers(40, 200, 2))
            ramp = np.linspace(rng.uniform(0, 255), rng.uniform(0, 255), w)[None, :] + np.zeros((h, 1))
            img = np.repeat(ramp[:, :, None], 3, axis=2).astype(np.uint8)
        size = int(rng.integers(48, 200))
        out.append(np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((size, size))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crops", type=int, default=100, help="Glint crops, and as many ORL crops")
    parser.add_argument("--non-faces", type=int, default=100)
    parser.add_argument("--seed", type=int, default=20261203)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="only the old behaviour and the library default")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from _helpers.tight_crops import LIGHTS, glint_crops, orl_crops
    from qualiface.detect import YuNetDetector
    from qualiface.detect.find import find_faces
    from qualiface.detect.options import DetectorOptions

    rng = np.random.default_rng(args.seed)
    low = YuNetDetector(score_threshold=0.3, threads=args.threads)
    crops = glint_crops(args.crops, rng) + orl_crops(args.crops, rng, low)
    others = _non_faces(args.non_faces, rng)
    det06 = YuNetDetector(score_threshold=0.6, threads=args.threads)
    det05 = YuNetDetector(score_threshold=0.5, threads=args.threads)

    def plain(detector: Any) -> Callable[[np.ndarray], tuple[list[Any], int]]:
        return lambda image: (detector.detect(image), 0)

    def padded(ratio: float, border: str) -> Callable[[np.ndarray], tuple[list[Any], int]]:
        return lambda image: (lambda pair: (det06.detect(pair[0]), pair[1]))(_pad(image, ratio, border))

    def library(image: np.ndarray) -> tuple[list[Any], int]:
        return find_faces(image, det06, DetectorOptions()).detections, 0

    variants: dict[str, Callable[[np.ndarray], tuple[list[Any], int]]] = {"first pass, score 0.6 (old)": plain(det06)}
    if not args.quick:
        variants["first pass, score 0.5"] = plain(det05)
        variants["first pass, score 0.3"] = plain(low)
        for border in ("black", "mean", "edge", "reflect"):
            for ratio in (0.25, 0.5, 1.0):
                variants[f"pad {ratio:g} {border}, score 0.6"] = padded(ratio, border)
    variants["library default (first, pad, upscale)"] = library

    lights = np.array([c.light for c in crops])
    sources = np.array([c.source for c in crops])
    rows = []
    for name, run in variants.items():
        start = time.perf_counter()
        found, errors = [], []
        for crop in crops:
            faces, offset = run(crop.image)
            found.append(bool(faces))
            if faces and crop.landmarks is not None:
                best = max(faces, key=lambda d: d.area)
                scale = 68 / crop.image.shape[1]  # the crop is 68 template pixels wide (GLINT_BOX)
                errors.append(float(np.linalg.norm(best.landmarks - offset - crop.landmarks, axis=1).mean() * scale))
        false = [bool(run(image)[0]) for image in others]
        ok = np.array(found)
        row = {
            "variant": name,
            "found": float(ok.mean()),
            **{f"found {light}": float(ok[lights == light].mean()) for light in LIGHTS},
            "found glint": float(ok[sources == "glint"].mean()),
            "found orl": float(ok[sources == "orl"].mean()),
            "landmark error (112 px)": float(np.mean(errors)) if errors else float("nan"),
            "non-face images with a face": float(np.mean(false)),
            "seconds": time.perf_counter() - start,
        }
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)

    columns = list(rows[0])
    print(f"{len(crops)} tight crops ({args.crops} Glint + {args.crops} ORL), {len(others)} non-face images\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        cells = [row["variant"]]
        cells += [f"{row[c]:.1%}" if "found" in c or "non-face" in c else f"{row[c]:.2f}" for c in columns[1:]]
        print("| " + " | ".join(cells) + " |")
    out = args.out or Path(__file__).parent / "results" / f"detect_tight_crops_{datetime.date.today()}.json"
    record = {"command": " ".join(sys.argv), "date": str(datetime.datetime.now()), "cpu": cpu_model(), "rows": rows}
    out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
