"""Head step time of two checkouts, interleaved: is a change to the heads within noise?

Usage::

    git worktree add /tmp/before <commit>
    python bench/heads_ab.py /tmp/before/src src --rounds 6 --heads arcface cosface adaface softmax

Each round runs one subprocess per checkout (``before`` then ``after``); each subprocess times every head's
forward + backward in training mode (B = 128, D = 512, C = 100,000 by default; best of 8 steps after 2 warm-up
steps) with ``torch.set_num_threads(2)``. On a shared VM single runs drift by 10-20 %; alternating the checkouts
and comparing the minimum and the median over rounds separates the code from the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time

_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import torch
import qualiface
torch.set_num_threads(2)
spec = json.loads(sys.argv[2])
out = {}
for rate in spec["rates"]:
    for name in spec["heads"] or sorted(qualiface.list_heads()):
        torch.manual_seed(0)
        head = qualiface.create_head(name, spec["dim"], spec["classes"], sample_rate=rate, sparse_grad=rate < 1)
        head.train()
        emb = (torch.randn(spec["batch"], spec["dim"]) * 10).requires_grad_()
        labels = torch.randint(0, spec["classes"], (spec["batch"],))
        aux = {k: (torch.rand(spec["batch"]) * 20 + 10).requires_grad_() for k in head.requires}

        def step():
            head.zero_grad(set_to_none=True)
            emb.grad = None
            head(emb, labels, **aux).loss.backward()

        step(); step()
        best = float("inf")
        for _ in range(8):
            start = time.perf_counter(); step(); best = min(best, time.perf_counter() - start)
        out[f"{name}@{rate}"] = best * 1000
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", help="the src/ folder of the reference checkout")
    parser.add_argument("after", help="the src/ folder of the changed checkout")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--heads", nargs="*", default=[])
    parser.add_argument("--rates", type=float, nargs="+", default=[1.0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=100_000)
    args = parser.parse_args()
    spec = json.dumps(
        {"heads": args.heads, "rates": args.rates, "batch": args.batch, "dim": args.dim, "classes": args.classes}
    )
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for _ in range(args.rounds):
        for side in ("before", "after"):
            src = getattr(args, side)
            text = subprocess.run([sys.executable, "-c", _CHILD, src, spec], check=True, capture_output=True, text=True)
            runs[side].append(json.loads(text.stdout))
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, {args.rounds} rounds, ms per step")
    print("| head@rate | min before | min after | ratio | median before | median after | ratio |")
    print("|---|---|---|---|---|---|---|")
    for key in runs["before"][0]:
        b = [r[key] for r in runs["before"]]
        a = [r[key] for r in runs["after"]]
        mb, ma, db, da = min(b), min(a), statistics.median(b), statistics.median(a)
        print(f"| {key} | {mb:.1f} | {ma:.1f} | {ma / mb:.3f} | {db:.1f} | {da:.1f} | {da / db:.3f} |")


if __name__ == "__main__":
    main()
