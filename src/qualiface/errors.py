"""The project's error vocabulary: which failures are the user's input and which are a failed run.

Every command line entry point maps them the same way (:func:`qualiface.cli.app.main`):

* :class:`InputError` (and ``ValueError`` subclasses of the project that derive from it): the user's input is wrong
  (a file, a field, a value); one line ``error: <message>`` on stderr, **exit code 2**.
* :class:`RunError`: the input was accepted but the run could not finish (a diverged loss, a full disk, nothing
  usable written); one line, **exit code 1**.

Library callers catch them like any ``ValueError`` / ``RuntimeError``; the messages name the input (file, record,
field or value) so that one line is enough to act on.
"""

from __future__ import annotations

#: Exit code of a command whose input was refused.
EXIT_INPUT = 2
#: Exit code of a command that accepted its input but could not finish (or wrote nothing usable).
EXIT_FAILED = 1


class InputError(ValueError):
    """Bad user input: the message names the file, record, field or value and says what is wrong."""


class RunError(RuntimeError):
    """A run that accepted its input but could not finish; the message says why and what was kept."""
