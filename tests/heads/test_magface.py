"""MagFace (Meng et al., CVPR 2021) against an independent float64 reference written from the equations."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import qualiface
from _helpers.tiny_training import clustered_data, fit, step_losses

torch.set_num_threads(2)
B, D, C = 8, 16, 10
DEFAULTS = {"scale": 64.0, "l_a": 10.0, "u_a": 110.0, "l_m": 0.45, "u_m": 0.8, "lambda_g": 35.0}
# Norms below l_a, at l_a, inside, at u_a and beyond; cosines near ±1 (but > 1e-3 away), negative
# (easy margin / threshold fallback: θ + m > π for −0.95) and ordinary.
NORMS = [5.0, 10.0, 23.0, 60.0, 110.0, 150.0, 40.0, 12.5]
COS_Y = [0.995, -0.2, 0.5, -0.95, 0.1, 0.7, -0.995, 0.3]


def embeddings_with_target_cos(weight, labels, cos_y, norms, seed=0):
    """Raw embeddings whose norm is ``norms`` and whose cosine to their own class centre is ``cos_y``."""
    gen = torch.Generator().manual_seed(seed)
    w_hat = F.normalize(weight[labels], dim=1)
    r = torch.randn(w_hat.shape, generator=gen, dtype=w_hat.dtype)
    r = F.normalize(r - (r * w_hat).sum(1, keepdim=True) * w_hat, dim=1)
    x = cos_y[:, None] * w_hat + torch.sqrt(1 - cos_y**2)[:, None] * r
    return norms[:, None] * x


def magface_reference(emb, weight, labels, *, scale, l_a, u_a, l_m, u_m, lambda_g, kind, easy_margin):
    """Per-sample loop over the official formulas (``models/magface.py``, ``run/trainer.py``)."""
    losses, all_logits = [], []
    for i in range(emb.shape[0]):
        f, y = emb[i], int(labels[i])
        norm = torch.linalg.vector_norm(f)
        a = norm.clamp(l_a, u_a)
        m = (u_m - l_m) / (u_a - l_a) * (a - l_a) + l_m
        cos = ((f / norm) @ (weight / weight.norm(dim=1, keepdim=True)).T).clamp(-1, 1)
        c = cos[y]
        if kind == "arc":
            t = c * torch.cos(m) - torch.sqrt(1 - c**2) * torch.sin(m)
            if easy_margin:
                t = t if c > 0 else c
            elif c <= torch.cos(math.pi - m):
                t = c - torch.sin(math.pi - m) * m
        else:
            t = c - m
        logits = torch.where(torch.arange(len(cos)) == y, scale * t, scale * cos)
        g = a / u_a**2 + 1 / a
        losses.append(-torch.log_softmax(logits, 0)[y] + lambda_g * g)
        all_logits.append(logits)
    return torch.stack(losses), torch.stack(all_logits)


def _inputs(head, seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, C, (B,), generator=gen)
    cos_y = torch.tensor(COS_Y, dtype=torch.float64)
    emb = embeddings_with_target_cos(head.weight.detach(), labels, cos_y, torch.tensor(NORMS, dtype=torch.float64))
    return emb, labels


@pytest.mark.parametrize(
    ("kind", "easy_margin", "params"),
    [
        ("arc", True, DEFAULTS),
        ("arc", False, DEFAULTS),
        ("cos", True, {**DEFAULTS, "l_m": 0.35, "lambda_g": 150.0}),
        ("arc", True, {"scale": 32.0, "l_a": 1.0, "u_a": 51.0, "l_m": 0.45, "u_m": 1.0, "lambda_g": 5.0}),
    ],
)
def test_values_and_gradients_match_the_reference(kind, easy_margin, params):
    torch.manual_seed(0)
    head = qualiface.create_head("magface", D, C, kind=kind, easy_margin=easy_margin, **params).double()
    emb, labels = _inputs(head)
    emb_h = emb.clone().requires_grad_()
    out = head(emb_h, labels)
    out.loss.backward()

    emb_r = emb.clone().requires_grad_()
    w_r = head.weight.detach().clone().requires_grad_()
    ref, ref_logits = magface_reference(emb_r, w_r, labels, kind=kind, easy_margin=easy_margin, **params)
    ref.mean().backward()

    torch.testing.assert_close(out.loss_per_sample, ref)
    torch.testing.assert_close(out.loss, ref.mean())
    torch.testing.assert_close(out.logits, ref_logits)
    torch.testing.assert_close(emb_h.grad, emb_r.grad)
    torch.testing.assert_close(head.weight.grad, w_r.grad)


def test_the_paper_defaults_are_the_run_sh_values():
    head = qualiface.create_head("magface", D, C)
    assert (head.scale, head.l_a, head.u_a, head.l_m, head.u_m, head.lambda_g) == (64, 10, 110, 0.45, 0.8, 35)
    assert head.kind == "arc"
    assert head.easy_margin
    cos_head = qualiface.create_head("magface", D, C, kind="cos")
    assert (cos_head.l_m, cos_head.lambda_g) == (0.35, 150)
    override = qualiface.create_head("magface", D, C, kind="cos", l_m=0.4, lambda_g=20.0, u_a=90.0)
    assert (override.l_m, override.lambda_g, override.u_a) == (0.4, 20.0, 90.0)


def test_the_margin_is_linear_and_clamped_at_the_bounds():
    head = qualiface.create_head("magface", D, C).double()
    norms = torch.tensor([1.0, 10.0, 60.0, 110.0, 500.0], dtype=torch.float64)
    a = norms.clamp(head.l_a, head.u_a)
    torch.testing.assert_close(head.margin(a), torch.tensor([0.45, 0.45, 0.625, 0.8, 0.8], dtype=torch.float64))
    emb = embeddings_with_target_cos(
        head.weight.detach(), torch.zeros(5, dtype=torch.long), torch.full((5,), 0.6, dtype=torch.float64), norms
    )
    out = head(emb, torch.zeros(5, dtype=torch.long))
    expected_target = 64 * torch.cos(torch.acos(torch.tensor(0.6, dtype=torch.float64)) + head.margin(a))
    torch.testing.assert_close(out.logits[:, 0], expected_target)


def test_clamped_magnitudes_get_no_radial_gradient():
    """Outside [l_a, u_a] neither m(a) nor g(a) moves the magnitude: the gradient is orthogonal to f."""
    head = qualiface.create_head("magface", D, C).double()
    emb, labels = _inputs(head)
    emb.requires_grad_()
    head(emb, labels).loss.backward()
    radial = (emb.grad * F.normalize(emb.detach(), dim=1)).sum(1)
    norms = torch.tensor(NORMS, dtype=torch.float64)
    outside = (norms < head.l_a) | (norms > head.u_a)
    assert outside.sum() == 2
    torch.testing.assert_close(radial[outside], torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-12)
    strictly_inside = (norms > head.l_a) & (norms < head.u_a)
    assert (radial[strictly_inside].abs() > 1e-6).all()


def test_the_margin_is_not_detached():
    """m(a) carries gradient: without the regulariser, the radial gradient of a hard sample is positive."""
    head = qualiface.create_head("magface", D, C, lambda_g=0.0).double()
    labels = torch.zeros(1, dtype=torch.long)
    emb = embeddings_with_target_cos(
        head.weight.detach(),
        labels,
        torch.tensor([0.5], dtype=torch.float64),
        torch.tensor([50.0], dtype=torch.float64),
    ).requires_grad_()
    head(emb, labels).loss.backward()
    radial = (emb.grad * F.normalize(emb.detach(), dim=1)).sum()
    assert radial > 1e-3  # a larger magnitude means a larger margin, hence a larger loss


def test_regularizer_is_strictly_decreasing_and_convex_on_the_interval():
    head = qualiface.create_head("magface", D, C).double()
    a = torch.linspace(head.l_a, head.u_a, 1001, dtype=torch.float64)
    g = head.regularizer(a)
    assert (g.diff() < 0).all()
    assert (g[2:] - 2 * g[1:-1] + g[:-2] > 0).all()
    torch.testing.assert_close(g, a / 110**2 + 1 / a)


def test_feasibility_bound_and_its_log():
    head = qualiface.create_head("magface", D, C)
    assert head.feasibility_bound == pytest.approx(64 * 0.0035 * 110**2 * 10**2 / (110**2 - 10**2))
    assert head.feasibility_bound == pytest.approx(22.5867, abs=1e-4)
    emb, labels = torch.randn(4, D) * 20, torch.randint(0, C, (4,))
    assert head(emb, labels).logs["magface/lambda_feasible"] == 1
    argparse_default = qualiface.create_head("magface", D, C, lambda_g=20.0)  # run/trainer.py default
    assert argparse_default(emb, labels).logs["magface/lambda_feasible"] == 0


def _worst_case_head_and_sample(lambda_g):
    """A hopeless sample (p_y ≈ 0) whose margined angle θ_y + l_m is exactly π/2 at a = l_a."""
    head = qualiface.create_head("magface", D, C, lambda_g=lambda_g).double()
    weight = torch.zeros(C, D, dtype=torch.float64)
    c_y, c_n = math.sin(0.45), 0.9
    weight[0, 0], weight[0, 1] = c_y, math.sqrt(1 - c_y**2)
    for j in range(1, C):
        weight[j, 0], weight[j, j + 1] = c_n, math.sqrt(1 - c_n**2)
    with torch.no_grad():
        head.weight.copy_(weight)
    emb = torch.zeros(1, D, dtype=torch.float64)
    emb[0, 0] = head.l_a
    return head, emb.requires_grad_()


@pytest.mark.parametrize(("factor", "pinned"), [(1.01, False), (0.9, True)])
def test_feasibility_bound_keeps_the_optimum_off_the_lower_bound(factor, pinned):
    """Paper: with λ_g >= s·k·u_a²·l_a²/(u_a² − l_a²), dL/da < 0 at a = l_a for every sample, so the optimal
    magnitude lies inside [l_a, u_a]. Below the bound the worst-case sample is pushed to l_a.
    """
    bound = qualiface.create_head("magface", D, C).feasibility_bound
    head, emb = _worst_case_head_and_sample(factor * bound)
    head(emb, torch.zeros(1, dtype=torch.long)).loss.backward()
    d_loss_d_a = emb.grad[0, 0]  # the embedding lies along e_0, so this is the radial derivative
    assert (d_loss_d_a > 0) == pinned


def _loss_over_magnitudes(head, c_y, c_n, a):
    """Per-sample loss of one sample at cosine ``c_y`` to its centre and ``c_n`` to the 9 others, for each a."""
    weight = torch.zeros(C, D, dtype=torch.float64)
    weight[0, 0], weight[0, 1] = c_y, math.sqrt(1 - c_y**2)
    for j in range(1, C):
        weight[j, 0], weight[j, j + 1] = c_n, math.sqrt(1 - c_n**2)
    with torch.no_grad():
        head.weight.copy_(weight)
    emb = torch.zeros(len(a), D, dtype=torch.float64)
    emb[:, 0] = a
    with torch.no_grad():
        return head(emb, torch.zeros(len(a), dtype=torch.long)).loss_per_sample


def test_optimal_magnitude_is_unique_and_increases_with_the_target_cosine():
    """MagFace paper, Sec. 3 (monotonicity and convergence): with λ_g above the bound and θ_y + u_m <= π/2, the
    per-sample loss is strictly convex in a on [l_a, u_a] with a unique minimiser a*, and a* increases
    monotonically with cos θ_y: easier (higher quality) samples get larger magnitudes.
    """
    head = qualiface.create_head("magface", D, C).double()
    a = torch.linspace(head.l_a, head.u_a, 4001, dtype=torch.float64)
    optima = []
    for c_y in [0.72, 0.75, 0.8, 0.85, 0.9]:  # θ_y + 0.8 <= π/2 needs cos θ_y >= sin(0.8) ≈ 0.717
        loss = _loss_over_magnitudes(head, c_y, 0.3, a)
        assert (loss[2:] - 2 * loss[1:-1] + loss[:-2] > 0).all(), "not strictly convex"
        best = int(loss.argmin())
        assert 0 < best < len(a) - 1, "optimum pinned at a bound"
        optima.append(float(a[best]))
    assert all(lo + 1.0 < hi for lo, hi in itertools.pairwise(optima)), optima


def test_centres_are_initialised_on_the_unit_sphere():
    head = qualiface.create_head("magface", D, C)
    torch.testing.assert_close(head.weight.norm(dim=1), torch.ones(C))
    head.reset_parameters()
    torch.testing.assert_close(head.weight.norm(dim=1), torch.ones(C))


def test_logs_hold_the_method_diagnostics():
    head = qualiface.create_head("magface", D, C).double()
    emb, labels = _inputs(head)
    logs = head(emb, labels).logs
    a = torch.tensor(NORMS, dtype=torch.float64).clamp(10, 110)
    torch.testing.assert_close(logs["head/margin_mean"], head.margin(a).mean())
    torch.testing.assert_close(logs["magface/g_mean"], head.regularizer(a).mean())
    torch.testing.assert_close(logs["magface/clamped_low_frac"], torch.tensor(1 / 8, dtype=torch.float64))
    assert all(not v.requires_grad for v in logs.values())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"l_a": 50.0, "u_a": 20.0}, "l_a < u_a"), ({"kind": "sphere"}, "kind"), ({"lambda_g": -1.0}, "lambda_g")],
)
def test_bad_configuration_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        qualiface.create_head("magface", D, C, **kwargs)


def test_rejects_auxiliary_inputs():
    head = qualiface.create_head("magface", D, C)
    with pytest.raises(ValueError, match="does not take"):
        head(torch.randn(2, D), torch.zeros(2, dtype=torch.long), scale=torch.ones(2))


@pytest.mark.parametrize("kind", ["arc", "cos"])
def test_tiny_training_run_lowers_the_loss(kind):
    torch.manual_seed(0)
    classes = 4
    x, labels = clustered_data(classes)
    backbone = nn.Linear(16, 8)
    with torch.no_grad():
        backbone.weight.mul_(8.0)  # start with magnitudes inside [l_a, u_a]
    head = qualiface.create_head("magface", 8, classes, kind=kind)
    optimizer = torch.optim.SGD([*backbone.parameters(), *head.parameters()], lr=0.05, momentum=0.9)
    losses = step_losses(fit(lambda: head(backbone(x), labels), optimizer))
    assert losses[-1] < 0.5 * losses[0], losses
