"""The Typer applications; command modules attach their commands to these.

Every command runs inside :class:`ErrorReportingGroup`, the one place where a failure becomes the command's exit:
one line ``error: <message>`` on stderr and the exit code of :mod:`qualiface.errors` (2 for the user's input, 1 for
a run that could not finish), never a traceback for a user's mistake. ``QUALIFACE_DEBUG=1`` re-raises instead, for
a full traceback.
"""

from __future__ import annotations

import errno
import os
from typing import Any

import typer
from typer import _click  # typer vendors click; its Context is the one a group receives
from typer.core import TyperGroup

from qualiface.errors import EXIT_FAILED, EXIT_INPUT, InputError, RunError

#: ``OSError`` numbers that are the run's environment failing (the disk, the device), not the user's input.
_RUN_FAILURES = {errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EROFS, errno.ENOMEM}


def exit_for(exc: BaseException) -> tuple[int, str] | None:
    """The exit code and the one-line message of a failure, or ``None`` for a bug (a traceback is due)."""
    if isinstance(exc, InputError):
        return EXIT_INPUT, str(exc)
    if isinstance(exc, RunError):
        return EXIT_FAILED, str(exc)
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        reason = exc.strerror or str(exc)
        code = EXIT_FAILED if exc.errno in _RUN_FAILURES else EXIT_INPUT
        return code, f"{where}{reason}"
    if isinstance(exc, (ValueError, MemoryError)):  # the library's checks of values (named in their messages)
        return EXIT_INPUT if isinstance(exc, ValueError) else EXIT_FAILED, str(exc) or type(exc).__name__
    return None


class ErrorReportingGroup(TyperGroup):
    """A command group whose commands' failures end as ``error: <message>`` and an exit code (module docstring)."""

    def invoke(self, ctx: _click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:  # typer's Exit, Abort and usage errors are not mapped: they pass through
            verdict = exit_for(exc)
            if verdict is None or os.environ.get("QUALIFACE_DEBUG"):
                raise
            code, message = verdict
            typer.echo(f"error: {' '.join(message.split())}", err=True)
            raise typer.Exit(code) from exc


app = typer.Typer(
    help="qualiface: quality- and uncertainty-aware face recognition.", no_args_is_help=True, cls=ErrorReportingGroup
)
eval_app = typer.Typer(
    help="Evaluate embeddings and scores on the standard protocols.", no_args_is_help=True, cls=ErrorReportingGroup
)
app.add_typer(eval_app, name="eval")
data_app = typer.Typer(
    help="Training and evaluation data: RecordIO packs.", no_args_is_help=True, cls=ErrorReportingGroup
)
app.add_typer(data_app, name="data")
