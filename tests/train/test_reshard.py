"""A checkpoint written by N processes is read by M: the per-class rows (class centres, UniTSFace's memory, their
optimizer state) are split again by ShardSpec, the rest is taken as it is."""

from pathlib import Path
from typing import Any

import pytest
import torch

import qualiface
from qualiface.heads.sharding import ShardSpec
from qualiface.run_layout import COMPLETE_MARKER
from qualiface.train.checkpoint import CheckpointError, ClassRows, load_rank_state
from qualiface.train.distributed import DistInfo

CLASSES, DIM = 7, 3


@pytest.mark.parametrize("name", qualiface.list_heads())
def test_class_rows_are_exactly_the_entries_a_shard_splits(name: str) -> None:
    """7 classes on 2 ranks: 4 rows on rank 0, 3 on rank 1; the entries whose shape follows are class_rows."""
    heads = [qualiface.create_head(name, 8, CLASSES, shard=ShardSpec(rank, 2)) for rank in (0, 1)]
    states = [head.state_dict() for head in heads]
    split = {key for key in states[0] if states[0][key].shape != states[1][key].shape}
    assert split == heads[0].class_rows
    for key in split:
        assert [s[key].shape[0] for s in states] == [4, 3], key


def _rank_state(world: int, rank: int, full: dict[str, torch.Tensor]) -> dict[str, Any]:
    spec = ShardSpec(rank, world)
    rows = slice(spec.class_start(CLASSES), spec.class_start(CLASSES) + spec.num_local(CLASSES))
    return {
        "step": 5,
        "backbone": {"fc.weight": full["backbone"]},
        "head": {"weight": full["weight"][rows], "feat_mem": full["memory"][rows], "bias": full["bias"]},
        "optimizer": {
            "state": {
                0: {"exp_avg": full["backbone"] * 2, "step": torch.tensor(5.0)},
                1: {
                    "exp_avg": full["weight"][rows] * 3,
                    "exp_avg_sq": full["weight"][rows] ** 2,
                    "step": torch.tensor(5.0),
                },
                2: {"exp_avg": full["bias"] * 4, "step": torch.tensor(5.0)},
            },
            "param_groups": [{"params": [0]}, {"params": [1, 2]}],
        },
        "rng": {"rank": rank},
        "config": {},
        "world_size": world,
        "rank": rank,
    }


def _write(folder: Path, world: int, full: dict[str, torch.Tensor]) -> Path:
    folder.mkdir(parents=True)
    for rank in range(world):
        torch.save(_rank_state(world, rank, full), folder / f"rank{rank}.pt")
    (folder / COMPLETE_MARKER).write_text(f"step 5\nworld_size {world}\n")
    return folder


@pytest.fixture
def full() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "backbone": torch.randn(2, 2, generator=generator),
        "weight": torch.randn(CLASSES, DIM, generator=generator),
        "memory": torch.randn(CLASSES, DIM, generator=generator),
        "bias": torch.randn(1, generator=generator),
    }


ROWS = ClassRows(CLASSES, frozenset({"weight", "feat_mem"}), {1: "weight"})


@pytest.mark.parametrize(("old", "new"), [(2, 1), (1, 2), (2, 3), (3, 2), (4, 7), (7, 1)])
def test_every_new_rank_gets_its_rows_of_every_per_class_entry(tmp_path: Path, full, old: int, new: int) -> None:
    folder = _write(tmp_path / "step_00000005", old, full)
    for rank in range(new):
        state = load_rank_state(folder, DistInfo(rank, rank, new, torch.device("cpu")), ROWS)
        expected = _rank_state(new, rank, full)
        for key in ("weight", "feat_mem", "bias"):
            assert torch.equal(state["head"][key], expected["head"][key]), key
        for index, entry in expected["optimizer"]["state"].items():
            assert state["optimizer"]["state"][index].keys() == entry.keys()
            for key, value in entry.items():
                assert torch.equal(state["optimizer"]["state"][index][key], value), (index, key)
        assert torch.equal(state["backbone"]["fc.weight"], full["backbone"])
        first_old = next(r for r in range(old) if _overlaps(old, r, new, rank))
        assert state["rng"] == {"rank": first_old}  # the RNG of the first old rank whose classes it takes
        assert (state["world_size"], state["rank"], state["step"]) == (new, rank, 5)


def _overlaps(old: int, old_rank: int, new: int, rank: int) -> bool:
    a, b = ShardSpec(old_rank, old), ShardSpec(rank, new)
    return max(a.class_start(CLASSES), b.class_start(CLASSES)) < min(
        a.class_start(CLASSES) + a.num_local(CLASSES), b.class_start(CLASSES) + b.num_local(CLASSES)
    )


def test_without_class_rows_another_process_count_is_refused(tmp_path: Path, full) -> None:
    folder = _write(tmp_path / "step_00000005", 2, full)
    with pytest.raises(CheckpointError, match=r"written by 2 process\(es\) but this run has 1"):
        load_rank_state(folder, DistInfo(0, 0, 1, torch.device("cpu")))


def test_a_rank_file_with_the_wrong_rows_is_refused(tmp_path: Path, full) -> None:
    folder = _write(tmp_path / "step_00000005", 2, full)
    state = torch.load(folder / "rank1.pt", weights_only=True)
    state["head"]["weight"] = state["head"]["weight"][:2]  # 2 rows where rank 1 of 2 holds 3
    torch.save(state, folder / "rank1.pt")
    with pytest.raises(CheckpointError, match=r"head\.weight: shape \(2, 3\) in a rank file, expected 3 rows"):
        load_rank_state(folder, DistInfo(0, 0, 1, torch.device("cpu")), ROWS)


def test_a_missing_rank_file_is_refused(tmp_path: Path, full) -> None:
    folder = _write(tmp_path / "step_00000005", 3, full)
    (folder / "rank1.pt").unlink()
    with pytest.raises(CheckpointError, match=r"not rank0\.pt \.\.\. rank\(N-1\)\.pt \(found rank0\.pt, rank2\.pt\)"):
        load_rank_state(folder, DistInfo(0, 0, 1, torch.device("cpu")), ROWS)
