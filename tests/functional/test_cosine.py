"""The hand-written cosine layer and the fused margin cross-entropy against autograd on the plain formulas."""

import pytest
import torch
import torch.nn.functional as F

from qualiface.functional import cosine_matrix, margin_cross_entropy, sample_classes


def _inputs(batch=6, dim=8, classes=11):
    x = torch.randn(batch, dim, dtype=torch.float64, requires_grad=True)
    w = (torch.randn(classes, dim, dtype=torch.float64) * 3).requires_grad_()
    return x, w


def test_cosine_matrix_equals_normalized_linear_values_and_gradients():
    x, w = _inputs()
    upstream = torch.randn(6, 11, dtype=torch.float64)
    ours = cosine_matrix(F.normalize(x), w)[0]
    (ours * upstream).sum().backward()
    gx, gw = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    ref = F.linear(F.normalize(x), F.normalize(w))
    (ref * upstream).sum().backward()
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(gx, x.grad)
    torch.testing.assert_close(gw, w.grad)


def test_cosine_target_output_shares_the_gradient_pass():
    x, w = _inputs()
    labels = torch.randint(0, 11, (6,))
    up_cos, up_target = torch.randn(6, 11, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    cos, target = cosine_matrix(F.normalize(x), w, labels=labels)
    grads = torch.autograd.grad((cos * up_cos).sum() + (target * up_target).sum(), (x, w))
    ref = F.linear(F.normalize(x), F.normalize(w))
    ref_target = ref[torch.arange(6), labels]
    ref_grads = torch.autograd.grad((ref * up_cos).sum() + (ref_target * up_target).sum(), (x, w))
    torch.testing.assert_close(target, ref_target)
    for ours, theirs in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(ours, theirs)
    only_target = torch.autograd.grad(cosine_matrix(F.normalize(x), w, labels=labels)[1].sum(), w)[0]
    ref_target = F.linear(F.normalize(x), F.normalize(w))[torch.arange(6), labels]
    torch.testing.assert_close(only_target, torch.autograd.grad(ref_target.sum(), w)[0])


def test_cosine_matrix_gradcheck():
    x, w = _inputs(3, 4, 5)
    labels = torch.tensor([4, 0, 4])
    assert torch.autograd.gradcheck(lambda a, b: cosine_matrix(F.normalize(a), b, labels=labels), (x, w))


@pytest.mark.parametrize("sparse", [False, True])
def test_sampled_cosine_matrix_touches_only_the_sampled_rows(sparse):
    x, w = _inputs()
    index = torch.tensor([1, 4, 5, 9])
    upstream = torch.randn(6, 4, dtype=torch.float64)
    ours = cosine_matrix(F.normalize(x), w, index, sparse_grad=sparse)[0]
    (ours * upstream).sum().backward()
    grad = w.grad.to_dense() if sparse else w.grad
    assert w.grad.is_sparse == sparse
    ref_w = w.detach().clone().requires_grad_()
    ref = F.linear(F.normalize(x.detach()), F.normalize(ref_w[index]))
    (ref * upstream).sum().backward()
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(grad, ref_w.grad)
    untouched = torch.ones(11, dtype=torch.bool)
    untouched[index] = False
    assert torch.count_nonzero(grad[untouched]) == 0


def test_bfloat16_matmul_stays_close_to_float32():
    x = torch.randn(16, 64)
    w = torch.randn(100, 64)
    low = cosine_matrix(F.normalize(x), w, matmul_dtype=torch.bfloat16)[0]
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, F.linear(F.normalize(x), F.normalize(w)), atol=2e-2, rtol=0)


def _reference_margin_ce(cos, labels, target, scale):
    logits = cos * (scale[:, None] if scale.dim() else scale)
    logits = logits.clone()
    logits[torch.arange(len(labels)), labels] = target
    return F.cross_entropy(logits, labels, reduction="none"), logits


@pytest.mark.parametrize("per_sample_scale", [False, True])
def test_margin_cross_entropy_matches_plain_cross_entropy(per_sample_scale):
    cos = torch.rand(5, 7, dtype=torch.float64).mul(2).sub(1).requires_grad_()
    labels = torch.randint(0, 7, (5,))
    target = torch.randn(5, dtype=torch.float64, requires_grad=True)
    scale = (torch.rand(5, dtype=torch.float64) * 30 + 1) if per_sample_scale else torch.tensor(30.0).double()
    scale.requires_grad_()
    upstream = torch.rand(5, dtype=torch.float64)
    args = (cos, labels, target, scale)
    loss, logits = margin_cross_entropy(*args)
    grads = torch.autograd.grad((loss * upstream).sum(), (cos, target, scale))
    ref_loss, ref_logits = _reference_margin_ce(*args)
    ref_grads = torch.autograd.grad((ref_loss * upstream).sum(), (cos, target, scale))
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(logits, ref_logits.detach())
    for ours, ref in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(ours, ref)


def test_margin_cross_entropy_gradcheck():
    cos = torch.rand(3, 4, dtype=torch.float64).requires_grad_()
    labels = torch.tensor([0, 3, 3])
    target = torch.randn(3, dtype=torch.float64, requires_grad=True)
    scale = torch.rand(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c, t, s: margin_cross_entropy(c, labels, t, s)[0], (cos, target, scale))


def test_sample_classes_keeps_every_positive_and_remaps_labels():
    labels = torch.tensor([3, 97, 3, 50, 12])
    index, remapped = sample_classes(labels, 100, 0.1)
    assert index.numel() == 10
    assert torch.equal(index, index.sort().values)
    assert torch.unique(index).numel() == 10
    assert torch.equal(index[remapped], labels)


def test_sample_classes_keeps_all_positives_when_over_budget():
    labels = torch.arange(20)
    index, remapped = sample_classes(labels, 100, 0.1)
    assert torch.equal(index, labels)
    assert torch.equal(remapped, labels)


def test_margin_cross_entropy_clamp_matches_torch_clamp():
    cos = (torch.rand(5, 7, dtype=torch.float64) * 2 - 1).requires_grad_()
    with torch.no_grad():
        cos[0, 1], cos[2, 3], cos[4, 0] = 0.9999, -0.99995, 1.0
    labels = torch.tensor([0, 1, 2, 3, 4])
    target = torch.randn(5, dtype=torch.float64, requires_grad=True)
    scale = (torch.rand(5, dtype=torch.float64) * 30 + 1).requires_grad_()
    upstream = torch.rand(5, dtype=torch.float64)
    loss, logits = margin_cross_entropy(cos, labels, target, scale, clamp_eps=1e-3)
    grads = torch.autograd.grad((loss * upstream).sum(), (cos, target, scale))
    ref_loss, ref_logits = _reference_margin_ce(cos.clamp(-1 + 1e-3, 1 - 1e-3), labels, target, scale)
    ref_grads = torch.autograd.grad((ref_loss * upstream).sum(), (cos, target, scale))
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(logits, ref_logits.detach())
    assert grads[0][0, 1] == 0
    assert grads[0][2, 3] == 0
    for ours, ref in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(ours, ref)
