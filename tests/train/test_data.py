"""The training data order and augmentation are reproducible and independent of process count and resume."""

from pathlib import Path

import numpy as np
import pytest
import torch

from qualiface.backbones.base import Preprocessing
from qualiface.config.schema import DataConfig, SyntheticConfig
from qualiface.data.recordio import RecordIOWriter
from qualiface.train.data import ShardedBatchSampler, build_train_samples
from qualiface.train.metrics_log import MetricsLog


def _take(sampler: ShardedBatchSampler, n: int) -> list[list[tuple[int, int]]]:
    it = iter(sampler)
    return [next(it) for _ in range(n)]


def test_two_ranks_see_the_global_batches_of_one_process() -> None:
    one = _take(ShardedBatchSampler(50, 8, 1, 0, seed=3), 12)  # 6 steps per epoch, 2 epochs
    ranks = [_take(ShardedBatchSampler(50, 4, 2, r, seed=3), 12) for r in range(2)]
    for step in range(12):
        assert one[step] == ranks[0][step] + ranks[1][step]


def test_epochs_are_permutations_without_repeats_and_drop_the_last_partial_batch() -> None:
    batches = _take(ShardedBatchSampler(50, 8, 1, 0, seed=3), 12)
    first = [i for b in batches[:6] for e, i in b]
    assert {e for b in batches[:6] for e, _ in b} == {0}
    assert len(set(first)) == 48
    assert {e for b in batches[6:] for e, _ in b} == {1}
    assert [i for _, i in batches[6]] != [i for _, i in batches[0]]


def test_starting_mid_run_continues_the_same_stream() -> None:
    full = _take(ShardedBatchSampler(50, 4, 2, 1, seed=9), 10)
    tail = _take(ShardedBatchSampler(50, 4, 2, 1, seed=9, start_step=7), 3)
    assert tail == full[7:10]


def test_a_batch_larger_than_the_data_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="do not fill one global batch"):
        ShardedBatchSampler(10, 8, 2, 0, seed=0)


def _synthetic_cfg(**kw) -> DataConfig:
    return DataConfig(synthetic=SyntheticConfig(num_identities=3, images_per_identity=2, size=16), **kw)


def test_augmentation_depends_only_on_seed_epoch_and_index() -> None:
    samples = build_train_samples(_synthetic_cfg(augment="adaface", augment_p=1.0), Preprocessing((3, 16, 16)), 5)
    a = samples[(1, 4)][0]
    samples[(0, 2)]  # other draws in between change nothing
    torch.testing.assert_close(samples[(1, 4)][0], a)
    assert not torch.equal(samples[(2, 4)][0], a)  # another epoch, another augmentation
    assert a.dtype == torch.float32
    assert a.shape == (3, 16, 16)


def test_images_of_the_wrong_size_are_reported() -> None:
    samples = build_train_samples(_synthetic_cfg(), Preprocessing((3, 32, 32)), 0)
    with pytest.raises(ValueError, match=r"synthetic\(seed=0\): image 0: 16x16 but the backbone takes 32x32"):
        samples[(0, 0)]


def _jpeg(value: int) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), value, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_recordio_source_with_a_corrupt_record_names_it(tmp_path: Path) -> None:
    rec = tmp_path / "train.rec"
    with RecordIOWriter(rec, tmp_path / "train.idx") as writer:
        writer.write(0, 0, _jpeg(10))
        writer.write(1, 1, b"\xff\xd8 not a jpeg")
    with pytest.raises(ValueError, match=r"set data\.num_classes"):  # im2rec layout: no class count in the file
        build_train_samples(DataConfig(source="recordio", path=str(rec)), Preprocessing((3, 16, 16)), 0)
    cfg = DataConfig(source="recordio", path=str(rec), num_classes=2)
    samples = build_train_samples(cfg, Preprocessing((3, 16, 16)), 0)
    image, label, skipped = samples[(0, 0)]
    assert label == 0
    assert image.shape == (3, 16, 16)
    assert skipped == ()
    with pytest.raises(ValueError, match=r"train\.rec key 1: not an image"):
        samples[(0, 1)]


def test_metrics_log_widens_its_header_and_truncates_on_resume(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path)
    log.log({"step": 1, "loss": 2.0})
    log.log({"step": 2, "loss": 1.5})
    log.log({"step": 2, "eval/acc": 0.9})
    log.log({"step": 3, "loss": 1.0})
    text = (tmp_path / "metrics.csv").read_text().splitlines()
    assert text[0] == "step,loss,eval/acc"
    assert text[1:] == ["1,2,", "2,1.5,", "2,,0.9", "3,1,"]
    MetricsLog(tmp_path, resume_step=2)  # a run resumed from step 2 drops what came after it
    assert (tmp_path / "metrics.csv").read_text().splitlines()[1:] == ["1,2,", "2,1.5,", "2,,0.9"]


def test_a_label_outside_the_class_count_names_the_source_and_the_image() -> None:
    """The trainer's head skips its label check (no host read per step): the sample pipeline checks every label."""
    from qualiface.train.data import SourceDataset, TrainSamples

    items = [(np.zeros((4, 4, 3), np.uint8), 1), (np.zeros((4, 4, 3), np.uint8), 5)]
    samples = TrainSamples(SourceDataset(items, 3, False, "faces.csv"), lambda image, _: image, 0, (4, 4))
    assert samples[(0, 0)][1] == 1
    with pytest.raises(ValueError, match=r"faces\.csv: image 1: label 5, outside \[0, 3\)"):
        samples[(0, 1)]
