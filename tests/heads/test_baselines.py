"""Softmax (NormFace), CosFace and ArcFace against float64 references written from the papers' equations."""

import math

import pytest
import torch

import qualiface

B, D, C = 8, 16, 10


def _unit(v):
    return v / v.norm(dim=-1, keepdim=True)


def _cosines(emb, weight):
    return _unit(emb) @ _unit(weight).T


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    emb = (torch.randn(B, D, generator=g, dtype=torch.float64) * 5).requires_grad_()
    labels = torch.randint(0, C, (B,), generator=g)
    return emb, labels


def _head(name, **kw):
    head = qualiface.create_head(name, D, C, **kw).double()
    with torch.no_grad():
        head.weight.normal_()
    return head


def _reference_loss(target_logits, other_logits, labels):
    """−log( e^{t_i} / (e^{t_i} + Σ_{j≠y} e^{z_ij}) ) written per sample."""
    losses = []
    for i in range(len(labels)):
        others = torch.cat([other_logits[i, : labels[i]], other_logits[i, labels[i] + 1 :]])
        losses.append(torch.logsumexp(torch.cat([target_logits[i : i + 1], others]), 0) - target_logits[i])
    return torch.stack(losses)


def _compare(head, target_fn, scale, emb, labels):
    out = head(emb, labels)
    ours = torch.autograd.grad(out.loss, (emb, head.weight))
    emb_ref = emb.detach().clone().requires_grad_()
    w_ref = head.weight.detach().clone().requires_grad_()
    cos = _cosines(emb_ref, w_ref)
    cos_y = cos[torch.arange(B), labels]
    ref = _reference_loss(target_fn(cos_y), scale * cos, labels)
    ref_grads = torch.autograd.grad(ref.mean(), (emb_ref, w_ref))
    torch.testing.assert_close(out.loss_per_sample, ref.detach())
    torch.testing.assert_close(out.loss, ref.mean().detach())
    for a, b in zip(ours, ref_grads, strict=True):
        torch.testing.assert_close(a, b)
    expected_logits = scale * cos.detach()
    expected_logits[torch.arange(B), labels] = target_fn(cos_y).detach()
    torch.testing.assert_close(out.logits, expected_logits)
    torch.testing.assert_close(out.cos_target, cos_y.detach())


def test_softmax_matches_normface():
    emb, labels = _batch()
    _compare(_head("softmax", scale=30.0), lambda c: 30.0 * c, 30.0, emb, labels)


def test_cosface_matches_paper_equation_with_paper_defaults():
    emb, labels = _batch(1)
    head = _head("cosface")
    assert (head.scale, head.margin) == (64.0, 0.35)
    _compare(head, lambda c: 64.0 * (c - 0.35), 64.0, emb, labels)


def _arc_reference(c, m, fallback=True):
    """cos(θ + m) = cos θ cos m − sin θ sin m; where θ + m > π: cos θ − m sin m (the official fallback)."""
    sin = torch.sqrt(1 - c * c)
    target = c * math.cos(m) - sin * math.sin(m)
    if fallback:
        target = torch.where(c > math.cos(math.pi - m), target, c - m * math.sin(m))
    return target


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_arcface_exact_matches_paper_equation(seed):
    emb, labels = _batch(seed)
    head = _head("arcface")
    assert (head.scale, head.margin, head.grad) == (64.0, 0.5, "exact")
    _compare(head, lambda c: 64.0 * _arc_reference(c, 0.5), 64.0, emb, labels)


def test_arcface_fallback_region_is_exercised_and_matches():
    emb, labels = _batch(5)
    head = _head("arcface", margin=1.2, scale=16.0)
    with torch.no_grad():  # push some samples to θ_y > π − m
        head.weight[labels[:4]] = -emb[:4].detach() + 0.5
    cos_y = _cosines(emb.detach(), head.weight.detach())[torch.arange(B), labels]
    assert (cos_y < math.cos(math.pi - 1.2)).sum() >= 4
    _compare(head, lambda c: 16.0 * _arc_reference(c, 1.2), 16.0, emb, labels)


def test_arcface_without_fallback_is_plain_cos_theta_plus_m():
    emb, labels = _batch(6)
    head = _head("arcface", margin=1.2, scale=16.0, fallback="none")
    with torch.no_grad():
        head.weight[labels[:4]] = -emb[:4].detach() + 0.3
    _compare(head, lambda c: 16.0 * _arc_reference(c, 1.2, fallback=False), 16.0, emb, labels)


def test_arcface_easy_margin_keeps_negative_cosines():
    emb, labels = _batch(7)
    head = _head("arcface", easy_margin=True)

    def target(c):
        return 64.0 * torch.where(c > 0, _arc_reference(c, 0.5, fallback=False), c)

    cos_y = _cosines(emb.detach(), head.weight.detach())[torch.arange(B), labels]
    assert (cos_y < 0).any()
    assert (cos_y > 0).any()
    _compare(head, target, 64.0, emb, labels)


def test_arcface_insightface_gradient_is_straight_through():
    """arcface_torch: same loss value; gradient of the target logit w.r.t. cos θ_y is s (plain cosine)."""
    emb, labels = _batch(8)
    exact = _head("arcface", fallback="none")
    insight = _head("arcface", grad="insightface", fallback="none")
    insight.load_state_dict(exact.state_dict())
    out_exact, out_insight = exact(emb, labels), insight(emb, labels)
    torch.testing.assert_close(out_exact.loss, out_insight.loss)
    grad_insight = torch.autograd.grad(out_insight.loss, emb)[0]
    grad_exact = torch.autograd.grad(out_exact.loss, emb)[0]
    assert (grad_insight - grad_exact).abs().max() > 1e-3  # the two modes really differ
    # reference: logits with the margined value, but d t / d cos θ_y = s
    emb_ref = emb.detach().clone().requires_grad_()
    cos = _cosines(emb_ref, exact.weight.detach())
    cos_y = cos[torch.arange(B), labels]
    shift = (64.0 * _arc_reference(cos_y, 0.5, fallback=False) - 64.0 * cos_y).detach()
    ref = _reference_loss(64.0 * cos_y + shift, 64.0 * cos, labels).mean()
    torch.testing.assert_close(grad_insight, torch.autograd.grad(ref, emb_ref)[0])


def test_zero_margins_reduce_to_normalised_softmax():
    emb, labels = _batch(9)
    soft = _head("softmax")
    arc = _head("arcface", margin=0.0)
    cos = _head("cosface", margin=0.0)
    arc.load_state_dict(soft.state_dict())
    cos.load_state_dict(soft.state_dict())
    reference = soft(emb, labels)
    for other in (arc, cos):
        out = other(emb, labels)
        torch.testing.assert_close(out.loss_per_sample, reference.loss_per_sample)
        torch.testing.assert_close(out.logits, reference.logits)


def test_arcface_target_is_monotonic_in_theta_only_with_fallback():
    theta = torch.linspace(0.01, math.pi - 0.01, 400, dtype=torch.float64)
    emb = torch.stack([torch.cos(theta), torch.sin(theta)], 1)
    labels = torch.zeros(400, dtype=torch.long)
    for fallback, monotonic in (("threshold", True), ("none", False)):
        head = qualiface.create_head("arcface", 2, 1, fallback=fallback).double()
        with torch.no_grad():
            head.weight.copy_(torch.tensor([[1.0, 0.0]]))
        target = head(emb, labels).logits[:, 0]
        assert bool((target.diff() < 0).all()) is monotonic


def test_partial_fc_sampling_uses_a_subset_with_every_positive():
    emb, labels = _batch(10)
    head = qualiface.create_head("arcface", D, 100, sample_rate=0.2).double()
    head.train()
    out = head(emb, labels)
    assert out.logits.shape == (B, 20)
    assert torch.equal(out.class_index[out.labels], labels)
    # same numbers as a full head restricted to the sampled classes
    sub = qualiface.create_head("arcface", D, 20).double()
    with torch.no_grad():
        sub.weight.copy_(head.weight[out.class_index])
    torch.testing.assert_close(sub(emb, out.labels).loss_per_sample, out.loss_per_sample)
    head.eval()
    assert head(emb, labels).logits.shape == (B, 100)


def test_sampled_head_with_sparse_gradient():
    emb, labels = _batch(11)
    head = qualiface.create_head("cosface", D, 100, sample_rate=0.1, sparse_grad=True).double()
    out = head(emb, labels)
    out.loss.backward()
    assert head.weight.grad.is_sparse
    dense = head.weight.grad.to_dense()
    assert torch.count_nonzero(dense.abs().sum(1)) <= 10
    assert dense[labels].abs().sum() > 0
