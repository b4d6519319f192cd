"""Checkpoints are atomic: an interrupted save leaves the previous one usable and is never resumed from."""

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from qualiface.train import checkpoint as ckpt
from qualiface.train import train
from qualiface.train.checkpoint import list_checkpoints
from qualiface.train.distributed import DistInfo

ONE = DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


def test_save_list_and_load(tmp_path: Path) -> None:
    for step in (5, 10, 15):
        ckpt.save_checkpoint(tmp_path, step, {"step": step, "w": torch.full((2,), float(step))}, ONE, keep=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [10, 15]  # the oldest was pruned
    latest = ckpt.latest_checkpoint(tmp_path)
    assert latest == tmp_path / "checkpoints" / "step_00000015"
    state = ckpt.load_rank_state(latest, ONE)
    assert state["step"] == 15
    torch.testing.assert_close(state["w"], torch.full((2,), 15.0))


def test_a_save_interrupted_mid_write_leaves_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt.save_checkpoint(tmp_path, 5, {"step": 5}, ONE, keep=2)
    real_save = torch.save

    def dying_save(obj, fh, *args, **kwargs):  # writes half a file, then the process "dies"
        real_save(obj, fh, *args, **kwargs)
        fh.truncate(10)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path, 10, {"step": 10, "w": torch.zeros(1000)}, ONE, keep=2)
    monkeypatch.setattr(torch, "save", real_save)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [5]
    partial = tmp_path / "checkpoints" / "step_00000010.partial"
    assert partial.is_dir()
    assert not list(partial.glob("rank*.pt"))
    assert ckpt.load_rank_state(ckpt.latest_checkpoint(tmp_path), ONE)["step"] == 5
    ckpt.save_checkpoint(tmp_path, 10, {"step": 10}, ONE, keep=2)  # the next save cleans up
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [5, 10]


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.pt"
    ckpt.atomic_save({"v": torch.ones(3)}, path)

    def failing_save(obj, fh, *args, **kwargs):
        fh.write(b"garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.atomic_save({"v": torch.zeros(3)}, path)
    monkeypatch.undo()
    torch.testing.assert_close(torch.load(path, weights_only=True)["v"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_incomplete_or_foreign_checkpoints_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints" / "step_00000003"
    folder.mkdir(parents=True)
    torch.save({"step": 3}, folder / "rank0.pt")
    assert ckpt.latest_checkpoint(tmp_path) is None
    with pytest.raises(ckpt.CheckpointError, match="no COMPLETE marker"):
        ckpt.load_rank_state(folder, ONE)
    (folder / "COMPLETE").write_text("step 3\n")
    two = DistInfo(rank=0, local_rank=0, world_size=2, device=torch.device("cpu"))
    with pytest.raises(ckpt.CheckpointError, match="written by 1 process"):
        ckpt.load_rank_state(folder, two)
    (folder / "rank0.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ckpt.CheckpointError, match="cannot be read"):
        ckpt.load_rank_state(folder, ONE)


def test_rng_state_round_trip() -> None:
    state = ckpt.rng_state()
    first = (torch.rand(3), np.random.rand(2), random.random())  # noqa: NPY002
    ckpt.set_rng_state(state)
    second = (torch.rand(3), np.random.rand(2), random.random())  # noqa: NPY002
    torch.testing.assert_close(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert first[2] == second[2]


def test_a_checkpoint_is_flushed_to_disk_before_and_after_its_rename(tmp_path, monkeypatch) -> None:
    """The rank files, the COMPLETE marker and the folder entries are fsynced before the folder is renamed into
    place, and the checkpoints folder after it (a power loss leaves no COMPLETE checkpoint with missing data)."""
    import qualiface.atomic
    import qualiface.train.checkpoint as ckpt_module

    flushed: list[Path] = []
    real = qualiface.atomic.fsync_dir

    def record(folder):
        flushed.append(Path(folder))
        real(folder)

    monkeypatch.setattr(qualiface.atomic, "fsync_dir", record)
    monkeypatch.setattr(ckpt_module, "fsync_dir", record)
    final = ckpt_module.save_checkpoint(tmp_path, 3, {"x": torch.zeros(2)}, ONE, keep=2)
    partial = final.with_name(final.name + ".partial")
    assert flushed.count(partial) >= 2  # after the rank file and after the marker
    assert flushed[-1] == final.parent
    assert (final / "COMPLETE").read_text().startswith("step 3")


def test_a_new_start_removes_what_a_killed_run_left_behind(make_config) -> None:
    cfg = make_config(overrides=("train.steps=2", "train.checkpoint_every=1"))
    train(cfg)
    run_dir = Path(cfg.train.out_dir)
    stale = [
        run_dir / "checkpoints" / "step_00000007.partial",
        run_dir / ".model.pt.tmp-123-456",
        run_dir / "checkpoints" / "step_00000002" / ".rank0.pt.tmp-1-2",
    ]
    stale[0].mkdir()
    (stale[0] / "rank0.pt").write_bytes(b"half")
    stale[1].write_bytes(b"half")
    stale[2].write_bytes(b"half")
    train(make_config(overrides=("train.steps=3", "train.checkpoint_every=1")), resume=True)
    assert not any(path.exists() for path in stale)
    assert [step for step, _ in list_checkpoints(run_dir)] == [2, 3]


def test_a_rank_file_whose_tensors_declare_more_than_they_hold_is_refused(tmp_path: Path) -> None:
    """A broadcast view (4 bytes of data, 4 GB declared) in a checkpoint is refused before anything touches it."""
    ckpt.save_checkpoint(tmp_path, 1, {"step": 1, "w": torch.zeros(1).expand(10**9)}, ONE, keep=2)
    folder = ckpt.latest_checkpoint(tmp_path)
    assert folder is not None
    assert (folder / "rank0.pt").stat().st_size < 10_000
    with pytest.raises(ckpt.CheckpointError, match=r"rank0\.pt: refused, tensor 'w'"):
        ckpt.load_rank_state(folder, ONE)
