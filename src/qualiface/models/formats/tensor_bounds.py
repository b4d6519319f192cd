"""Bounds on the tensors a loaded torch file declares, checked before anything allocates their size.

A ``torch.save`` file stores each tensor as a view (shape, strides, offset) of a storage whose bytes are in the
file. A view may declare far more elements than its storage holds: ``torch.zeros(1).expand(10**9)`` is 4 bytes of
data and a stride of 0, and the first ``.float()``, ``.contiguous()`` or copy allocates the declared 4 GB. A real
weight is never such a view, so :func:`unbounded_tensor` refuses, per tensor:

* a layout other than dense (sparse, quantized, ...): face model weights are dense;
* a negative stride, or a stride of 0 on a dimension of size > 1 (a broadcast view);
* a view that reaches past its storage, or that declares more bytes (``numel x element size``) than its storage
  holds (overlapping strides);

and, over the whole file, more declared tensor bytes than :func:`declared_budget` allows (a multiple of the file's
size: tied weights count twice, a storage viewed by a thousand tensors does not fit).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

#: Containers nested deeper than this are refused (a checkpoint nests a handful of levels).
MAX_DEPTH = 64
#: The declared tensor bytes of a file may be this multiple of its size (plus :data:`BUDGET_SLACK`).
BUDGET_FACTOR = 4
BUDGET_SLACK = 16 << 20


def declared_budget(file_size: int) -> int:
    """The most tensor bytes a file of ``file_size`` bytes may declare in total."""
    return BUDGET_FACTOR * int(file_size) + BUDGET_SLACK


def named_tensors(obj: Any) -> Iterator[tuple[str, Tensor]]:
    """Every tensor in the containers of a loaded object, with its dotted key (``state_dict.fc.weight``).

    Raises:
        ValueError: containers nested deeper than :data:`MAX_DEPTH`.
    """
    stack: list[tuple[str, Any, int]] = [("", obj, 0)]
    while stack:
        name, value, depth = stack.pop()
        if isinstance(value, Tensor):
            yield name or "<root>", value
            continue
        if isinstance(value, argparse.Namespace):
            value = vars(value)
        if isinstance(value, Mapping):
            children: list[tuple[str, Any]] = [(str(k), v) for k, v in value.items()]
        elif isinstance(value, (list, tuple, set, frozenset)) and not isinstance(value, torch.Size):
            children = [(str(i), v) for i, v in enumerate(value)]
        else:
            continue
        if children and depth >= MAX_DEPTH:
            raise ValueError(f"{name or '<root>'}: containers nested deeper than {MAX_DEPTH} levels")
        stack.extend((f"{name}.{key}" if name else key, child, depth + 1) for key, child in reversed(children))


def tensor_problem(tensor: Tensor) -> str | None:
    """Why ``tensor`` is not a plain view within its storage (``None`` when it is)."""
    if tensor.layout != torch.strided or tensor.is_quantized:
        return f"is not a dense tensor (layout {tensor.layout}{', quantized' if tensor.is_quantized else ''})"
    shape, strides = tuple(tensor.shape), tuple(tensor.stride())
    if any(stride < 0 for stride in strides):
        return f"has a negative stride {strides}"
    for dim, (size, stride) in enumerate(zip(shape, strides, strict=True)):
        if stride == 0 and size > 1:
            return f"shape {shape} has stride 0 on dimension {dim} (a broadcast view, not stored weights)"
    numel = tensor.numel()
    if numel == 0:
        return None
    itemsize = tensor.element_size()
    stored = tensor.untyped_storage().nbytes()
    end = (tensor.storage_offset() + 1 + sum((n - 1) * s for n, s in zip(shape, strides, strict=True))) * itemsize
    if end > stored:
        return f"shape {shape} with strides {strides} reaches byte {end}, past its {stored}-byte storage"
    if numel * itemsize > stored:
        return f"shape {shape} declares {numel * itemsize} bytes over a storage of {stored} bytes (overlapping strides)"
    return None


def unbounded_tensor(obj: Any, budget: int) -> str | None:
    """The first problem of the tensors in ``obj`` (``"tensor 'key' ..."``), or ``None`` when all are bounded and
    declare at most ``budget`` bytes together."""
    total = 0
    try:
        for name, tensor in named_tensors(obj):
            problem = tensor_problem(tensor)
            if problem is not None:
                return f"tensor {name!r} {problem}"
            total += tensor.numel() * tensor.element_size()
            if total > budget:
                return f"the tensors up to {name!r} declare {total} bytes, more than the {budget} bytes allowed"
    except ValueError as exc:
        return str(exc)
    return None
