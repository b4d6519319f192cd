"""The USS-m loss kernel against autograd on the plain formula (paper Eq. 11/24 with the official clamp)."""

import pytest
import torch
import torch.nn.functional as F

from qualiface.functional import uss_loss

GAMMA, MARGIN = 64.0, 0.1


def _reference(x_hat, bias, memory, seen, labels):
    cos = x_hat @ F.normalize(memory, eps=1e-5).T
    rows = []
    for i in range(len(labels)):
        y = int(labels[i])
        total = torch.zeros((), dtype=x_hat.dtype)
        if seen[y]:
            total = total + F.softplus(-(GAMMA * (cos[i, y] - MARGIN) - bias[0]).clamp(-GAMMA, GAMMA))
        for j in range(memory.shape[0]):
            if j != y and seen[j]:
                total = total + F.softplus((GAMMA * cos[i, j] - bias[0]).clamp(-GAMMA, GAMMA))
        rows.append(total)
    return torch.stack(rows)


def _inputs(seed, bias_value=5.0):
    g = torch.Generator().manual_seed(seed)
    x_hat = F.normalize(torch.randn(6, 8, generator=g, dtype=torch.float64)).requires_grad_()
    memory = torch.randn(9, 8, generator=g, dtype=torch.float64) * 3
    seen = torch.rand(9, generator=g) > 0.3
    labels = torch.randint(0, 9, (6,), generator=g)
    bias = torch.tensor([bias_value], dtype=torch.float64, requires_grad=True)
    return x_hat, bias, memory, seen, labels


@pytest.mark.parametrize(("seed", "bias_value"), [(0, 5.0), (1, 20.0), (2, -30.0), (3, 0.5)])
def test_values_and_gradients_match_the_formula(seed, bias_value):
    x_hat, bias, memory, seen, labels = _inputs(seed, bias_value)
    upstream = torch.rand(6, dtype=torch.float64)
    ours = uss_loss(x_hat, bias, memory, seen, labels, gamma=GAMMA, margin=MARGIN)
    grads = torch.autograd.grad((ours * upstream).sum(), (x_hat, bias))
    ref = _reference(x_hat, bias, memory, seen, labels)
    ref_grads = torch.autograd.grad((ref * upstream).sum(), (x_hat, bias))
    torch.testing.assert_close(ours, ref)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_clamp_cuts_gradients_outside_gamma():
    x_hat, bias, memory, seen, labels = _inputs(4, bias_value=500.0)  # every term far below −γ
    seen[:] = True
    loss = uss_loss(x_hat, bias, memory, seen, labels, gamma=GAMMA, margin=MARGIN)
    gx, gb = torch.autograd.grad(loss.sum(), (x_hat, bias))
    # the positive term is softplus(−clamp(·)) = softplus(γ): clamped, so no gradient anywhere
    assert torch.count_nonzero(gx) == 0
    assert gb.item() == 0.0


def test_memory_may_change_before_backward():
    x_hat, bias, memory, seen, labels = _inputs(5)
    loss = uss_loss(x_hat, bias, memory, seen, labels)
    expected = torch.autograd.grad(uss_loss(x_hat, bias, memory, seen, labels).sum(), x_hat)[0]
    memory.add_(1.0)  # the UniTSFace memory update happens before backward()
    torch.testing.assert_close(torch.autograd.grad(loss.sum(), x_hat)[0], expected)
