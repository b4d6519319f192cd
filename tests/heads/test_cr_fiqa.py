"""CR-FIQA head against an independent float64 reference written from the paper's equations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import qualiface
from _helpers.tiny_training import clustered_data, fit, step_losses
from qualiface.heads.cr_fiqa import CRFIQA

B, D, C = 8, 16, 10


def make_inputs(seed: int = 0, batch: int = B, classes: int = C) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(batch, D, generator=g, dtype=torch.float64)
    labels = torch.randint(0, classes, (batch,), generator=g)
    quality = torch.randn(batch, generator=g, dtype=torch.float64) * 0.5
    return emb, labels, quality


def make_head(seed: int = 0, classes: int = C, **kwargs: object) -> CRFIQA:
    torch.manual_seed(1000 + seed)  # a stream unrelated to make_inputs'
    head = qualiface.create_head("cr_fiqa", D, classes, **kwargs).double()
    with torch.no_grad():  # centres of unit-ish scale so that cosines spread over (-1, 1)
        head.weight.normal_()
    return head


def smooth_l1(d: torch.Tensor, beta: float) -> torch.Tensor:
    return 0.5 * d**2 / beta if abs(float(d.detach())) < beta else d.abs() - 0.5 * beta


def reference(
    emb: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    quality: torch.Tensor,
    *,
    s: float = 64.0,
    m: float = 0.5,
    alpha: float = 10.0,
    beta: float = 0.5,
    cr_target: str = "paper",
    cr_eps: float = 1e-9,
    floor: float | str | None = "auto",
) -> dict[str, torch.Tensor]:
    """Per-sample loop: CE(ArcFace) + α SmoothL1_β(q, CR), CR from detached CCS and NNCCS."""
    if floor == "auto":  # the paper's plain maximum; the official code floors at -1e-12
        floor = -1e-12 if cr_target == "code" else None
    w_hat = F.normalize(weight, dim=1)
    losses, logits_rows, ccs_all, hardest_all, cr_all = [], [], [], [], []
    for i in range(emb.shape[0]):
        y = int(labels[i])
        cos = w_hat @ F.normalize(emb[i], dim=0)
        target = s * torch.cos(torch.acos(cos[y]) + m)
        logits = torch.cat([s * cos[:y], target.reshape(1), s * cos[y + 1 :]])
        ce = torch.logsumexp(logits, 0) - target
        ccs = cos[y].detach()
        hardest = torch.cat([cos[:y], cos[y + 1 :]]).detach().max()
        nnccs = hardest if floor is None else torch.clamp(hardest, min=floor)
        cr = ccs / nnccs if cr_target == "code" else ccs / (nnccs + 1.0 + cr_eps)
        losses.append(ce + alpha * smooth_l1(quality[i] - cr, beta))
        logits_rows.append(logits.detach())
        ccs_all.append(ccs)
        hardest_all.append(hardest)
        cr_all.append(cr)
    per_sample = torch.stack(losses)
    return {
        "loss": per_sample.mean(),
        "loss_per_sample": per_sample,
        "logits": torch.stack(logits_rows),
        "cos_target": torch.stack(ccs_all),
        "cos_hardest_negative": torch.stack(hardest_all),
        "cr": torch.stack(cr_all),
    }


def grads(loss: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(loss, tensors)


@pytest.mark.parametrize("cr_target", ["paper", "code"])
@pytest.mark.parametrize("seed", [0, 1])
def test_values_and_gradients_match_reference(cr_target: str, seed: int) -> None:
    emb, labels, quality = make_inputs(seed)
    head = make_head(seed, cr_target=cr_target)
    emb_h, q_h = emb.clone().requires_grad_(), quality.clone().requires_grad_()
    out = head(emb_h, labels, quality=q_h)
    emb_r, q_r = emb.clone().requires_grad_(), quality.clone().requires_grad_()
    w_r = head.weight.detach().clone().requires_grad_()
    ref = reference(emb_r, w_r, labels, q_r, cr_target=cr_target)

    assert out.cos_target.abs().max() < 0.99  # away from the arccos clamp
    residual = (quality - ref["cr"]).abs()
    assert (residual < 0.5).any()  # both SmoothL1 branches are exercised
    assert (residual > 0.5).any()
    for key in ("loss", "loss_per_sample", "logits", "cos_target", "cos_hardest_negative"):
        torch.testing.assert_close(getattr(out, key), ref[key], msg=key)
    torch.testing.assert_close(out.logs["crfiqa/cr_mean"], ref["cr"].mean())
    g_head = grads(out.loss, emb_h, head.weight, q_h)
    g_ref = grads(ref["loss"], emb_r, w_r, q_r)
    for name, a, b in zip(("embeddings", "weight", "quality"), g_head, g_ref, strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_quality_gradient_is_clipped_residual() -> None:
    emb, labels, quality = make_inputs(3)
    head = make_head(3)
    q = quality.clone().requires_grad_()
    out = head(emb, labels, quality=q)
    (g,) = grads(out.loss, q)
    cr = reference(emb, head.weight.detach(), labels, quality)["cr"]
    expected = 10.0 / B * ((quality - cr) / 0.5).clamp(-1.0, 1.0)
    torch.testing.assert_close(g, expected)


def test_regression_term_gives_embeddings_and_centres_no_gradient() -> None:
    emb, labels, quality = make_inputs(4)
    with_reg, without_reg = make_head(4), make_head(4, alpha=0.0)
    results = []
    for head in (with_reg, without_reg):
        e = emb.clone().requires_grad_()
        out = head(e, labels, quality=quality + 3.0)  # far from CR: the SmoothL1 term is large
        results.append(grads(out.loss, e, head.weight))
        assert out.logs["crfiqa/regression_loss"] > 1.0
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


def orthogonal_setup(cos_target: float, negatives: list[float]) -> tuple[CRFIQA, torch.Tensor, torch.Tensor]:
    """One sample, class 0; class centres e_0..e_k; the embedding has the given cosines to them."""
    classes = len(negatives) + 1
    head = qualiface.create_head("cr_fiqa", D, classes).double()
    with torch.no_grad():
        head.weight.copy_(torch.eye(classes, D, dtype=torch.float64))
    coords = torch.tensor([cos_target, *negatives], dtype=torch.float64)
    rest = math.sqrt(1.0 - float(coords.pow(2).sum()))
    emb = torch.zeros(1, D, dtype=torch.float64)
    emb[0, :classes] = coords
    emb[0, classes] = rest
    return head, 2.5 * emb, torch.zeros(1, dtype=torch.long)


def test_nnccs_floor_of_the_official_code_is_available() -> None:
    head, emb, labels = orthogonal_setup(0.6, [-0.3, -0.2, -0.4])
    head.nnccs_floor = -1e-12
    out = head(emb, labels, quality=torch.zeros(1, dtype=torch.float64))
    torch.testing.assert_close(out.cos_hardest_negative, torch.tensor([-0.2], dtype=torch.float64))
    # paper form: CR = CCS / (max(-0.2, -1e-12) + 1 + 1e-9)
    torch.testing.assert_close(
        out.logs["crfiqa/cr_mean"], torch.tensor(0.6 / (1.0 - 1e-12 + 1e-9), dtype=torch.float64)
    )


def test_code_target_explodes_when_all_negatives_are_negative() -> None:
    head, emb, labels = orthogonal_setup(0.6, [-0.3, -0.2, -0.4])
    head.cr_target = "code"
    out = head(emb, labels, quality=torch.zeros(1, dtype=torch.float64))
    torch.testing.assert_close(out.logs["crfiqa/cr_mean"], torch.tensor(-0.6e12, dtype=torch.float64))


def test_without_floor_uses_the_plain_maximum_over_negatives() -> None:
    head, emb, labels = orthogonal_setup(0.6, [-0.3, -0.2, -0.4])
    head.nnccs_floor = None
    out = head(emb, labels, quality=torch.zeros(1, dtype=torch.float64))
    torch.testing.assert_close(out.logs["crfiqa/cr_mean"], torch.tensor(0.6 / (0.8 + 1e-9), dtype=torch.float64))


@pytest.mark.parametrize("cr_target", ["paper", "code"])
def test_certainty_ratio_grows_with_ccs_and_falls_with_nnccs(cr_target: str) -> None:
    head = CRFIQA(D, C, cr_target=cr_target)
    ccs = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    nnccs = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    grid = head.certainty_ratio(ccs.unsqueeze(1), nnccs.unsqueeze(0))  # rows: ccs, columns: nnccs
    assert (grid.diff(dim=0) > 0).all()
    assert (grid.diff(dim=1) < 0).all()


def test_sample_nearer_its_centre_gets_larger_target() -> None:
    near, emb_near, labels = orthogonal_setup(0.8, [0.3, 0.1])
    far, emb_far, _ = orthogonal_setup(0.5, [0.3, 0.1])
    q = torch.zeros(1, dtype=torch.float64)
    cr_near = near(emb_near, labels, quality=q).logs["crfiqa/cr_mean"]
    cr_far = far(emb_far, labels, quality=q).logs["crfiqa/cr_mean"]
    torch.testing.assert_close(cr_near, torch.tensor(0.8 / (1.3 + 1e-9), dtype=torch.float64))
    assert cr_near > cr_far


def test_default_arcface_has_no_fallback_beyond_pi() -> None:
    head, emb, labels = orthogonal_setup(-0.95, [0.1, 0.0])  # θ_y + m > π
    out = head(emb, labels, quality=torch.zeros(1, dtype=torch.float64))
    expected = 64.0 * math.cos(math.acos(-0.95) + 0.5)
    torch.testing.assert_close(out.logits[0, 0], torch.tensor(expected, dtype=torch.float64))
    head.fallback = "threshold"
    out = head(emb, labels, quality=torch.zeros(1, dtype=torch.float64))
    expected = 64.0 * (-0.95 - 0.5 * math.sin(0.5))
    torch.testing.assert_close(out.logits[0, 0], torch.tensor(expected, dtype=torch.float64))


def test_paper_defaults_and_keyword_overrides() -> None:
    head = qualiface.create_head("cr_fiqa", 512, 1000)
    assert (head.scale, head.margin, head.alpha, head.beta) == (64.0, 0.5, 10.0, 0.5)
    assert (head.cr_target, head.cr_eps, head.nnccs_floor) == ("paper", 1e-9, "auto")
    assert (head.grad, head.fallback, head.easy_margin) == ("exact", "none", False)
    assert head.weight.shape == (1000, 512)
    assert abs(float(head.weight.detach().std()) - 0.01) < 5e-4
    other = qualiface.create_head("cr_fiqa", 8, 4, alpha=2.0, beta=1.0, cr_target="code", margin=0.3)
    assert (other.alpha, other.beta, other.cr_target, other.margin) == (2.0, 1.0, "code", 0.3)
    with pytest.raises(ValueError, match="cr_target"):
        qualiface.create_head("cr_fiqa", 8, 4, cr_target="other")


def test_logs_are_detached_scalars() -> None:
    emb, labels, quality = make_inputs()
    out = make_head()(emb.requires_grad_(), labels, quality=quality.requires_grad_())
    for key in ("crfiqa/cr_mean", "crfiqa/quality_mean", "crfiqa/regression_loss", "loss/ce"):
        assert out.logs[key].dim() == 0
        assert not out.logs[key].requires_grad
    assert not out.cos_hardest_negative.requires_grad


def test_missing_quality_raises() -> None:
    emb, labels, _ = make_inputs()
    with pytest.raises(ValueError, match="quality"):
        make_head()(emb, labels)


def test_wrong_quality_shape_raises() -> None:
    emb, labels, quality = make_inputs()
    with pytest.raises(ValueError, match="quality"):
        make_head()(emb, labels, quality=torch.cat([quality, quality[:1]]))


def test_nan_quality_raises() -> None:
    emb, labels, quality = make_inputs()
    quality[2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        make_head()(emb, labels, quality=quality)


def test_column_quality_is_accepted() -> None:
    emb, labels, quality = make_inputs()
    head = make_head()
    torch.testing.assert_close(
        head(emb, labels, quality=quality.unsqueeze(1)).loss, head(emb, labels, quality=quality).loss
    )


def test_bf16_autocast_computes_in_float32() -> None:
    head = qualiface.create_head("cr_fiqa", D, C)
    emb, labels, quality = make_inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(emb.float().bfloat16(), labels, quality=quality.bfloat16())
    assert out.loss.dtype == torch.float32
    assert torch.isfinite(out.loss)


def test_tiny_training_run_lowers_the_loss() -> None:
    x, y = clustered_data(generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    backbone, quality_branch = torch.nn.Linear(16, 8), torch.nn.Linear(8, 1)
    head = qualiface.create_head("cr_fiqa", 8, 4)
    params = [*backbone.parameters(), *quality_branch.parameters(), *head.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.01)

    def forward():
        features = backbone(x)
        return head(features, y, quality=quality_branch(features))

    outputs = fit(forward, optimizer)
    losses = step_losses(outputs)
    regression = [out.logs["crfiqa/regression_loss"].item() for out in outputs]
    assert losses[-1] < 0.1 * losses[0]
    assert regression[-1] < 0.1
