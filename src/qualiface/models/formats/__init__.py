"""The registered model formats: every module of this package defines one (see :mod:`.base`); importing the
package imports them all, so a new format is one new module here."""

from qualiface.models.formats.base import ModelFormat, detect_torch_format, format_names, get_format, guess_format
from qualiface.models.formats.common import LoadRequest, ModelLoadError
from qualiface.registry import import_submodules

import_submodules(__name__, __path__)  # every module defines one format

__all__ = [
    "LoadRequest",
    "ModelFormat",
    "ModelLoadError",
    "detect_torch_format",
    "format_names",
    "get_format",
    "guess_format",
]
