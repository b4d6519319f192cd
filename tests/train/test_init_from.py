"""Fine-tuning keeps what was trained: ``model.init_from`` a multi-process run loads every class centre (from
``model.pt``, which gathers the shards, or from the sharded checkpoint), and ScaleFace's fine-tune keeps them
frozen, as the official recipe does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from _helpers.ddp import run_distributed
from _helpers.ddp_train_workers import ddp_config, run_rank
from qualiface.config import config_from_dict
from qualiface.train import train

pytestmark = pytest.mark.ddp


@pytest.fixture(scope="module")
def arcface_two_processes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor]:
    """A 2-process gloo ArcFace run (7 classes: 4 centres on rank 0, 3 on rank 1) and its trained centres."""
    out = tmp_path_factory.mktemp("arcface") / "run"
    run_distributed(run_rank, 2, str(out), "arcface", 4, 2)
    shards = [torch.load(out / "checkpoints" / "step_00000002" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [s["head"]["weight"].shape[0] for s in shards] == [4, 3]
    return out, torch.cat([s["head"]["weight"] for s in shards])


def _finetune(out: Path, source: Path, freeze_centres: bool | None = True, **changes: Any) -> dict[str, Any]:
    data = ddp_config(str(out), "scaleface", 8, 3)
    data["model"]["kwargs"]["quality_branch"] = "scaleface"
    data["model"].update(init_from=str(source), freeze_backbone=True)
    if freeze_centres is not None:  # None: the default, frozen with a frozen backbone
        data["head"]["freeze_centres"] = freeze_centres
    for section, values in changes.items():
        data[section].update(values)
    return data


def _centres_seen(data: dict[str, Any]) -> tuple[list[torch.Tensor], Path]:
    seen: list[torch.Tensor] = []

    def record(trainer: Any, step: int, row: dict[str, float]) -> None:
        seen.append(trainer.head.weight.detach().clone())

    result = train(config_from_dict(data), callbacks=[record])
    assert result.model_path is not None
    return seen, result.model_path


def test_model_pt_of_a_two_process_run_holds_every_centre(arcface_two_processes) -> None:
    run, centres = arcface_two_processes
    model = torch.load(run / "model.pt", weights_only=True)
    assert torch.equal(model["head_state"]["weight"], centres)
    assert model["card"]["provenance"]["num_classes"] == 7


@pytest.mark.parametrize("source", ["run", "model.pt", "checkpoint"])
def test_scaleface_finetune_starts_and_ends_with_the_trained_centres(tmp_path, arcface_two_processes, source):
    run, centres = arcface_two_processes
    path = {"run": run, "model.pt": run / "model.pt", "checkpoint": run / "checkpoints" / "step_00000002"}[source]
    seen, model_path = _centres_seen(_finetune(tmp_path / "scale", path, None if source == "run" else True))
    assert len(seen) == 3
    for weight in seen:  # every step of the fine-tune
        assert torch.equal(weight, centres)
    final = torch.load(model_path, weights_only=True)
    assert torch.equal(final["head_state"]["weight"], centres)
    trained = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    for key, value in trained.items():  # the frozen backbone, loaded and unchanged
        assert torch.equal(final["state_dict"][key], value), key
    assert any(k.startswith("scale_predictor.") for k in final["state_dict"])


def test_frozen_centres_without_trained_centres_are_refused(tmp_path, arcface_two_processes) -> None:
    run, _ = arcface_two_processes
    other_classes = _finetune(
        tmp_path / "scale",
        run,
        data={"synthetic": {**ddp_config("", "x", 8, 1)["data"]["synthetic"], "num_identities": 9}},
    )
    with pytest.raises(ValueError, match=r"class centres of shape \(7, 32\), but head.freeze_centres needs"):
        train(config_from_dict(other_classes))
    stripped = tmp_path / "no_centres.pt"
    model = torch.load(run / "model.pt", weights_only=True)
    model["head_state"] = None
    torch.save(model, stripped)
    with pytest.raises(ValueError, match="no class centres"):
        train(config_from_dict(_finetune(tmp_path / "scale2", stripped)))


def test_centres_train_when_asked(tmp_path, arcface_two_processes) -> None:
    run, centres = arcface_two_processes
    seen, _ = _centres_seen(_finetune(tmp_path / "scale", run, freeze_centres=False))
    assert (seen[-1] - centres).abs().max() > 0  # loaded, then trained (the first step's warm-up lr is 0)
    data = _finetune(tmp_path / "scale2", run, freeze_centres=True)
    data["model"]["init_from"] = None
    with pytest.raises(ValueError, match=r"freeze_centres needs model\.init_from"):
        train(config_from_dict(data))


def test_weights_of_another_shape_are_one_input_error(tmp_path, arcface_two_processes) -> None:
    """A backbone of another embedding size: before, PyTorch's multi-line RuntimeError (a traceback in the CLI)."""
    from qualiface.errors import InputError

    run, _ = arcface_two_processes
    data = _finetune(tmp_path / "wider", run)
    data["model"]["kwargs"]["embedding_dim"] = 48
    with pytest.raises(InputError, match=r"model\.init_from .*: the weights do not fit .*size mismatch") as info:
        train(config_from_dict(data))
    assert "\n" not in str(info.value)
