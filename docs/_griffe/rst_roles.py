"""Griffe extension for the API reference: the docstrings of qualiface use a few reStructuredText habits
(``:class:`~qualiface.x.Y``` roles, ``::`` before a literal block) that Markdown would print as they are.
This rewrites them, in the docstrings only, before mkdocstrings renders them:

* ``:class:`~pkg.mod.Name``` becomes ```Name``` (the ``~`` form keeps the last component), ``:func:`pkg.f```
  becomes ```pkg.f``` (any role: class, func, meth, mod, data, attr, exc, obj, const);
* a line ending in ``::`` (a paragraph introducing an indented block) ends in ``:``;
* a docstring whose ``Args:`` section documents two parameters in one entry (``a, b: ...``) is parsed without
  the checks that would flag that entry (unknown parameter, missing type); it is rendered as written. Every
  other docstring keeps the strict checks.

The source files are not touched.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`(~?)([^`<]*?)(?:\s*<([^`>]+)>)?`")
_LITERAL = re.compile(r"(?<=\S)::$", re.MULTILINE)
_GROUPED_PARAM = re.compile(r"^\s+\w+(?:, \w+)+:", re.MULTILINE)


def _role(match: re.Match[str]) -> str:
    tilde, text, target = match.group(1), match.group(2).strip(), match.group(3)
    if target:  # :class:`label <target>`
        return f"`{text}`"
    name = text.split(".")[-1] if tilde else text
    return f"`{name}`"


def rewrite(text: str) -> str:
    """The Markdown-friendly form of one docstring."""
    return _LITERAL.sub(":", _ROLE.sub(_role, text))


class RstRoles(griffe.Extension):
    """Rewrite reStructuredText roles and literal markers in every docstring griffe reads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        docstring = obj.docstring
        if docstring is None:
            return
        docstring.value = rewrite(docstring.value)
        if _GROUPED_PARAM.search(docstring.value):
            relaxed = {**(docstring.parser_options or {}), "warn_unknown_params": False, "warn_missing_types": False}
            docstring.parser_options = relaxed
