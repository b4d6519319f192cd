"""Every module of a registry's package is imported with the package and registers what it defines: a component
class that nothing registers, or a module the package does not import, fails here."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys

import pytest

from qualiface.backbones.base import Backbone
from qualiface.heads.base import Head
from qualiface.models.formats.base import ModelFormat
from qualiface.quality.base import QualityEstimator
from qualiface.quality.branches import QualityBranch
from qualiface.registry import BACKBONES, HEADS, MODEL_FORMATS, QUALITY, QUALITY_BRANCHES, Registry

PACKAGES = {
    "qualiface.backbones": ((BACKBONES,), Backbone),
    "qualiface.heads": ((HEADS,), Head),
    "qualiface.quality": ((QUALITY, QUALITY_BRANCHES), (QualityEstimator, QualityBranch)),
    "qualiface.models.formats": ((MODEL_FORMATS,), ModelFormat),
}


def _registered(registries: tuple[Registry, ...]) -> list[object]:
    return [registry.get(name) for registry in registries for name in registry.names()]


@pytest.mark.parametrize("package", list(PACKAGES))
def test_every_module_is_imported_and_registers_its_components(package: str) -> None:
    registries, base = PACKAGES[package]
    module = importlib.import_module(package)
    entries = _registered(registries)
    builds = set()
    for entry in entries:
        builds.add(entry)
        hints = inspect.signature(entry).return_annotation if callable(entry) else None
        if isinstance(hints, str):  # a factory function: "-> IResNet"
            builds.update(
                c for c in vars(sys.modules[entry.__module__]).values() if getattr(c, "__name__", "") == hints
            )
    for info in pkgutil.iter_modules(module.__path__):
        name = f"{package}.{info.name}"
        assert name in sys.modules, f"{name} is not imported with {package}: its components would not exist"
        defined = [
            cls
            for cls in vars(sys.modules[name]).values()
            if inspect.isclass(cls)
            and issubclass(cls, base)
            and cls.__module__ == name
            and not cls.__name__.startswith("_")
            and not cls.__subclasses__()  # a base class of others
        ]
        for cls in defined:
            assert cls in builds, f"{name}.{cls.__name__} is defined but not registered"
