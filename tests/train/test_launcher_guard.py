"""A rank started by torchrun ends when its agent is killed (kill -9), instead of training on as an orphan."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from qualiface.train.launcher_guard import launched_by_torchrun

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


@pytest.mark.parametrize("guarded", [True, False])
def test_a_rank_ends_with_its_killed_agent(tmp_path: Path, guarded: bool) -> None:
    """The 'agent' starts a 'rank' and is killed with SIGKILL; the guarded rank is gone within seconds, the
    unguarded one (the behaviour before) is still running."""
    pid_file = tmp_path / "rank.pid"
    rank = textwrap.dedent(
        f"""
        import os, time
        from pathlib import Path
        from qualiface.train.launcher_guard import guard_rank
        {"guard_rank()" if guarded else ""}
        Path({str(pid_file)!r}).write_text(str(os.getpid()))
        time.sleep(60)
        """
    )
    agent = textwrap.dedent(
        f"""
        import os, subprocess, sys, time
        env = dict(os.environ, TORCHELASTIC_RUN_ID="test", LOCAL_RANK="0")
        subprocess.Popen([sys.executable, "-c", {rank!r}], env=env)
        time.sleep(60)
        """
    )
    launcher = subprocess.Popen([sys.executable, "-c", agent])
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the rank did not start"
        time.sleep(0.05)
    rank_pid = int(pid_file.read_text())
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    deadline = time.monotonic() + (5 if guarded else 1)
    while _alive(rank_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert _alive(rank_pid) is not guarded
    finally:
        if _alive(rank_pid):
            os.kill(rank_pid, signal.SIGKILL)


def test_only_torchrun_ranks_are_guarded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    assert not launched_by_torchrun()
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    assert launched_by_torchrun()
