"""Where the commands write: one rule, and one ``--overwrite``, for an output that an earlier run left there.

A command that writes one file refuses an existing ``--out`` file; a command that writes a folder of results refuses
a folder holding the file that marks a finished run (its main result, written last). ``--overwrite`` replaces them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qualiface.errors import InputError

#: The one spelling of "replace what an earlier run wrote at --out".
OverwriteOption = Annotated[
    bool, typer.Option("--overwrite", help="Replace what an earlier run wrote at --out (refused without it).")
]


def refuse_existing_file(out: Path | None, overwrite: bool) -> None:
    """Refuse (:class:`InputError`) to replace the file ``out`` unless ``overwrite``."""
    if out is not None and out.exists() and not overwrite:
        raise InputError(f"--out {out} exists; pass --overwrite to replace it")


def refuse_previous_run(folder: Path, marker: str, overwrite: bool) -> None:
    """Refuse (:class:`InputError`) a ``folder`` that holds ``marker`` (an earlier run's result) unless
    ``overwrite``."""
    if (folder / marker).exists() and not overwrite:
        raise InputError(f"--out {folder} holds a previous run ({marker}); pass --overwrite or another --out")
