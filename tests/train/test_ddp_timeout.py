"""``train.ddp_timeout``: the minutes a collective waits for the other ranks, from the config to the process group."""

from datetime import timedelta
from typing import Any

import pytest
import torch.distributed as dist

from qualiface.config import ConfigError
from qualiface.train import train


class _StartedError(Exception):
    """Raised by the fake ``init_process_group``: the run stops before it needs a real process group."""


def test_the_timeout_of_the_config_reaches_init_process_group(make_config, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_init(backend: str, **kwargs: Any) -> None:
        seen.update(kwargs, backend=backend)
        raise _StartedError

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", fake_init)
    with pytest.raises(_StartedError):
        train(make_config(overrides=("train.ddp_timeout=2.5", "train.device=cpu")))
    assert seen["timeout"] == timedelta(minutes=2.5)
    assert seen["backend"] == "gloo"


def test_the_default_timeout_is_ten_minutes(make_config) -> None:
    assert make_config().train.ddp_timeout == 10.0


@pytest.mark.parametrize("value", ["0", "-1", "1441", ".nan", ".inf"])
def test_the_timeout_is_bounded(make_config, value: str) -> None:
    with pytest.raises(ConfigError, match=r"^train\.ddp_timeout: must be a finite number > 0 and <= 1,440, got"):
        make_config(overrides=(f"train.ddp_timeout={value}",))
