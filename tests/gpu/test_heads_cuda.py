"""Every registered head computes on CUDA what it computes on the CPU: losses, logits, gradients and the state of
the stateful heads (AdaFace statistics, UniTSFace memory) over two training steps, with and without Partial FC
sampling, and a step of the trainer's configuration (no value checks) never makes the host wait for the GPU.

Tolerance: float32 on both sides (TF32 off, see the ``ieee_fp32`` fixture), so the two differ only by the order
of the sums in the matrix products and reductions: a few units in the last place (~1e-7) grown by the scale
``s`` (up to 64) in the logits and the exponentials of the softmax. ``rtol = 1e-5`` with an absolute floor of
``1e-5·max|reference|`` (for entries of a gradient that nearly cancel) leaves a margin of ~10x over that.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import Tensor

import qualiface
from qualiface.heads.base import Head, HeadOutput

pytestmark = pytest.mark.gpu

HEADS = qualiface.list_heads()
B, D, C = 8, 12, 9
RTOL = 1e-5
CUDA = "cuda"


def _aux(head: Head, generator: torch.Generator) -> dict[str, Tensor]:
    values = {
        "scale": torch.rand(B, generator=generator) * 30 + 10,
        "quality": torch.rand(B, generator=generator),
    }
    return {name: values[name] for name in head.requires}


def _batches(head: Head, num_classes: int, steps: int) -> list[tuple[Tensor, Tensor, dict[str, Tensor]]]:
    """``steps`` CPU batches: embeddings of norm ~17 (inside MagFace's [10, 110]), 8 distinct labels."""
    generator = torch.Generator().manual_seed(7)
    batches = []
    for step in range(steps):
        embeddings = torch.randn(B, D, generator=generator) * 5
        labels = (torch.arange(B) * 3 + step) % num_classes
        batches.append((embeddings, labels, _aux(head, generator)))
    return batches


def _step(head: Head, embeddings: Tensor, labels: Tensor, aux: dict[str, Tensor], device: str) -> dict[str, Any]:
    """One forward and backward of ``head`` on ``device``; what it returned and the gradients, on the CPU."""
    leaf = embeddings.to(device).requires_grad_()
    out: HeadOutput = head(leaf, labels.to(device), **{k: v.to(device) for k, v in aux.items()})
    head.zero_grad(set_to_none=True)
    out.loss.backward()
    assert leaf.grad is not None
    assert head.weight.grad is not None
    result: dict[str, Any] = {
        "loss": out.loss.detach(),
        "loss_per_sample": out.loss_per_sample.detach(),
        "cos_target": out.cos_target,
        "grad_embeddings": leaf.grad,
        "grad_weight": head.weight.grad,
        **{f"log {key}": value for key, value in out.logs.items()},
    }
    if out.logits is not None:
        result["logits"] = out.logits.detach()
    if out.class_index is not None:
        result["class_index"] = out.class_index
    return {key: value.cpu() for key, value in result.items()}


def assert_close(got: Tensor, want: Tensor, what: str, rtol: float = RTOL) -> None:
    """``got`` equals ``want`` (same shape and dtype) within ``rtol``, with an absolute floor ``rtol·max|want|``;
    integer and boolean tensors exactly."""
    got = got.detach().cpu()
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} on CUDA, {tuple(want.shape)} on the CPU"
    assert got.dtype == want.dtype, f"{what}: {got.dtype} on CUDA, {want.dtype} on the CPU"
    if not want.is_floating_point():
        assert torch.equal(got, want), what
        return
    floor = rtol * float(want.abs().max()) if want.numel() else 0.0
    torch.testing.assert_close(got, want, rtol=rtol, atol=max(floor, 1e-12), msg=lambda m: f"{what}: {m}")


def _compare_runs(cpu_head: Head, num_classes: int, steps: int = 2) -> None:
    """Train a copy of ``cpu_head`` on CUDA and the head itself on the CPU for ``steps`` steps of the same batches;
    every output, gradient and state entry agrees after every step."""
    cuda_head = copy.deepcopy(cpu_head).to(CUDA)
    for step, (embeddings, labels, aux) in enumerate(_batches(cpu_head, num_classes, steps)):
        want = _step(cpu_head, embeddings, labels, aux, "cpu")
        got = _step(cuda_head, embeddings, labels, aux, CUDA)
        assert got.keys() == want.keys(), f"step {step}: {sorted(got)} on CUDA, {sorted(want)} on the CPU"
        for key in want:
            assert_close(got[key], want[key], f"step {step}, {key}")
        cpu_state, cuda_state = cpu_head.state_dict(), cuda_head.state_dict()
        for key, value in cpu_state.items():
            assert_close(cuda_state[key], value, f"step {step}, state {key}")


@pytest.mark.parametrize("name", HEADS)
def test_a_head_on_cuda_equals_the_head_on_the_cpu(ieee_fp32: None, name: str) -> None:
    torch.manual_seed(0)
    _compare_runs(qualiface.create_head(name, D, C).train(), C)


@pytest.mark.parametrize("name", HEADS)
def test_in_eval_mode_too(ieee_fp32: None, name: str) -> None:
    torch.manual_seed(0)
    _compare_runs(qualiface.create_head(name, D, C).eval(), C, steps=1)


@pytest.mark.parametrize("name", HEADS)
def test_partial_fc_keeping_only_the_positives_equals_the_cpu(ieee_fp32: None, name: str) -> None:
    """A budget of int(0.1·50) = 5 centres under 8 distinct labels keeps exactly the positives (arcface_torch's
    rule): the sampled path (unique, searchsorted, the gathered rows and their sparse gradient) with no random
    draw, so CUDA and CPU take the same classes."""
    torch.manual_seed(0)
    _compare_runs(qualiface.create_head(name, D, 50, sample_rate=0.1).train(), 50)


# UniTSFace keeps per-class rows besides the centres (its memory): a head over the sampled rows alone is not it
NO_PER_CLASS_STATE = [n for n in HEADS if qualiface.create_head(n, D, C).class_rows == frozenset({"weight"})]


@pytest.mark.parametrize("name", NO_PER_CLASS_STATE)
def test_partial_fc_with_random_negatives_on_cuda(ieee_fp32: None, name: str) -> None:
    """The negatives drawn on CUDA (from the CUDA generator, so not the CPU's): the loss equals, on the CPU, the
    same head built over only the drawn centres, and only the drawn rows of the centres get a gradient."""
    classes = 50
    torch.manual_seed(0)
    cpu_head = qualiface.create_head(name, D, classes, sample_rate=0.5).train()
    cuda_head = copy.deepcopy(cpu_head).to(CUDA)
    embeddings, labels, aux = _batches(cpu_head, classes, 1)[0]
    state = copy.deepcopy(cpu_head.state_dict())  # before the step changes AdaFace's statistics
    got = _step(cuda_head, embeddings, labels, aux, CUDA)
    index = got["class_index"]
    assert index.numel() == int(0.5 * classes)
    assert torch.equal(index, index.sort().values)
    assert index.unique().numel() == index.numel()
    assert set(labels.tolist()) <= set(index.tolist())
    reference = qualiface.create_head(name, D, index.numel()).train()
    reference.load_state_dict({**state, "weight": state["weight"][index]})
    want = _step(reference, embeddings, torch.searchsorted(index, labels), aux, "cpu")
    for key in ("loss", "loss_per_sample", "cos_target", "grad_embeddings", "logits"):
        if key in want:
            assert_close(got[key], want[key], key)
    assert_close(got["grad_weight"][index], want["grad_weight"], "gradient of the drawn centres")
    others = torch.ones(classes, dtype=torch.bool)
    others[index] = False
    assert torch.count_nonzero(got["grad_weight"][others]) == 0, "a centre that was not drawn got a gradient"


@pytest.mark.parametrize("name", HEADS)
def test_double_precision_on_cuda_equals_the_cpu(name: str) -> None:
    """In float64 the two agree to ~1e-12: what differs in float32 is rounding, not the computation."""
    torch.manual_seed(0)
    cpu_head = qualiface.create_head(name, D, C).double().train()
    cuda_head = copy.deepcopy(cpu_head).to(CUDA)
    embeddings, labels, aux = _batches(cpu_head, C, 1)[0]
    embeddings, aux = embeddings.double(), {k: v.double() for k, v in aux.items()}
    want = _step(cpu_head, embeddings, labels, aux, "cpu")
    got = _step(cuda_head, embeddings, labels, aux, CUDA)
    for key in want:
        assert_close(got[key], want[key], key, rtol=1e-10)


# UniTSFace reads its data-dependent initialisation on the host and rewrites its memory rows per class (as in
# tests/heads/test_contract.py, which checks the same claim on the CPU by intercepting the calls that would sync)
@pytest.mark.parametrize("name", [h for h in HEADS if h != "unitsface"])
def test_a_step_without_value_checks_never_synchronises(name: str) -> None:
    """The trainer builds its heads with ``validate_inputs=False``: forward and backward then queue their kernels
    without a single device-to-host wait (CUDA's sync debug mode raises on any)."""
    torch.manual_seed(0)
    head = qualiface.create_head(name, D, C, validate_inputs=False).train().to(CUDA)
    embeddings, labels, aux = _batches(head, C, 1)[0]
    embeddings, labels = embeddings.to(CUDA), labels.to(CUDA)
    aux = {k: v.to(CUDA) for k, v in aux.items()}
    head(embeddings.clone().requires_grad_(), labels, **aux).loss.backward()  # first call: lazy initialisation
    torch.cuda.synchronize()
    leaf = embeddings.clone().requires_grad_()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = head(leaf, labels, **aux)
        out.loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(out.loss).item()
