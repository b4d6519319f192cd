"""The component registry: strict names, close-match hints, and removal."""

import pytest

from qualiface.registry import Registry


def test_register_create_unregister() -> None:
    registry: Registry[int] = Registry("thing")
    registry.register("seven")(lambda: 7)
    assert registry.create("seven") == 7
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("seven")(lambda: 8)
    with pytest.raises(KeyError, match="did you mean seven"):
        registry.get("sevne")
    registry.unregister("seven")
    assert "seven" not in registry
    with pytest.raises(KeyError, match="unknown thing"):
        registry.unregister("seven")
