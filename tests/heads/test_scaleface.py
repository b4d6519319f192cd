"""ScaleFace (Kail et al., DSAA 2023) against an independent float64 reference of ``ArcFaceScale``."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import qualiface
from _helpers.tiny_training import clustered_data, fit, step_losses

torch.set_num_threads(2)
B, D, C = 8, 16, 10


def embeddings_with_target_cos(weight, labels, cos_y, norms, seed=0):
    """Raw embeddings whose norm is ``norms`` and whose cosine to their own class centre is ``cos_y``."""
    gen = torch.Generator().manual_seed(seed)
    w_hat = F.normalize(weight[labels], dim=1)
    r = torch.randn(w_hat.shape, generator=gen, dtype=w_hat.dtype)
    r = F.normalize(r - (r * w_hat).sum(1, keepdim=True) * w_hat, dim=1)
    x = cos_y[:, None] * w_hat + torch.sqrt(1 - cos_y**2)[:, None] * r
    return norms[:, None] * x


def scaleface_reference(emb, weight, labels, scale, m=0.5):
    """Per-sample loop: z_ij = s_i·cos(θ_ij + m·1[j = y_i]) (analytic arccos, no clamp), L_i = CE_i(z)."""
    losses = []
    w_hat = weight / weight.norm(dim=1, keepdim=True)
    for i in range(emb.shape[0]):
        cos = (emb[i] / emb[i].norm()) @ w_hat.T
        margin = m * (torch.arange(len(cos)) == labels[i])
        logits = scale[i] * torch.cos(torch.acos(cos) + margin)
        losses.append(-torch.log_softmax(logits, 0)[labels[i]])
    return torch.stack(losses)


def _inputs(weight, seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, C, (B,), generator=gen)
    # near ±1 (1e-3 away), θ + m > π (no fallback), ordinary
    cos_y = torch.tensor([0.999, -0.999, -0.95, 0.5, -0.3, 0.1, 0.8, -0.6], dtype=torch.float64)
    norms = torch.rand(B, generator=gen, dtype=torch.float64) * 30 + 1
    scale = torch.tensor([64.0, 1.0, 0.5, 16.0, 30.0, 100.0, 8.0, 3.0], dtype=torch.float64)
    return embeddings_with_target_cos(weight, labels, cos_y, norms, seed), labels, scale


@pytest.mark.parametrize(("margin", "scale_shape"), [(0.5, (B,)), (0.3, (B, 1))])
def test_values_and_gradients_match_the_reference(margin, scale_shape):
    torch.manual_seed(0)
    head = qualiface.create_head("scaleface", D, C, margin=margin).double()
    emb, labels, scale = _inputs(head.weight.detach())
    emb_h, scale_h = emb.clone().requires_grad_(), scale.clone().reshape(scale_shape).requires_grad_()
    out = head(emb_h, labels, scale=scale_h)
    out.loss.backward()

    emb_r, scale_r = emb.clone().requires_grad_(), scale.clone().requires_grad_()
    w_r = head.weight.detach().clone().requires_grad_()
    ref = scaleface_reference(emb_r, w_r, labels, scale_r, margin)
    ref.mean().backward()

    torch.testing.assert_close(out.loss_per_sample, ref)
    torch.testing.assert_close(out.loss, ref.mean())
    torch.testing.assert_close(emb_h.grad, emb_r.grad)
    torch.testing.assert_close(head.weight.grad, w_r.grad)
    assert scale_h.grad.shape == scale_shape
    torch.testing.assert_close(scale_h.grad.reshape(-1), scale_r.grad)


def test_scale_gradient_matches_the_closed_form_and_finite_differences():
    """∂L_i/∂s_i = Σ_j p_ij·c_ij − c_iy with c_ij the margined cosines: the scale sees every logit."""
    torch.manual_seed(1)
    head = qualiface.create_head("scaleface", D, C).double()
    emb, labels, scale = _inputs(head.weight.detach(), seed=1)
    scale.requires_grad_()
    out = head(emb, labels, scale=scale)
    out.loss_per_sample.sum().backward()
    margined = out.logits / scale.detach()[:, None]
    prob = out.logits.softmax(1)
    expected = (prob * margined).sum(1) - margined.gather(1, labels[:, None]).squeeze(1)
    torch.testing.assert_close(scale.grad, expected)
    step = 1e-6
    with torch.no_grad():
        plus = head(emb, labels, scale=scale + step).loss_per_sample
        minus = head(emb, labels, scale=scale - step).loss_per_sample
    torch.testing.assert_close(scale.grad, (plus - minus) / (2 * step), rtol=1e-6, atol=1e-7)


def test_constant_scale_64_is_arcface_without_fallback():
    torch.manual_seed(2)
    scaleface = qualiface.create_head("scaleface", D, C).double()
    arcface = qualiface.create_head("arcface", D, C, scale=64.0, margin=0.5, fallback="none", grad="exact").double()
    with torch.no_grad():
        arcface.weight.copy_(scaleface.weight)
    emb, labels, _ = _inputs(scaleface.weight.detach(), seed=2)
    emb_s, emb_a = emb.clone().requires_grad_(), emb.clone().requires_grad_()
    out_s = scaleface(emb_s, labels, scale=torch.full((B,), 64.0, dtype=torch.float64))
    out_a = arcface(emb_a, labels)
    out_s.loss.backward()
    out_a.loss.backward()
    torch.testing.assert_close(out_s.loss_per_sample, out_a.loss_per_sample)
    torch.testing.assert_close(out_s.logits, out_a.logits)
    torch.testing.assert_close(emb_s.grad, emb_a.grad)
    torch.testing.assert_close(scaleface.weight.grad, arcface.weight.grad)


def test_scale_is_required_and_declared():
    head = qualiface.create_head("scaleface", D, C)
    assert head.requires == frozenset({"scale"})
    with pytest.raises(ValueError, match="scale"):
        head(torch.randn(B, D), torch.zeros(B, dtype=torch.long))


@pytest.mark.parametrize("bad", [-1.0, 0.0])
def test_non_positive_scale_raises(bad):
    head = qualiface.create_head("scaleface", D, C)
    scale = torch.full((B,), 10.0)
    scale[3] = bad
    with pytest.raises(ValueError, match="positive"):
        head(torch.randn(B, D), torch.zeros(B, dtype=torch.long), scale=scale)


@pytest.mark.parametrize("shape", [(B + 1,), (B, 2), (1,)])
def test_wrong_scale_shape_raises(shape):
    head = qualiface.create_head("scaleface", D, C)
    with pytest.raises(ValueError, match="shape"):
        head(torch.randn(B, D), torch.zeros(B, dtype=torch.long), scale=torch.ones(shape))


def test_non_finite_scale_raises():
    head = qualiface.create_head("scaleface", D, C)
    scale = torch.ones(B)
    scale[0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        head(torch.randn(B, D), torch.zeros(B, dtype=torch.long), scale=scale)


def test_defaults_and_logs():
    head = qualiface.create_head("scaleface", D, C)
    assert head.margin == 0.5
    out = head(torch.randn(B, D), torch.zeros(B, dtype=torch.long), scale=torch.arange(1.0, B + 1))
    assert out.logs["head/scale_mean"].item() == pytest.approx(4.5)
    assert out.logs["head/scale_min"].item() == 1.0
    assert out.logs["head/scale_max"].item() == B
    assert all(not v.requires_grad for v in out.logs.values())


def test_tiny_training_run_lowers_the_loss():
    """Backbone, class centres and a sigmoid scale predictor (``sigm_mul``, c = 32) train together.

    The loss must also beat ``log C``: the degenerate solution s → 0 (uniform softmax) would reach it without
    learning anything, and a fast-learning scale predictor finds it first, hence its smaller learning rate.
    """
    torch.manual_seed(0)
    classes = 4
    x, labels = clustered_data(classes)
    backbone, scale_head = nn.Linear(16, 8), nn.Linear(16, 1)
    head = qualiface.create_head("scaleface", 8, classes)
    groups = [
        {"params": [*backbone.parameters(), *head.parameters()]},
        {"params": list(scale_head.parameters()), "lr": 0.005},
    ]
    optimizer = torch.optim.SGD(groups, lr=0.05, momentum=0.9)
    outputs = fit(lambda: head(backbone(x), labels, scale=32 * torch.sigmoid(scale_head(x))), optimizer)
    losses, out = step_losses(outputs), outputs[-1]
    assert losses[-1] < 0.5 * losses[0], losses
    assert losses[-1] < 0.5 * math.log(classes), losses
    assert out.logs["head/scale_mean"] > 1.0
