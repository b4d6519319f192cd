"""Model files are bounded inputs: a tensor that declares more than its storage holds (a zero-stride view, overlapping
strides), a file whose tensors declare far more than its size, a legacy file that declares storages it does not
hold, an unreadable file, bad safetensors or card metadata and a broken calibration sidecar are each refused with
one line naming the file (and the tensor), before anything allocates what they declare."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import qualiface
from qualiface.cli.app import app
from qualiface.errors import InputError
from qualiface.models import ModelLoadError, load_model
from qualiface.models.calibration import calibration_path
from qualiface.models.card import CardError, ModelCard, preprocessing_from_dict
from qualiface.models.export import export_safetensors
from qualiface.models.formats.common import torch_load

runner = CliRunner()


def _zero_stride_model_file(path: Path, embedding_dim: int = 1 << 20) -> int:
    """A ``model.pt`` of iresnet18 whose every weight is a float16 zero-stride view of one element: about 56 KB on
    disk, declaring ``embedding_dim x 2048`` half floats for ``fc.weight`` (4 GiB; 8 GiB once made float32).
    Returns the bytes declared."""
    with torch.device("meta"):
        shapes = qualiface.create_backbone("iresnet18", input_size=32, embedding_dim=embedding_dim).state_dict()
    state = {
        key: torch.zeros(1, dtype=torch.float16 if v.is_floating_point() else v.dtype).expand(v.shape)
        if v.ndim
        else torch.zeros((), dtype=v.dtype)
        for key, v in shapes.items()
    }
    model = {
        "format": "qualiface.model/1",
        "backbone": "iresnet18",
        "backbone_kwargs": {"input_size": 32, "embedding_dim": embedding_dim},
        "state_dict": state,
        "head": {},
        "head_state": None,
    }
    torch.save(model, path)
    return sum(v.numel() * v.element_size() for v in state.values())


def test_a_zero_stride_model_file_is_refused_before_its_declared_size_is_allocated(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    declared = _zero_stride_model_file(path)
    assert path.stat().st_size < 100_000
    assert declared > 4 << 30
    script = textwrap.dedent(
        f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
        from qualiface.models import load_model
        try:
            load_model({str(path)!r})
        except Exception as exc:
            print(type(exc).__name__, exc)
        # VmHWM, not ru_maxrss: Linux carries the parent's ru_maxrss across fork and exec (a large pytest)
        print("maxrss_kib", next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    first, last = done.stdout.strip().splitlines()[0], done.stdout.strip().splitlines()[-1]
    assert first.startswith(f"ModelLoadError {path}: refused: tensor 'state_dict.conv1.weight'"), done.stdout
    assert "stride 0" in first
    assert int(last.split()[1]) < 1 << 20  # KiB: under 1 GiB resident, where the declared size is 8 GiB as float32


@pytest.mark.parametrize(
    ("tensor", "words"),
    [
        (torch.zeros(1).expand(10**9), "stride 0 on dimension 0"),
        (torch.zeros(4).as_strided((60_000, 60_000), (0, 0)), "stride 0 on dimension 0"),
        (torch.zeros(1999).as_strided((1000, 1000), (1, 1)), "overlapping strides"),
    ],
    ids=["expand", "as_strided-stride-0", "overlapping"],
)
def test_views_declaring_more_than_their_storage_are_refused_naming_the_tensor(
    tmp_path: Path, tensor: torch.Tensor, words: str
) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {"fc.weight": tensor}}, path)
    with pytest.raises(ModelLoadError, match=r"refused: tensor 'state_dict\.fc\.weight'") as info:
        torch_load(path)
    assert str(path) in str(info.value)
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_one_storage_viewed_by_many_tensors_exceeds_the_files_budget(tmp_path: Path) -> None:
    path = tmp_path / "many.pt"
    shared = torch.zeros(1 << 18)  # 1 MiB, stored once
    torch.save({"views": [shared[:] for _ in range(100)]}, path)
    assert path.stat().st_size < 2 << 20
    with pytest.raises(ModelLoadError, match=r"the tensors up to 'views\.\d+' declare \d+ bytes, more than"):
        torch_load(path)


def test_ordinary_views_and_tied_weights_still_load(tmp_path: Path) -> None:
    base = torch.randn(10, 10)
    path = tmp_path / "views.pt"
    torch.save({"a": base, "rows": base[2:], "t": base.t(), "tied": base, "empty": torch.zeros(0, 5)}, path)
    loaded = torch_load(path)
    assert torch.equal(loaded["rows"], base[2:])
    assert torch.equal(loaded["t"], base.t())


def _legacy_with_declared_storage(path: Path, numel: int) -> None:
    """A legacy-format (pre-1.6) file whose storage declares ``numel`` float32 elements but holds 1000."""
    torch.save({"w": torch.arange(1000, dtype=torch.float32)}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    storage_numel = b"M\xe8\x03"  # BININT2 1000: the storage's element count comes first, then the tensor's size
    assert data.count(storage_numel) >= 1
    path.write_bytes(data.replace(storage_numel, b"J" + struct.pack("<i", numel), 1))


def test_legacy_files_are_checked_before_their_storages_are_allocated(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save({"a": torch.randn(3, 4)}, good, _use_new_zipfile_serialization=False)
    assert torch_load(good)["a"].shape == (3, 4)
    broadcast = tmp_path / "broadcast.pt"
    torch.save({"a": torch.zeros(1).expand(10**9)}, broadcast, _use_new_zipfile_serialization=False)
    with pytest.raises(ModelLoadError, match=r"tensor 'a' shape .* stride 0"):
        torch_load(broadcast)
    declared = tmp_path / "declared.pt"
    _legacy_with_declared_storage(declared, 2 * 10**9)
    with pytest.raises(
        ModelLoadError, match=re.escape(f"{declared}: refused: the storages up to tensor 'w' declare 8000000000")
    ):
        torch_load(declared)


@pytest.mark.parametrize("content", [b"hello, not a checkpoint", b"\x80\x02K\x01.", b"PK\x03\x04broken zip"])
def test_a_file_that_is_not_a_checkpoint_is_one_error_naming_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=re.escape(f"{path}: ")) as info:
        torch_load(path)
    assert "\n" not in str(info.value)


def _safetensors_with(path: Path, source: Path, change: dict, tensor: str | None = None) -> Path:
    raw = source.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + size])
    for key, value in change.items():
        if key == "__metadata__":
            header[key] = {**header[key], **value}
        else:
            name = tensor or next(k for k in header if k != "__metadata__")
            header[name] = {**header[name], key: value}
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + size :])
    return path


@pytest.fixture(scope="module")
def safetensors_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    backbone = qualiface.create_backbone("iresnet18", input_size=32, embedding_dim=16)
    return export_safetensors(backbone, tmp_path_factory.mktemp("st") / "model.safetensors")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"shape": [10**6, 10**6]}, "not a readable safetensors file"),
        ({"data_offsets": [0, 10**12]}, "not a readable safetensors file"),
        ({"__metadata__": {"qualiface.card": "[" * 100_000}}, "model card: JSON arrays or objects nested too deeply"),
        ({"__metadata__": {"qualiface.card": '{"version": NaN}'}}, "model card: NaN is not a number JSON allows"),
        ({"__metadata__": {"qualiface.card": "{nope"}}, "model card: not valid JSON"),
    ],
    ids=["shape", "offsets", "deep-card", "nan-card", "not-json-card"],
)
def test_bad_safetensors_headers_are_one_error_naming_the_file(
    tmp_path: Path, safetensors_model: Path, change: dict, words: str
) -> None:
    path = _safetensors_with(tmp_path / "bad.safetensors", safetensors_model, change)
    with pytest.raises(ModelLoadError, match=re.escape(f"{path}: ")) as info:
        load_model(path)
    assert words in str(info.value)


@pytest.mark.parametrize("change", [{"embedding_dim": -1}, {"quality_branch": 5}])
def test_architecture_arguments_a_backbone_refuses_are_one_error_naming_the_file(
    tmp_path: Path, safetensors_model: Path, change: dict
) -> None:
    """Before: a RuntimeError (a negative dimension) or an AttributeError (an int branch name) traceback."""
    raw = safetensors_model.read_bytes()
    card = json.loads(json.loads(raw[8 : 8 + struct.unpack("<Q", raw[:8])[0]])["__metadata__"]["qualiface.card"])
    card["architecture_kwargs"] = {**card["architecture_kwargs"], **change}
    path = _safetensors_with(
        tmp_path / "bad.safetensors", safetensors_model, {"__metadata__": {"qualiface.card": json.dumps(card)}}
    )
    with pytest.raises(ModelLoadError, match=re.escape(f"{path}: cannot build backbone 'iresnet18' with")):
        load_model(path)


def test_integer_weights_for_a_float_parameter_are_a_mismatch_naming_the_key(
    tmp_path: Path, safetensors_model: Path
) -> None:
    """Before: load_state_dict's RuntimeError traceback (an int32 tensor cannot be a Parameter)."""
    path = _safetensors_with(tmp_path / "int.safetensors", safetensors_model, {"dtype": "I32"}, "conv1.weight")
    with pytest.raises(ModelLoadError, match=re.escape(f"{path}: cannot load as safetensors (iresnet18)")) as info:
        load_model(path)
    assert "torch.int32 vs torch.float32" in str(info.value)


def test_card_fields_of_the_wrong_json_type_are_refused_naming_the_field(safetensors_model: Path) -> None:
    card = load_model(safetensors_model).card.to_dict()
    for key, value in [("provenance", None), ("name", ["x"]), ("architecture_kwargs", [1]), ("licence", 3)]:
        with pytest.raises(CardError, match=f"model card: {key} must be"):
            ModelCard.from_dict({**card, key: value})
    with pytest.raises(CardError, match="preprocessing must be a JSON object, got list"):
        preprocessing_from_dict([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize("content", [b"[" * 100_000, b"x" * (2 << 20), b'{"format": Infinity}'])
def test_a_broken_calibration_sidecar_is_one_line_from_the_cli(
    tmp_path: Path, safetensors_model: Path, content: bytes
) -> None:
    model = tmp_path / "m.safetensors"
    model.write_bytes(safetensors_model.read_bytes())
    sidecar = calibration_path(model)
    sidecar.write_bytes(content)
    with pytest.raises(ModelLoadError, match=re.escape(f"{sidecar}: unreadable calibration file")):
        load_model(model)
    result = runner.invoke(app, ["info", str(model)])
    assert isinstance(result.exception, SystemExit)
    assert result.exit_code != 0
    assert f"error: {sidecar}: unreadable calibration file" in result.output
    assert "Traceback" not in result.output


def test_a_model_file_with_a_non_dict_backbone_kwargs_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"format": "qualiface.model/1", "backbone": "iresnet18", "state_dict": {}, "backbone_kwargs": [1]}, path)
    with pytest.raises(ModelLoadError, match=re.escape(f"{path}: backbone_kwargs is a list, not a dict")):
        load_model(path)


def test_init_from_a_refused_file_is_one_line_from_the_cli(tmp_path: Path) -> None:
    source = tmp_path / "not_a_model.pt"
    source.write_text("hello")
    config = Path(__file__).parents[2] / "configs" / "synthetic_tiny.yaml"
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        ["train", str(config), "--set", f"model.init_from={source}", "--set", "train.steps=1", "--out", str(out)],
    )
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code != 0
    assert f"error: model.init_from: {source}: not a readable PyTorch file" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("state", [[1, 2], {"backbone": {}}, {"backbone": [], "head": {"weight": torch.zeros(2, 2)}}])
def test_init_from_a_checkpoint_folder_of_the_wrong_shape_is_one_error(tmp_path: Path, state: object) -> None:
    from qualiface.train.init_from import read_init_source

    folder = tmp_path / "step_00000001"
    folder.mkdir()
    torch.save(state, folder / "rank0.pt")
    (folder / "COMPLETE").write_text("")
    with pytest.raises(
        InputError, match=re.escape(f"model.init_from: {folder / 'rank0.pt'}: not a qualiface training checkpoint")
    ):
        read_init_source(folder)
