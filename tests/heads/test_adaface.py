"""AdaFace (Kim et al., CVPR 2022) against an independent float64 reference of ``head.py: AdaFace.forward``."""

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


def adaface_reference(emb, weight, labels, mean, std, *, training, s=64.0, m=0.4, h=0.333, alpha=0.01, eps=1e-3):
    """The official forward pass, whole-matrix clamp / arccos / cos included. Returns (loss, logits, μ, σ)."""
    norms = emb.norm(dim=1, keepdim=True)
    cos = (emb / norms) @ (weight / weight.norm(dim=1, keepdim=True)).T
    cos = cos.clamp(-1 + eps, 1 - eps)
    safe_norms = norms.clip(0.001, 100).detach()
    if training:
        mean = safe_norms.mean() * alpha + (1 - alpha) * mean
        std = safe_norms.std() * alpha + (1 - alpha) * std
    z = (h * (safe_norms - mean) / (std + eps)).clip(-1, 1)
    onehot = F.one_hot(labels, weight.shape[0]).to(emb.dtype)
    theta = (cos.acos() + onehot * (-m * z)).clip(eps, math.pi - eps)
    logits = s * (theta.cos() - onehot * (m + m * z))
    return F.cross_entropy(logits, labels, reduction="none"), logits, mean, std


def _inputs(weight, cos_y, norms, seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, C, (len(cos_y),), generator=gen)
    cos_y = torch.tensor(cos_y, dtype=torch.float64)
    return embeddings_with_target_cos(weight, labels, cos_y, torch.tensor(norms, dtype=torch.float64), seed), labels


# Norms below the 0.001 clip, ẑ clipped at −1 and +1, ordinary; cosines beyond the 1e-3 clamp (±0.9995),
# near ±1, and a small angle with ẑ = +1 so that θ − m is clipped at ε.
EDGE_COS = [0.9995, -0.9995, 0.99, 0.5, -0.3, 0.98, 0.1, -0.9]
EDGE_NORMS = [1e-4, 1.0, 35.0, 25.0, 150.0, 40.0, 18.0, 22.0]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(
    "config",
    [
        {},
        {"h": 1.0, "init_std": 10.0},  # ẑ saturates at both ends
        {"margin": 0.5, "h": 0.5, "scale": 32.0, "t_alpha": 0.3, "init_mean": 15.0, "init_std": 8.0},
    ],
)
def test_values_and_gradients_match_the_official_forward(training, config):
    torch.manual_seed(0)
    head = qualiface.create_head("adaface", D, C, **config).double().train(training)
    emb, labels = _inputs(head.weight.detach(), EDGE_COS, EDGE_NORMS)
    emb_h = emb.clone().requires_grad_()
    out = head(emb_h, labels)
    out.loss.backward()

    emb_r = emb.clone().requires_grad_()
    w_r = head.weight.detach().clone().requires_grad_()
    kwargs = {"s": config.get("scale", 64.0), "m": config.get("margin", 0.4), "h": config.get("h", 0.333)}
    kwargs["alpha"] = config.get("t_alpha", 0.01)
    mean0, std0 = config.get("init_mean", 20.0), config.get("init_std", 100.0)
    ref, ref_logits, mean, std = adaface_reference(emb_r, w_r, labels, mean0, std0, training=training, **kwargs)
    ref.mean().backward()

    torch.testing.assert_close(out.loss_per_sample, ref)
    torch.testing.assert_close(out.loss, ref.mean())
    torch.testing.assert_close(out.logits, ref_logits)
    torch.testing.assert_close(emb_h.grad, emb_r.grad)
    torch.testing.assert_close(head.weight.grad, w_r.grad)
    torch.testing.assert_close(head.batch_mean, torch.as_tensor(mean, dtype=torch.float64).reshape(1))
    torch.testing.assert_close(head.batch_std, torch.as_tensor(std, dtype=torch.float64).reshape(1))


def test_off_target_logits_use_the_clamped_cosine():
    """The official clamp touches the whole cosine matrix: a negative class at cos ≈ 1 gives s·(1 − ε)."""
    head = qualiface.create_head("adaface", D, C).double()
    weight = head.weight.detach()
    labels = torch.tensor([0, 2])
    cos_to_class_1 = torch.tensor([1.0, 0.9999], dtype=torch.float64)
    emb = embeddings_with_target_cos(weight, torch.tensor([1, 1]), cos_to_class_1, torch.tensor([30.0, 30.0]))
    emb_h, emb_r = emb.clone().requires_grad_(), emb.clone().requires_grad_()
    out = head(emb_h, labels)
    out.loss.backward()
    ref, _, _, _ = adaface_reference(emb_r, weight, labels, 20.0, 100.0, training=True)
    ref.mean().backward()
    torch.testing.assert_close(out.logits[:, 1], torch.full((2,), 64 * (1 - 1e-3), dtype=torch.float64))
    torch.testing.assert_close(out.loss_per_sample, ref)
    torch.testing.assert_close(emb_h.grad, emb_r.grad)


def test_statistics_follow_the_reference_ema_over_several_steps():
    torch.manual_seed(1)
    head = qualiface.create_head("adaface", D, C).double()
    mean, std = torch.tensor(20.0, dtype=torch.float64), torch.tensor(100.0, dtype=torch.float64)
    for step in range(6):
        emb = torch.randn(B, D, dtype=torch.float64) * (5 + 10 * step)
        emb[0] *= 100  # one norm above the 100 clip
        labels = torch.randint(0, C, (B,))
        head(emb, labels)
        a = emb.norm(dim=1).clip(0.001, 100)
        mean = a.mean() * 0.01 + 0.99 * mean
        std = a.std(unbiased=True) * 0.01 + 0.99 * std
        torch.testing.assert_close(head.batch_mean, mean.reshape(1))
        torch.testing.assert_close(head.batch_std, std.reshape(1))
    out = head(torch.randn(B, D, dtype=torch.float64), torch.randint(0, C, (B,)))
    assert out.logs["adaface/norm_mean_ema"] == head.batch_mean[0]
    assert out.logs["adaface/norm_std_ema"] == head.batch_std[0]


def test_eval_mode_does_not_update_the_statistics():
    head = qualiface.create_head("adaface", D, C).eval()
    before = {k: v.clone() for k, v in head.state_dict().items()}
    head(torch.randn(B, D) * 3, torch.randint(0, C, (B,)))
    for key, value in head.state_dict().items():
        torch.testing.assert_close(value, before[key])
    assert head.batch_mean.item() == 20.0
    assert head.batch_std.item() == 100.0


def test_statistics_are_float32_buffers_saved_and_restored():
    head = qualiface.create_head("adaface", D, C)
    assert head.batch_mean.dtype == torch.float32
    assert head.batch_mean.shape == (1,)
    names = dict(head.named_buffers())
    assert set(names) == {"batch_mean", "batch_std"}
    for _ in range(3):
        head(torch.randn(B, D) * 7, torch.randint(0, C, (B,)))
    state = head.state_dict()
    assert {"weight", "batch_mean", "batch_std"} == set(state)
    fresh = qualiface.create_head("adaface", D, C)
    assert fresh.batch_mean.item() == 20.0
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.batch_mean, head.batch_mean)
    torch.testing.assert_close(fresh.batch_std, head.batch_std)
    emb, labels = torch.randn(B, D), torch.randint(0, C, (B,))
    fresh.eval()
    head.eval()
    torch.testing.assert_close(fresh(emb, labels).loss, head(emb, labels).loss)


def test_batch_of_one_keeps_sigma_and_updates_mu():
    head = qualiface.create_head("adaface", D, C)
    emb = torch.randn(1, D)
    out = head(emb, torch.zeros(1, dtype=torch.long))
    assert torch.isfinite(out.loss)
    assert head.batch_std.item() == 100.0
    torch.testing.assert_close(head.batch_mean, 0.01 * emb.norm().reshape(1) + 0.99 * 20.0)


def test_reduce_statistics_hook_gives_the_global_batch_statistics():
    """A trainer all-reduces the moments [n, Σâ, Σâ²]; two simulated ranks then match one process on the
    concatenated batch.
    """
    torch.manual_seed(2)
    emb = torch.randn(2 * B, D, dtype=torch.float64) * torch.linspace(1, 30, 2 * B, dtype=torch.float64)[:, None]
    labels = torch.randint(0, C, (2 * B,))
    single = qualiface.create_head("adaface", D, C, t_alpha=0.5).double()
    single(emb, labels)

    def moments(x):
        a = x.norm(dim=1).clip(0.001, 100)
        return torch.stack([torch.tensor(float(len(a)), dtype=torch.float64), a.sum(), a.square().sum()])

    for rank in range(2):
        local, other = emb[rank * B : (rank + 1) * B], emb[(1 - rank) * B : (2 - rank) * B]
        head = qualiface.create_head("adaface", D, C, t_alpha=0.5).double()
        calls = []
        head.reduce_statistics = lambda t, other=other, calls=calls: calls.append(t.clone()) or t + moments(other)
        head(local, labels[rank * B : (rank + 1) * B])
        assert len(calls) == 1
        torch.testing.assert_close(calls[0], moments(local))
        torch.testing.assert_close(head.batch_mean, single.batch_mean)
        torch.testing.assert_close(head.batch_std, single.batch_std)


def test_update_statistics_is_one_ema_step():
    head = qualiface.create_head("adaface", D, C, t_alpha=0.25)
    head.update_statistics(torch.tensor(4.0), torch.tensor(8.0))
    assert head.batch_mean.item() == pytest.approx(0.25 * 4 + 0.75 * 20)
    assert head.batch_std.item() == pytest.approx(0.25 * 8 + 0.75 * 100)
    head.update_statistics(torch.tensor(4.0), None)
    assert head.batch_std.item() == pytest.approx(0.25 * 8 + 0.75 * 100)


def test_norms_and_statistics_are_detached():
    """No gradient reaches the magnitude: the loss depends on ||f|| only through the detached margin."""
    head = qualiface.create_head("adaface", D, C, h=1.0, init_std=5.0).double()
    emb, labels = _inputs(head.weight.detach(), [0.5, 0.2, -0.1, 0.7], [12.0, 20.0, 25.0, 30.0])
    emb.requires_grad_()
    head(emb, labels).loss.backward()
    radial = (emb.grad * F.normalize(emb.detach(), dim=1)).sum(1)
    torch.testing.assert_close(radial, torch.zeros(4, dtype=torch.float64), rtol=0, atol=1e-12)


def _inputs_inside_the_clamps(weight, norms):
    cos_y = [0.6, 0.3, -0.2, 0.8, 0.05, -0.5, 0.45, 0.9]
    return _inputs(weight, cos_y, norms, seed=3)


def test_zero_concentration_is_cosface_with_margin_m():
    """h = 0 ⇒ ẑ = 0 ⇒ g_angle = 0, g_add = m: AdaFace ≡ CosFace(m)."""
    ada = qualiface.create_head("adaface", D, C, h=0.0).double()
    cosface = qualiface.create_head("cosface", D, C, margin=0.4, scale=64.0).double()
    _compare_heads(ada, cosface, _inputs_inside_the_clamps(ada.weight.detach(), [5.0, 50.0, 20.0, 1.0] * 2))


def test_saturated_low_norm_is_arcface_with_margin_m():
    """ẑ = −1 (norms far below μ) ⇒ g_angle = m, g_add = 0: AdaFace ≡ ArcFace(m) (exact gradient, no fallback)."""
    ada = qualiface.create_head("adaface", D, C, h=10.0).double().eval()
    arcface = qualiface.create_head("arcface", D, C, margin=0.4, scale=64.0, fallback="none").double()
    out = _compare_heads(ada, arcface, _inputs_inside_the_clamps(ada.weight.detach(), [1.0, 2.0, 3.0, 4.0] * 2))
    assert out.logs["adaface/z_mean"] == -1


def _compare_heads(ada, other, inputs):
    emb, labels = inputs
    with torch.no_grad():
        other.weight.copy_(ada.weight)
    emb_a, emb_o = emb.clone().requires_grad_(), emb.clone().requires_grad_()
    out_a, out_o = ada(emb_a, labels), other(emb_o, labels)
    out_a.loss.backward()
    out_o.loss.backward()
    torch.testing.assert_close(out_a.loss_per_sample, out_o.loss_per_sample)
    torch.testing.assert_close(out_a.logits, out_o.logits)
    torch.testing.assert_close(emb_a.grad, emb_o.grad)
    torch.testing.assert_close(ada.weight.grad, other.weight.grad)
    return out_a


def test_high_norm_limit_is_cos_theta_minus_m_minus_2m():
    """ẑ = +1 ⇒ target s·(cos(θ − m) − 2m)."""
    head = qualiface.create_head("adaface", D, C, h=10.0).double().eval()
    emb, labels = _inputs(head.weight.detach(), [0.5, 0.2], [90.0, 95.0])
    out = head(emb, labels)
    theta = torch.acos(torch.tensor([0.5, 0.2], dtype=torch.float64))
    expected = 64 * (torch.cos(theta - 0.4) - 0.8)
    torch.testing.assert_close(out.logits.gather(1, labels[:, None]).squeeze(1), expected)


def test_library_defaults_are_the_training_script_values():
    head = qualiface.create_head("adaface", D, C)
    assert (head.scale, head.margin, head.h, head.t_alpha, head.eps) == (64.0, 0.4, 0.333, 0.01, 1e-3)
    assert (head.norm_min, head.norm_max) == (1e-3, 100.0)
    torch.testing.assert_close(head.weight.norm(dim=1), torch.ones(C))


@pytest.mark.parametrize(("kwargs", "message"), [({"t_alpha": 1.5}, "t_alpha"), ({"eps": 0.0}, "eps")])
def test_bad_configuration_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        qualiface.create_head("adaface", D, C, **kwargs)


def test_tiny_training_run_lowers_the_loss():
    torch.manual_seed(0)
    classes = 4
    x, labels = clustered_data(classes)
    backbone = nn.Linear(16, 8)
    head = qualiface.create_head("adaface", 8, classes)
    optimizer = torch.optim.SGD([*backbone.parameters(), *head.parameters()], lr=0.05, momentum=0.9)
    losses = step_losses(fit(lambda: head(backbone(x), labels), optimizer))
    assert losses[-1] < 0.5 * losses[0], losses
    assert head.batch_mean.item() != 20.0
