"""The training input pipeline: a source dataset, reproducible per-sample augmentation, a sharded batch order.

Reproducibility does not depend on the number of DataLoader workers or on where a run was resumed:

* the order is a permutation of the samples drawn from ``(seed, epoch)``; global batch ``k`` of an epoch is
  positions ``[k·B·W, (k+1)·B·W)`` and rank ``r`` takes the ``r``-th slice of ``B``, so one process with batch
  ``B·W`` sees exactly the same global batches as ``W`` processes with batch ``B``;
* the augmentation of sample ``i`` in epoch ``e`` draws from a generator seeded with ``(seed, e, i)``;
* the last incomplete global batch of an epoch is dropped (arcface_torch).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from qualiface.backbones.base import Preprocessing
from qualiface.config.schema import DataConfig
from qualiface.data.image_folder import ImageDataError, OnError, Skipped
from qualiface.data.recordio import decode_image as decode_record
from qualiface.data.transforms import Compose, to_tensor, training_transform
from qualiface.imaging import ImageDecodeError

logger = logging.getLogger(__name__)


class SourceDataset(Dataset):
    """Common view of the sources: ``dataset[i] -> (RGB uint8 (H, W, 3) array, label)`` plus ``num_classes``.

    One error policy for every source (``on_error``): ``"raise"`` stops at the first image that cannot be read or
    decoded, naming it (a path or ``<file>.rec key K``); ``"skip"`` replaces it by the next readable image (index
    order, wrapping around, so a batch keeps its size) and reports it through :meth:`read`, so that the trainer
    counts every skip, whichever DataLoader worker met it.
    """

    def __init__(
        self,
        dataset: Any,
        num_classes: int,
        decode: bool,
        description: str,
        *,
        on_error: OnError = "raise",
        keys: Sequence[int] | None = None,
    ) -> None:
        self.dataset = dataset
        self.num_classes = int(num_classes)
        self.decode = decode
        self.description = description
        self.on_error: OnError = on_error
        self.keys = keys

    def __len__(self) -> int:
        return len(self.dataset)

    def describe(self, index: int) -> str:
        """How errors name item ``index``: its file, ``<file>.rec key K``, or ``<source>: image <index>``."""
        if self.keys is not None:
            return f"{self.description} key {self.keys[index]}"
        describe = getattr(self.dataset, "describe", None)
        return str(describe(index)) if describe is not None else f"{self.description}: image {index}"

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        image, label, _ = self.read(index)
        return image, label

    def read(self, index: int) -> tuple[np.ndarray, int, tuple[Skipped, ...]]:
        """Item ``index`` (or, under ``on_error="skip"``, the next readable one) and the items skipped for it."""
        skipped: list[Skipped] = []
        count = len(self)
        for offset in range(count if self.on_error == "skip" else 1):
            position = (index + offset) % count
            folder_skips = getattr(self.dataset, "skipped", None)  # an image folder / CSV skips on its own
            seen = len(folder_skips) if folder_skips is not None else 0
            try:
                item = self.dataset[position]
                image, label = item[0], int(item[1])
                if self.decode:
                    image = decode_record(image, "rgb", what=self.describe(position))
            except (ImageDecodeError, ImageDataError) as exc:
                if self.on_error == "raise":
                    raise
                what, reason = (
                    (exc.what, exc.reason)
                    if isinstance(exc, ImageDecodeError)
                    else (
                        self.describe(position),
                        str(exc),
                    )
                )
                skipped.append(Skipped(what, reason))
                logger.warning("skipped %s: %s", what, reason)
                continue
            finally:
                if folder_skips is not None:
                    skipped.extend(folder_skips[seen:])
            return image, label, tuple(skipped)
        raise ImageDataError(f"{self.description}: no readable image left (all {count} failed)")


def build_source(cfg: DataConfig, image_size: int) -> SourceDataset:
    """The configured training source (no transform yet); checks the class count."""
    if cfg.source == "synthetic":
        from qualiface.data.synthetic import SyntheticFaces

        s = cfg.synthetic
        if len(s.severity_range) != 2:
            raise ValueError(f"data.synthetic.severity_range needs two values, got {s.severity_range}")
        dataset: Any = SyntheticFaces(
            s.num_identities,
            s.images_per_identity,
            size=s.size if s.size else image_size,
            seed=s.seed,
            degradations=s.degradations,
            severity_range=(s.severity_range[0], s.severity_range[1]),
            clean_fraction=s.clean_fraction,
        )
        source = SourceDataset(dataset, dataset.num_classes, False, f"synthetic(seed={s.seed})")
    else:
        if not cfg.path:
            raise ValueError(f"data.path is required for data.source {cfg.source!r}")
        path = Path(cfg.path)
        if cfg.source == "recordio":
            from qualiface.data.recordio import RecordIOReader

            reader = RecordIOReader(path)
            if reader.num_classes is None and cfg.num_classes is None:
                raise ValueError(
                    f"{path}: this RecordIO file has no header record with the class count (im2rec layout); "
                    f"set data.num_classes"
                )
            source = SourceDataset(
                reader, reader.num_classes or 0, True, str(path), on_error=cfg.on_error, keys=reader.image_keys
            )
        elif cfg.source == "image_folder":
            from qualiface.data.image_folder import ImageFolderDataset

            folder = ImageFolderDataset(path, on_error=cfg.on_error)
            source = SourceDataset(folder, folder.num_classes, False, str(path), on_error=cfg.on_error)
        else:
            from qualiface.data.image_folder import CSVImageDataset

            table = CSVImageDataset(path, root=cfg.root, num_classes=cfg.num_classes, on_error=cfg.on_error)
            source = SourceDataset(table, table.num_classes, False, str(path), on_error=cfg.on_error)
    if cfg.num_classes is not None:
        if source.num_classes and cfg.num_classes < source.num_classes:
            raise ValueError(
                f"data.num_classes={cfg.num_classes} but {source.description} has {source.num_classes} classes"
            )
        source.num_classes = cfg.num_classes
    return source


class TrainSamples(Dataset):
    """``dataset[(epoch, index)] -> (normalised float32 (3, H, W), label)`` with seeded augmentation."""

    def __init__(self, source: SourceDataset, transform: Compose, seed: int, image_size: tuple[int, int]) -> None:
        self.source = source
        self.transform = transform
        self.seed = int(seed)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int, tuple[Skipped, ...]]:
        """The augmented sample, its label and the items skipped to find it (empty unless ``on_error="skip"``)."""
        epoch, index = key
        image, label, skipped = self.source.read(index)
        if image.shape[:2] != self.image_size:
            raise ImageDataError(
                f"{self.source.describe(index)}: {image.shape[1]}x{image.shape[0]} but the backbone takes "
                f"{self.image_size[1]}x{self.image_size[0]} aligned crops (align or resize the data first)"
            )
        if not 0 <= label < self.source.num_classes:
            raise ImageDataError(
                f"{self.source.describe(index)}: label {label}, outside [0, {self.source.num_classes})"
            )
        generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch, index))
        return self.transform(to_tensor(image), generator), label, skipped


class TrainBatch(NamedTuple):
    """One rank's batch: images ``(B, 3, H, W)``, labels ``(B,)`` and the items skipped while reading it."""

    images: Tensor
    labels: Tensor
    skipped: list[Skipped]


def collate_samples(items: Sequence[tuple[Tensor, int, tuple[Skipped, ...]]]) -> TrainBatch:
    """Stack :class:`TrainSamples` items into a :class:`TrainBatch`."""
    images = torch.stack([item[0] for item in items])
    labels = torch.tensor([item[1] for item in items], dtype=torch.int64)
    return TrainBatch(images, labels, [skip for item in items for skip in item[2]])


def make_loader(samples: TrainSamples, sampler: ShardedBatchSampler, num_workers: int, pin_memory: bool) -> DataLoader:
    """The training DataLoader (the trainer's and the benchmark's): one thread per worker, no global RNG draw."""
    return DataLoader(
        samples,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_samples,
        pin_memory=pin_memory,
        generator=torch.Generator(),  # keeps the loader from drawing on the global RNG (exact resume)
        worker_init_fn=_worker_init if num_workers else None,
        persistent_workers=False,
        prefetch_factor=4 if num_workers else None,
    )


def _worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)


def mix_seed(*values: int) -> int:
    """A 63-bit seed from several integers (NumPy's SeedSequence)."""
    return int(np.random.SeedSequence(list(values)).generate_state(1, np.uint64)[0] >> np.uint64(1))


class ShardedBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(epoch, index)`` for one rank, from ``start_step`` on (see the module docstring)."""

    def __init__(
        self, num_samples: int, batch_size: int, world_size: int, rank: int, seed: int, start_step: int = 0
    ) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.start_step = start_step
        self.steps_per_epoch = num_samples // (batch_size * world_size)
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"{num_samples} samples do not fill one global batch of {batch_size} x {world_size} processes; "
                f"lower data.batch_size"
            )

    def permutation(self, epoch: int) -> Tensor:
        return torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(mix_seed(self.seed, epoch)))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        global_batch = self.batch_size * self.world_size
        while True:
            epoch, first = divmod(step, self.steps_per_epoch)
            order = self.permutation(epoch)
            for k in range(first, self.steps_per_epoch):
                begin = k * global_batch + self.rank * self.batch_size
                yield [(epoch, int(i)) for i in order[begin : begin + self.batch_size]]
            step = (epoch + 1) * self.steps_per_epoch

    def __len__(self) -> int:  # an endless stream; the loop stops at the configured step count
        return 2**62


def build_train_samples(cfg: DataConfig, preprocessing: Preprocessing, seed: int) -> TrainSamples:
    """The source wrapped with the configured augmentation and the backbone's normalisation."""
    _, height, width = preprocessing.input_size
    source = build_source(cfg, height)
    transform = training_transform(preprocessing, cfg.augment, cfg.augment_p)
    return TrainSamples(source, transform, seed, (height, width))
