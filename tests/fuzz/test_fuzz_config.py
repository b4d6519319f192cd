"""Property-based tests of the config loader: mutated or random YAML text gives a config, or load_yaml's
yaml.YAMLError / ConfigError, and load_config's ConfigError naming the file, nothing else (profiles in
tests/_helpers/fuzz.py; ``-m fuzz`` for the long runs)."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from _helpers.fuzz import FAST, LONG, mutate
from qualiface.config import ConfigError, load_config
from qualiface.config.io import load_yaml

SEED = (Path(__file__).parents[2] / "configs" / "synthetic_tiny.yaml").read_bytes()
#: What an edit inserts: YAML syntax (anchors, aliases, tags, flow collections, merge keys), numbers at the edges.
pieces = st.sampled_from(
    (b":", b": ", b"- ", b"\n", b"  ", b"\t", b"&a ", b"*a", b"!!python/object:os.system ", b"!!binary ", b"[", b"]",
     b"{", b"}", b"<<: ", b"'", b'"', b"#", b"~", b"null", b".nan", b"-.inf", b"1e400", b"9" * 30, b"0x1F", b"\xff",
     b"\x00", b"%YAML 1.1\n", b"---\n", b"...\n", b"? ")
)  # fmt: skip
edits = st.lists(
    st.tuples(st.sampled_from(("flip", "cut", "insert")), st.integers(0, 1 << 10), pieces | st.binary(max_size=4)),
    min_size=1,
    max_size=6,
)


def _check(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        with contextlib.suppress(yaml.YAMLError, ConfigError):
            load_yaml(text, "fuzz.yaml")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.yaml"
        path.write_bytes(data)
        try:
            load_config(path)
        except ConfigError as exc:
            message = str(exc)  # a YAML syntax error quotes the line and a marker: several lines
            assert message.startswith(str(path)), message


def test_the_seed_config_loads() -> None:
    _check(SEED)


@FAST
@given(edits)
def test_mutated_config(config_edits: list[tuple[str, int, bytes]]) -> None:
    _check(mutate(SEED, config_edits))


@FAST
@given(st.text(max_size=64).map(str.encode) | st.binary(max_size=64))
def test_random_text(data: bytes) -> None:
    _check(data)


@pytest.mark.fuzz
@LONG
@given(edits)
def test_mutated_config_long(config_edits: list[tuple[str, int, bytes]]) -> None:
    _check(mutate(SEED, config_edits))
