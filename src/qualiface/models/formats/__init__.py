"""The registered model formats: every module of this package defines one (see :mod:`.base`); importing the
package imports them all, so a new format is one new module here."""

import importlib
import pkgutil

from qualiface.models.formats.base import ModelFormat, detect_torch_format, format_names, get_format, guess_format
from qualiface.models.formats.common import LoadRequest, ModelLoadError

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "common"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "LoadRequest",
    "ModelFormat",
    "ModelLoadError",
    "detect_torch_format",
    "format_names",
    "get_format",
    "guess_format",
]
