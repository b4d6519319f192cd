"""Device-to-host synchronisations per training step: every head alone, and a whole trainer step.

Usage::

    python bench/syncs.py                 # prints a table and writes bench/results/syncs.json
    python bench/syncs.py --heads arcface --detail

A synchronisation is an operation whose result the host must wait for on an asynchronous device (CUDA):
reading a value (``item``, ``tolist``, ``bool``/``int``/``float`` of a tensor), an output whose size depends on
the data (``nonzero``, ``unique``, boolean-mask indexing, ``masked_select``) or a copy to the host. On the CPU
nothing waits, but the same calls would stall a GPU, so they are counted here with a ``TorchFunctionMode``
that sees every tensor call of the step (forward and backward as written in Python; the autograd engine's
own kernels make none). The count does not depend on the machine.

Rows: ``head/<name>``: ``head(embeddings, labels, **aux)`` then ``loss.backward()`` in training mode
(B=64, D=64, C=1000; ``sampled`` rows use Partial FC at rate 0.5), once with the input checks on (the
default of a head) and once with them off (``validate_inputs=False``, what the trainer uses after its first
step). ``trainer/<head>``: one full step of ``qualiface.train`` (backbone ``mobilefacenet`` on synthetic
112×112 images, batch 8, data loading excluded), counted as the difference between a 6-step and a 3-step run
divided by 3, so start-up and the final export cancel out.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_SYNC_NAMES = frozenset(
    {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero", "unique", "masked_select", "cpu"}
)
_SYNC_NAMES |= {"numpy", "argwhere", "unique_consecutive", "repeat_interleave"}


def _is_bool_index(args: tuple[Any, ...]) -> bool:
    import torch

    index = args[1] if len(args) > 1 else None
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


def _caller() -> str | None:
    """``file:line`` of the first qualiface frame that made the call; ``None`` for data loading (host-side work
    in the loader, not part of the device step)."""
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        if "torch/utils/data" in path or "/qualiface/data/" in path or path.endswith("qualiface/train/data.py"):
            return None
        if "/qualiface/" in path:
            return f"{path.split('/qualiface/', 1)[1]}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


def counting_mode() -> Any:
    """A ``TorchFunctionMode`` that counts synchronising calls (``.counts``, keyed ``"op @ file:line"``)."""
    from torch.overrides import TorchFunctionMode

    class SyncCounter(TorchFunctionMode):
        def __init__(self) -> None:
            super().__init__()
            self.counts: collections.Counter[str] = collections.Counter()

        def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
            name = getattr(func, "__name__", str(func))
            if name in _SYNC_NAMES or (name in ("__getitem__", "__setitem__") and _is_bool_index(args)):
                site = _caller()
                if site is not None:
                    op = name if name not in ("__getitem__", "__setitem__") else f"{name}[bool]"
                    self.counts[f"{op} @ {site}"] += 1
            return func(*args, **(kwargs or {}))

    return SyncCounter()


def head_syncs(name: str, sample_rate: float, validate: bool) -> dict[str, int]:
    import torch

    import qualiface

    torch.manual_seed(0)
    batch, dim, classes = 64, 64, 1000
    head = qualiface.create_head(name, embedding_dim=dim, num_classes=classes, sample_rate=sample_rate)
    head.validate_inputs = validate
    head.train()
    aux: dict[str, torch.Tensor] = {}
    for key in sorted(head.requires):
        aux[key] = (torch.rand(batch) * 2 + 1).requires_grad_()
    emb = (torch.randn(batch, dim) * 10).requires_grad_()
    labels = torch.randint(0, classes, (batch,))
    head(emb, labels, **aux).loss.backward()  # warm-up (UniTSFace fills its memory)
    with counting_mode() as mode:
        head(emb, labels, **aux).loss.backward()
    return dict(mode.counts)


def trainer_syncs(head: str) -> dict[str, float]:
    from qualiface.config import config_from_dict
    from qualiface.train import train

    def run(steps: int) -> collections.Counter[str]:
        branch = {"cr_fiqa": "cr_fiqa", "scaleface": "scaleface"}.get(head)
        with tempfile.TemporaryDirectory() as out:
            cfg = config_from_dict(
                {
                    "model": {
                        "backbone": "mobilefacenet",
                        "kwargs": {"quality_branch": branch} if branch else {},
                    },
                    "head": {"name": head},
                    "data": {
                        "synthetic": {"num_identities": 8, "images_per_identity": 4, "size": 112},
                        "batch_size": 8,
                        "num_workers": 0,
                    },
                    "train": {"out_dir": out, "steps": steps, "precision": "fp32", "log_every": 1_000_000},
                    "eval": {"every": 0},
                    "log": {"progress": False},
                }
            )
            with counting_mode() as mode:
                train(cfg)
            return mode.counts

    long, short = run(6), run(3)
    names = set(long) | set(short)
    return {k: (long[k] - short[k]) / 3 for k in sorted(names) if long[k] != short[k]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heads", nargs="*", default=None, help="heads to measure (default: every registered head)")
    parser.add_argument("--trainer-heads", nargs="*", default=["arcface", "adaface"])
    parser.add_argument("--detail", action="store_true", help="print the count of every synchronising call")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "syncs.json")
    args = parser.parse_args()

    import torch

    import qualiface

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    names = args.heads or sorted(qualiface.list_heads())
    rows: list[dict[str, Any]] = []
    for name in names:
        for rate in (1.0, 0.5):
            for validate in (True, False):
                counts = head_syncs(name, rate, validate)
                rows.append({"row": f"head/{name}", "sample_rate": rate, "validate_inputs": validate, "counts": counts})
    for name in args.trainer_heads:
        counts = trainer_syncs(name)
        rows.append({"row": f"trainer/{name}", "sample_rate": 1.0, "validate_inputs": None, "counts": counts})
    print(f"{'row':24s} {'rate':>5s} {'checks':>7s} {'syncs':>6s}")
    for row in rows:
        total = sum(row["counts"].values())
        checks = {True: "on", False: "off", None: "trainer"}[row["validate_inputs"]]
        print(f"{row['row']:24s} {row['sample_rate']:5.1f} {checks:>7s} {total:6.1f}")
        if args.detail:
            for key, value in sorted(row["counts"].items()):
                print(f"    {value:5g}  {key}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d"),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "qualiface": qualiface.__version__,
    }
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
