"""A rank never outlives its launcher: when the ``torchrun`` agent that started it dies (even by ``kill -9``), the
kernel sends the rank ``SIGTERM`` (Linux ``prctl(PR_SET_PDEATHSIG)``), so no orphaned rank trains on alone.

Without it, killing the agent left every rank running: they hold the GPUs, keep writing checkpoints into the run
directory and, when one of them finally fails a collective, stop only after ``train.ddp_timeout``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def launched_by_torchrun() -> bool:
    """Whether this process is a rank started by torchrun / torch.distributed.elastic (its environment says so)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "TORCHELASTIC_RESTART_COUNT" in os.environ


def exit_with_parent(sig: signal.Signals = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies; ``False`` where that is not available
    (not Linux, or ``prctl`` refused). A parent that already died before the call is treated as dying now."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        armed = libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    if not armed:
        return False
    if os.getppid() != parent:  # the parent died between getppid() and prctl(): nobody will signal
        os.kill(os.getpid(), sig)
    return True


def guard_rank() -> None:
    """Under torchrun: end this rank with its agent (:func:`exit_with_parent`); a no-op for a plain process."""
    if launched_by_torchrun() and not exit_with_parent():
        logger.warning("cannot tie this rank's life to its torchrun agent here; kill the ranks with the agent")
