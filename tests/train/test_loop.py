"""The training loop: loss goes down for every head, exact resume, non-finite stop, outputs on disk."""

import csv
from pathlib import Path

import pytest
import torch

import qualiface
from qualiface.train import NonFiniteLossError, train
from qualiface.train.checkpoint import CheckpointError, latest_checkpoint, list_checkpoints


def _losses(run_dir: Path) -> list[float]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return [float(row["loss"]) for row in csv.DictReader(fh) if row.get("loss")]


@pytest.mark.parametrize("head", qualiface.list_heads())
def test_a_short_run_lowers_the_loss(make_config, head: str) -> None:
    cfg = make_config(head=head, overrides=("train.steps=24", "train.log_every=4", "data.batch_size=16"))
    result = train(cfg)
    losses = _losses(result.run_dir)
    assert len(losses) == 6
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.8 * losses[0], losses


class _KilledError(Exception):
    pass


def _kill_at(step: int):
    def callback(trainer, current: int, row: dict) -> None:
        if current == step:
            raise _KilledError

    return callback


def _final_state(run_dir: Path) -> dict:
    folder = latest_checkpoint(run_dir)
    assert folder is not None
    return torch.load(folder / "rank0.pt", weights_only=True)


@pytest.mark.parametrize("head", ["unitsface", "adaface"])  # stateful heads: memory, EMA statistics, sampling
def test_resume_gives_the_same_weights_as_a_straight_run(make_config, head: str) -> None:
    common = ("train.steps=8", "train.checkpoint_every=4", "head.sample_rate=0.5", "data.augment=adaface")
    straight = train(make_config("straight", head=head, overrides=common))
    killed_cfg = make_config("killed", head=head, overrides=(*common, "data.num_workers=2"))
    with pytest.raises(_KilledError):
        train(killed_cfg, callbacks=[_kill_at(6)])  # dies two steps after the step-4 checkpoint
    assert [s for s, _ in list_checkpoints(killed_cfg.train.out_dir and Path(killed_cfg.train.out_dir))] == [4]
    resumed = train(killed_cfg, resume=True)
    assert resumed.step == straight.step == 8
    a, b = _final_state(straight.run_dir), _final_state(resumed.run_dir)
    for part in ("backbone", "head"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs after resume"
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert _losses(straight.run_dir) == _losses(resumed.run_dir)  # metrics.csv continues where it stopped


def test_resume_without_a_checkpoint_is_a_clear_error(make_config) -> None:
    with pytest.raises(CheckpointError, match="no complete checkpoint to resume from"):
        train(make_config(), resume=True)


def test_resume_with_a_different_model_is_refused(make_config) -> None:
    train(make_config(overrides=("train.steps=2",)))
    with pytest.raises(CheckpointError, match=r"\['head'\] differ"):
        train(make_config(overrides=("train.steps=4", "head.name=cosface")), resume=True)


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(make_config) -> None:
    cfg = make_config(overrides=("train.steps=10", "train.checkpoint_every=2"))

    def poison(trainer, step: int, row: dict) -> None:
        if step == 3:
            with torch.no_grad():
                trainer.backbone.fc.weight.fill_(float("nan"))

    with pytest.raises(NonFiniteLossError, match=r"step 4: the backbone output contains NaN.*step_00000002"):
        train(cfg, callbacks=[poison])
    run_dir = Path(cfg.train.out_dir)
    assert [s for s, _ in list_checkpoints(run_dir)] == [2]
    state = torch.load(latest_checkpoint(run_dir) / "rank0.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["backbone"].values() if v.is_floating_point())


def test_outputs_of_a_run(make_config) -> None:
    cfg = make_config(
        overrides=("train.steps=4", "eval.sets=[{kind: synthetic, num_pairs: 40, name: held_out}]", "eval.every=2"),
        log={"tensorboard": True},
    )
    result = train(cfg)
    run_dir = result.run_dir
    assert (run_dir / "config.yaml").is_file()
    assert (run_dir / "run.json").is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    model = torch.load(result.model_path, weights_only=True)
    assert model["format"] == "qualiface.model/1"
    assert model["backbone"] == "tiny_cnn"
    backbone = qualiface.create_backbone("tiny_cnn", **model["backbone_kwargs"])
    backbone.load_state_dict(model["state_dict"])
    with open(run_dir / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["step"] for r in rows if r.get("eval/held_out/accuracy")] == ["2", "4"]
    assert 0.0 <= result.eval_metrics["eval/held_out/accuracy"] <= 1.0


def test_head_and_backbone_must_agree_on_the_quality_output(make_config) -> None:
    with pytest.raises(ValueError, match="quality_branch: cr_fiqa"):
        train(make_config(head="cr_fiqa", overrides=("model.kwargs={input_size: 16}",)))
    with pytest.raises(ValueError, match="does not use"):
        train(make_config(head="arcface", overrides=("model.kwargs={input_size: 16, quality_branch: scaleface}",)))


def test_init_from_a_previous_run_and_freeze_the_backbone(make_config) -> None:
    first = train(make_config("first", head="arcface", overrides=("train.steps=2",)))
    cfg = make_config(
        "second",
        head="scaleface",
        overrides=(
            "train.steps=2",
            f"model.init_from={first.run_dir}",
            "model.freeze_backbone=true",
            "model.kwargs={input_size: 16, quality_branch: scaleface}",
        ),
    )
    second = train(cfg)
    before = torch.load(first.model_path, weights_only=True)
    after = torch.load(second.model_path, weights_only=True)
    for key, value in before["state_dict"].items():
        assert torch.equal(value, after["state_dict"][key]), key  # frozen: unchanged (and loaded)
    assert any(k.startswith("scale_predictor") for k in after["state_dict"])
    assert after["head_state"]["weight"].shape == before["head_state"]["weight"].shape


def test_bf16_autocast_runs_the_backbone_in_bf16_and_the_head_in_float32(make_config) -> None:
    seen: dict[str, torch.dtype] = {}
    cfg = make_config(head="magface", overrides=("train.steps=2", "train.precision=bf16"))

    def spy(trainer, step: int, row: dict) -> None:
        images = torch.randn(2, 3, 16, 16).contiguous(memory_format=torch.channels_last)
        with trainer._autocast():
            embeddings, _ = trainer.model(images)
        seen["embeddings"] = embeddings.dtype
        seen["head"] = trainer.head.weight.dtype
        seen["channels_last"] = trainer.channels_last

    result = train(cfg, callbacks=[spy])
    assert seen == {"embeddings": torch.bfloat16, "head": torch.float32, "channels_last": True}
    assert all(torch.isfinite(torch.tensor(_losses(result.run_dir))))


def _jpeg(image) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_verification_during_training_on_a_bin_pack_and_a_pairs_csv(make_config, tmp_path: Path) -> None:
    import pickle

    from qualiface.data.synthetic import SyntheticFaces, make_pairs

    faces = SyntheticFaces(6, 4, size=112, seed=99)
    pairs = make_pairs(faces, 40, seed=1)
    order = [int(i) for ab in zip(pairs.index_a, pairs.index_b, strict=True) for i in ab]
    pack = tmp_path / "held_out.bin"
    pack.write_bytes(pickle.dumps(([_jpeg(faces.render(i)[0]) for i in order], [bool(s) for s in pairs.issame])))
    images = tmp_path / "images"
    images.mkdir()
    rows = ["path_a,path_b,issame"]
    for a, b, same in zip(pairs.index_a, pairs.index_b, pairs.issame, strict=True):
        for index in (a, b):
            target = images / f"{index}.jpg"
            if not target.exists():
                target.write_bytes(_jpeg(faces.render(int(index))[0]))
        rows.append(f"{a}.jpg,{b}.jpg,{int(same)}")
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    cfg = make_config(
        overrides=(
            "train.steps=2",
            "model.kwargs={input_size: 112}",
            "data.synthetic.size=112",
            f"eval.sets=[{{kind: bin, path: '{pack}'}}, "
            f"{{kind: pairs, path: '{csv_path}', root: '{images}', name: csv}}]",
        )
    )
    result = train(cfg)
    for name in ("held_out", "csv"):
        assert 0.0 <= result.eval_metrics[f"eval/{name}/accuracy"] <= 1.0
    # the same images in both sets give the same embeddings, hence the same figures
    assert result.eval_metrics["eval/held_out/auc"] == pytest.approx(result.eval_metrics["eval/csv/auc"])


def test_a_unitsface_run_exports_its_learned_threshold_to_load_model(make_config) -> None:
    from qualiface.models import load_model

    result = train(make_config(head="unitsface", overrides=("train.steps=3",)))
    state = torch.load(latest_checkpoint(result.run_dir) / "rank0.pt", weights_only=True)
    expected = float(state["head"]["bias"][0]) / 64.0  # t = b / gamma
    model = load_model(result.run_dir)
    assert model.learned_threshold == pytest.approx(expected)
    assert model.threshold is None  # a learned threshold decides only when asked for
    assert model.calibration is None


def test_the_trainer_calls_the_backbones_after_step_hook(make_config, monkeypatch: pytest.MonkeyPatch) -> None:
    from _helpers.tiny_backbone import TinyCNN

    calls = []
    monkeypatch.setattr(TinyCNN, "after_optimizer_step", lambda self: calls.append(1), raising=False)
    train(make_config(overrides=("train.steps=3",)))
    assert len(calls) == 3


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_a_finished_run_is_never_overwritten_without_resume_or_overwrite(make_config) -> None:
    cfg = make_config("run", overrides=("train.steps=2", "train.checkpoint_every=1"))
    train(cfg)
    before = _snapshot(Path(cfg.train.out_dir))
    assert "model.pt" in before
    assert "metrics.csv" in before
    with pytest.raises(ValueError, match=r"holds a run already \(model\.pt, config\.yaml, .*--resume.*--overwrite"):
        train(make_config("run", overrides=("train.steps=3",)))
    assert _snapshot(Path(cfg.train.out_dir)) == before  # nothing written, truncated or pruned
    with pytest.raises(ValueError, match="choose one"):
        train(cfg, resume=True, overwrite=True)


def test_overwrite_replaces_the_run_and_keeps_other_files(make_config) -> None:
    cfg = make_config("run", overrides=("train.steps=3", "train.checkpoint_every=1"))
    train(cfg)
    run_dir = Path(cfg.train.out_dir)
    (run_dir / "notes.txt").write_text("mine")
    result = train(make_config("run", overrides=("train.steps=2", "train.checkpoint_every=100")), overwrite=True)
    assert result.step == 2
    assert torch.load(run_dir / "model.pt", weights_only=True)["step"] == 2
    assert [step for step, _ in list_checkpoints(run_dir)] == [2]  # the old run's checkpoints are gone
    assert len(_losses(run_dir)) == 2
    assert (run_dir / "notes.txt").read_text() == "mine"


def test_weights_that_are_not_finite_are_never_checkpointed(make_config) -> None:
    """A buffer the loss does not read (BatchNorm's running mean in training mode) turns NaN: the next checkpoint is
    refused, naming the tensor, and the last good checkpoint stays the newest."""
    cfg = make_config(overrides=("train.steps=10", "train.checkpoint_every=2"))

    def poison(trainer, step: int, row: dict) -> None:
        if step == 3:
            with torch.no_grad():
                trainer.backbone.features[1].running_mean.fill_(float("nan"))

    with pytest.raises(
        NonFiniteLossError, match=r"step 4: backbone\.features\.1\.running_mean is not finite.*step_00000002"
    ):
        train(cfg, callbacks=[poison])
    run_dir = Path(cfg.train.out_dir)
    assert [s for s, _ in list_checkpoints(run_dir)] == [2]
    assert not (run_dir / "model.pt").exists()
