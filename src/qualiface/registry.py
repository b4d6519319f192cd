"""A small strict registry: one instance per family of components (backbones, heads, quality estimators)."""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import pkgutil
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class Registry(Generic[T]):
    """Maps lower_snake names to factory callables.

    Registering a name twice is an error; an unknown name raises ``KeyError`` listing close matches;
    keyword arguments whose value is ``None`` are dropped so that CLI defaults never override the
    paper defaults of a component.
    """

    def __init__(self, family: str) -> None:
        self.family = family
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str | None = None) -> Callable[[F], F]:
        """Decorator registering ``fn`` under ``name`` (default: the function or class name, lower-cased)."""

        def decorator(fn: F) -> F:
            key = (name or fn.__name__).lower()
            if key in self._entries:
                raise ValueError(f"{self.family} {key!r} is registered twice")
            self._entries[key] = fn
            return fn

        return decorator

    def unregister(self, name: str) -> None:
        """Remove ``name`` (e.g. a component registered for a test or an experiment); unknown names raise."""
        self.get(name)
        del self._entries[name.lower()]

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered under ``name``."""
        key = name.lower()
        if key not in self._entries:
            close = difflib.get_close_matches(key, self._entries, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise KeyError(f"unknown {self.family} {name!r}{hint} Known: {', '.join(sorted(self._entries))}")
        return self._entries[key]

    def create(self, name: str, /, **kwargs: Any) -> T:
        """Build the component registered under ``name`` with ``kwargs`` (``None`` values dropped)."""
        factory = self.get(name)
        return factory(**{k: v for k, v in kwargs.items() if v is not None})

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching an fnmatch ``pattern``."""
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries


BACKBONES: Registry[Any] = Registry("backbone")
HEADS: Registry[Any] = Registry("head")
QUALITY: Registry[Any] = Registry("quality estimator")
QUALITY_BRANCHES: Registry[Any] = Registry("quality branch")
MODEL_FORMATS: Registry[Any] = Registry("model format")


def import_submodules(package: str, path: list[str], *, skip: tuple[str, ...] = ()) -> None:
    """Import every module of ``package`` (its ``__path__``), so that each registers what it defines: a new
    component is one new module, and no module can be left out of an import list."""
    for module in pkgutil.iter_modules(path):
        if module.name not in skip:
            importlib.import_module(f"{package}.{module.name}")
