"""Evaluation benchmarks: 10-fold verification, IJB-C-scale template scoring and ROC, EDC on 1M pairs.

Usage::

    python bench/eval.py            # runs the three parts, prints one table, writes bench/results/eval.json

The parts live in ``bench/eval_verification.py``, ``bench/eval_ijb.py`` and ``bench/eval_edc.py``; each
can also be run on its own. Every part times the library next to a plain re-implementation of the
reference code in the same run, so the ratio does not depend on the machine.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import eval_edc
import eval_ijb
import eval_verification


def main() -> None:
    """Run every part and print a Markdown table."""
    rows = []
    print("| part | name | seconds | peak MiB | note |")
    print("|---|---|---|---|---|")
    for part, module in (("verification", eval_verification), ("ijb", eval_ijb), ("edc", eval_edc)):
        for row in module.run():
            rows.append({"part": part, **row})
            peak = "" if row.get("peak_mib") is None else f"{row['peak_mib']:.0f}"
            print(f"| {part} | {row['name']} | {row['seconds']:.4f} | {peak} | {row.get('note', '')} |", flush=True)
    out = Path(__file__).parent / "results" / "eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.platform(), "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
