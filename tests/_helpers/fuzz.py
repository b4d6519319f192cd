"""The two Hypothesis profiles of the property-based tests (tests/fuzz/).

Each property has a short variant in the default run (:data:`FAST`: a few dozen examples, derandomized so every run
and CI draws the same inputs, no deadline) and a long one marked ``fuzz`` (:data:`LONG`: thousands of random
examples), which tests/conftest.py skips unless the run selects it: ``python -m pytest -m fuzz``.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

#: The default run: deterministic and quick.
FAST = settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=_QUIET, database=None)
#: ``-m fuzz``: many random examples (Hypothesis' database keeps any failure for the next run).
LONG = settings(max_examples=2000, deadline=None, suppress_health_check=_QUIET)


def mutate(data: bytes, edits: list[tuple[str, int, bytes]]) -> bytes:
    """``data`` with ``edits`` applied in order: ``("flip", position, b"x")`` overwrites one byte, ``("cut",
    position, b"")`` truncates, ``("insert", position, chunk)`` inserts; positions wrap around the current
    length."""
    out = bytearray(data)
    for kind, position, chunk in edits:
        where = position % (len(out) + 1)
        if kind == "flip" and out:
            out[min(where, len(out) - 1)] = chunk[0] if chunk else 0
        elif kind == "cut":
            del out[where:]
        elif kind == "insert":
            out[where:where] = chunk
    return bytes(out)
