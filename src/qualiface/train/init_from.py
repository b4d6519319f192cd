"""Starting a run from a previous one (``model.init_from``) and keeping every class centre when a run ends.

A ``model.pt`` holds the backbone and every class centre (a multi-process run gathers its shards before writing
it); a checkpoint folder holds one shard per rank, concatenated here in rank order. Either may come from a run of
any number of processes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from qualiface.errors import InputError
from qualiface.models.model_file import ModelFileError, read_model_file
from qualiface.run_layout import RunLayout, is_checkpoint_dir, rank_files
from qualiface.train.distributed import DistInfo


def read_init_source(path: Path) -> tuple[dict[str, Tensor], Tensor | None, Path]:
    """``(backbone state, class centres (C, D) or None, the file or folder read)`` of a run directory, a
    checkpoint folder or a ``model.pt``.

    Raises:
        InputError: anything else, or a file that cannot be read as one (one line naming ``path`` or the file).
    """
    from qualiface.models.formats.common import ModelLoadError, torch_load

    path = Path(path)
    layout = RunLayout(path)
    if path.is_file() or layout.model_file.is_file():
        source = path if path.is_file() else layout.model_file
        try:
            model_file = read_model_file(source)
        except (ModelFileError, ModelLoadError) as exc:
            raise InputError(f"model.init_from: {exc}") from None
        weight = (model_file.head_state or {}).get("weight")
        return model_file.state_dict, weight if isinstance(weight, Tensor) else None, source
    folder = layout.latest_checkpoint() if layout.checkpoints.is_dir() else path
    if folder is None or not is_checkpoint_dir(folder):
        raise InputError(f"model.init_from {path}: no model.pt and no complete checkpoint found")
    shards = []
    backbone: dict[str, Tensor] = {}
    for index, file in enumerate(rank_files(folder)):
        try:
            state = torch_load(file)
        except ModelLoadError as exc:
            raise InputError(f"model.init_from: {exc}") from None
        head = state.get("head") if isinstance(state, Mapping) else None
        weight = head.get("weight") if isinstance(head, Mapping) else None
        if not isinstance(weight, Tensor) or (index == 0 and not isinstance(state.get("backbone"), Mapping)):
            raise InputError(
                f"model.init_from: {file}: not a qualiface training checkpoint (expected a dict with 'backbone' "
                f"weights and the 'head' weight)"
            )
        if index == 0:
            backbone = {str(k): v for k, v in state["backbone"].items() if isinstance(v, Tensor)}
        shards.append(weight)
    try:
        centres = torch.cat(shards) if shards else None
    except RuntimeError:
        shapes = [tuple(s.shape) for s in shards]
        raise InputError(f"model.init_from {folder}: rank files' head weights {shapes} do not concatenate") from None
    return backbone, centres, folder


def gather_centres(head: Any, info: DistInfo) -> Tensor:
    """Every class centre ``(C, D)`` on CPU: this rank's ``head.weight`` alone, or the shards of all ranks in
    rank order (collective under DDP: every rank calls it; shards may differ in size by one row)."""
    weight = head.weight.detach()
    if not info.distributed:
        return weight.cpu().clone()
    rows = torch.tensor([weight.shape[0]], device=weight.device)
    sizes = [torch.zeros_like(rows) for _ in range(info.world_size)]
    dist.all_gather(sizes, rows)
    longest = int(max(int(s) for s in sizes))
    padded = torch.zeros(longest, weight.shape[1], dtype=weight.dtype, device=weight.device)
    padded[: weight.shape[0]] = weight
    parts = [torch.empty_like(padded) for _ in range(info.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(size)] for part, size in zip(parts, sizes, strict=True)]).cpu()
