"""UniTSFace head against an independent float64 reference written from the paper's equations."""

from __future__ import annotations

import math

import pytest
import torch

import qualiface
from _helpers.tiny_training import clustered_data, fit, step_losses
from qualiface.heads.base import HeadOutput
from qualiface.heads.unitsface import UniTSFace

B, D, C = 8, 16, 10
EPS = 1e-5  # UniTSFace normalisation eps


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm().clamp_min(EPS)


def softplus(z: torch.Tensor) -> torch.Tensor:
    return torch.log1p(torch.exp(z))


def reference(
    emb: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    memory: torch.Tensor,
    seen: torch.Tensor,
    bias: torch.Tensor,
    *,
    s: float = 64.0,
    m: float = 0.4,
    gamma: float = 64.0,
    m_uss: float = 0.1,
    weights: tuple[float, float] = (0.5, 0.5),
    uss_only: bool = False,
) -> dict[str, torch.Tensor]:
    """Per-sample loop: w_cls CosFace + w_uss USS-m against the memory; unseen memory rows are skipped."""
    losses, logits_rows, cosface_all, uss_all = [], [], [], []
    for i in range(emb.shape[0]):
        y = int(labels[i])
        x = unit(emb[i])
        cos = torch.stack([x @ unit(weight[j]) for j in range(weight.shape[0])])
        target = s * (cos[y] - m)
        logits = torch.cat([s * cos[:y], target.reshape(1), s * cos[y + 1 :]])
        cosface = torch.logsumexp(logits, 0) - target
        uss = emb.new_zeros(())
        for j in range(memory.shape[0]):
            if not seen[j]:
                continue
            c = x @ unit(memory[j])
            if j == y:
                uss = uss + softplus(-torch.clamp(gamma * (c - m_uss) - bias, -gamma, gamma))
            else:
                uss = uss + softplus(torch.clamp(gamma * c - bias, -gamma, gamma))
        losses.append(uss if uss_only else weights[0] * cosface + weights[1] * uss)
        logits_rows.append(logits.detach())
        cosface_all.append(cosface.detach())
        uss_all.append(uss.detach())
    per_sample = torch.stack(losses)
    return {
        "loss": per_sample.mean(),
        "loss_per_sample": per_sample,
        "logits": torch.stack(logits_rows),
        "cosface": torch.stack(cosface_all),
        "uss": torch.stack(uss_all),
    }


def reference_bias_init(
    emb: torch.Tensor, labels: torch.Tensor, memory: torch.Tensor, seen: torch.Tensor, gamma: float = 64.0
) -> float:
    """mean over samples with a seen negative of logsumexp_{seen j ≠ y} γ cos(x, mem_j)."""
    values = []
    for i in range(emb.shape[0]):
        terms = [
            gamma * float(unit(emb[i]) @ unit(memory[j])) for j in range(memory.shape[0]) if seen[j] and j != labels[i]
        ]
        if terms:
            top = max(terms)
            values.append(top + math.log(sum(math.exp(t - top) for t in terms)))
    return sum(values) / len(values)


def make_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    emb = 3.0 * torch.randn(B, D, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 3, 3, 5, 7, 9, 1, 0])
    return emb, labels


def make_head(seed: int = 0, *, bias: float = 0.0, seen: tuple[int, ...] = (), **kwargs: object) -> UniTSFace:
    """A float64 head whose memory rows ``seen`` hold random features (the others zero and unseen)."""
    torch.manual_seed(1000 + seed)  # a stream unrelated to make_inputs'
    head = qualiface.create_head("unitsface", D, C, **kwargs).double()
    with torch.no_grad():
        head.bias.fill_(bias)
        for j in seen:
            head.feat_mem[j] = 2.0 * torch.randn(D, dtype=torch.float64)
            head.seen[j] = True
    return head


SEEN = (0, 1, 2, 3, 6, 7, 8)  # 5 and 9 unseen: samples of class 5 and 9 have no positive term


@pytest.mark.parametrize(
    ("combine", "uss_only", "weights"),
    [("mean", False, (0.5, 0.5)), ("sum", False, (1.0, 1.0)), ("mean", True, (0.0, 1.0))],
)
def test_values_and_gradients_match_reference(combine: str, uss_only: bool, weights: tuple[float, float]) -> None:
    emb, labels = make_inputs()
    head = make_head(bias=20.0, seen=SEEN, combine=combine, uss_only=uss_only).eval()
    memory, seen = head.feat_mem.clone(), head.seen.clone()
    emb_h = emb.clone().requires_grad_()
    out = head(emb_h, labels)
    emb_r = emb.clone().requires_grad_()
    w_r = head.weight.detach().clone().requires_grad_()
    b_r = torch.tensor(20.0, dtype=torch.float64, requires_grad=True)
    ref = reference(emb_r, w_r, labels, memory, seen, b_r, weights=weights, uss_only=uss_only)

    for key in ("loss", "loss_per_sample", "logits"):
        torch.testing.assert_close(getattr(out, key), ref[key], msg=key)
    torch.testing.assert_close(out.logs["loss/cosface"], ref["cosface"].mean())
    torch.testing.assert_close(out.logs["loss/uss"], ref["uss"].mean())
    assert ref["uss"].mean() > 1.0  # the USS term is not vanishing in this configuration

    inputs = [emb_h, head.bias] if uss_only else [emb_h, head.weight, head.bias]
    g_head = torch.autograd.grad(out.loss, inputs)
    g_ref = torch.autograd.grad(ref["loss"], [emb_r, b_r] if uss_only else [emb_r, w_r, b_r])
    torch.testing.assert_close(g_head[0], g_ref[0], msg="embeddings")
    torch.testing.assert_close(g_head[-1], g_ref[-1].reshape(1), msg="bias")
    if not uss_only:
        torch.testing.assert_close(g_head[1], g_ref[1], msg="weight")


def test_uss_only_gives_class_centres_no_gradient() -> None:
    emb, labels = make_inputs()
    head = make_head(bias=20.0, seen=SEEN, uss_only=True)
    head(emb, labels).loss.backward()
    assert head.weight.grad is None
    assert head.bias.grad is not None


def test_bias_is_initialised_from_data_and_used_in_the_same_forward() -> None:
    emb, labels = make_inputs(1)
    head = make_head(1, bias=0.0, seen=SEEN).eval()
    memory, seen = head.feat_mem.clone(), head.seen.clone()
    out = head(emb, labels)
    b0 = reference_bias_init(emb, labels, memory, seen)
    assert b0 > 0
    torch.testing.assert_close(head.bias.detach(), torch.tensor([b0], dtype=torch.float64))
    b_r = torch.tensor(b0, dtype=torch.float64, requires_grad=True)
    ref = reference(emb, head.weight.detach(), labels, memory, seen, b_r)
    torch.testing.assert_close(out.loss, ref["loss"])
    (g_head,) = torch.autograd.grad(out.loss, head.bias)
    (g_ref,) = torch.autograd.grad(ref["loss"], b_r)
    torch.testing.assert_close(g_head, g_ref.reshape(1))
    torch.testing.assert_close(out.logs["unitsface/threshold"], torch.tensor(b0 / 64.0, dtype=torch.float64))


def test_negative_bias_is_reinitialised_but_positive_bias_is_kept() -> None:
    emb, labels = make_inputs(1)
    head = make_head(1, bias=-3.0, seen=SEEN).eval()
    head(emb, labels)
    b0 = reference_bias_init(emb, labels, head.feat_mem, head.seen)
    torch.testing.assert_close(head.bias.detach(), torch.tensor([b0], dtype=torch.float64))
    head = make_head(1, bias=0.25, seen=SEEN).eval()
    head(emb, labels)
    assert head.bias.item() == 0.25


def test_empty_memory_leaves_bias_alone_and_adds_no_uss_term() -> None:
    emb, labels = make_inputs()
    head = make_head().eval()
    out = head(emb, labels)
    assert head.bias.item() == 0.0
    torch.testing.assert_close(out.loss_per_sample, 0.5 * _cosface(out))
    assert float(out.logs["loss/uss"]) == 0.0


def _cosface(out: HeadOutput) -> torch.Tensor:
    """Per-sample CosFace cross-entropy recomputed from the reported (margined) logits."""
    logits, labels = out.logits, out.labels
    assert logits is not None
    assert labels is not None
    return torch.logsumexp(logits, 1) - logits.gather(1, labels.unsqueeze(1)).squeeze(1)


def test_unseen_memory_rows_do_not_matter() -> None:
    emb, labels = make_inputs(2)
    clean = make_head(2, bias=15.0, seen=SEEN).eval()
    dirty = make_head(2, bias=15.0, seen=SEEN).eval()
    with torch.no_grad():  # garbage in the unseen rows: huge and aligned with the embeddings
        dirty.feat_mem[5] = 1e6 * emb[3]
        dirty.feat_mem[9] = 1e6 * emb[0]
    torch.testing.assert_close(dirty(emb, labels).loss, clean(emb, labels).loss)


def test_memory_update_after_the_loss_later_sample_wins() -> None:
    emb, labels = make_inputs(3)
    labels = torch.tensor([2, 5, 2, 2, 5, 8, 1, 8])
    head = make_head(3, bias=15.0, seen=(2, 4))
    before = head.feat_mem.clone()
    with torch.no_grad():
        expected_loss = make_head(3, bias=15.0, seen=(2, 4)).eval()(emb, labels).loss
    out = head(emb, labels)  # training mode
    torch.testing.assert_close(out.loss.detach(), expected_loss)  # the loss used the memory before the update
    for cls, last in ((2, 3), (5, 4), (8, 7), (1, 6)):
        torch.testing.assert_close(head.feat_mem[cls], emb[last])
    torch.testing.assert_close(head.feat_mem[4], before[4])
    assert head.seen.nonzero().flatten().tolist() == [1, 2, 4, 5, 8]
    assert int(head.num_steps) == 1


def test_memory_update_uses_true_labels_under_class_sampling() -> None:
    emb, labels = make_inputs(4)
    head = make_head(4, sample_rate=0.5)
    out = head(emb, labels)
    assert out.class_index is not None
    for i in (2, 3, 4, 5, 6, 7):  # the last sample of each class (labels 0, 3, 3, 5, 7, 9, 1, 0)
        torch.testing.assert_close(head.feat_mem[labels[i]], emb[i])


@pytest.mark.parametrize("negatives", ["all", "sampled"])
def test_uss_negatives_all_or_only_the_sampled_classes(negatives: str) -> None:
    emb, labels = make_inputs(5)
    head = make_head(5, bias=10.0, seen=SEEN, sample_rate=0.5, uss_negatives=negatives)
    memory, seen = head.feat_mem.clone(), head.seen.clone()
    out = head(emb, labels)
    rows = out.class_index if negatives == "sampled" else torch.arange(C)
    full = make_head(5, bias=10.0, seen=SEEN)  # an unsampled head on the chosen memory rows only
    head_rows = qualiface.create_head("unitsface", D, len(rows)).double()
    with torch.no_grad():
        head_rows.bias.fill_(10.0)
        head_rows.feat_mem.copy_(memory[rows])
        head_rows.seen.copy_(seen[rows])
        head_rows.weight.copy_(full.weight[rows])
    head_rows.eval()
    columns = torch.searchsorted(rows, labels)
    expected = head_rows(emb, columns).logs["loss/uss"]
    torch.testing.assert_close(out.logs["loss/uss"], expected)
    assert (negatives == "sampled") == (len(rows) < C)


def test_eval_mode_keeps_memory_and_step_counter() -> None:
    emb, labels = make_inputs()
    head = make_head(bias=15.0, seen=SEEN).eval()
    before = head.feat_mem.clone()
    head(emb, labels)
    torch.testing.assert_close(head.feat_mem, before)
    assert int(head.num_steps) == 0


def one_sample(cos_pos: float, cos_negs: list[float], **kwargs: object) -> tuple[UniTSFace, torch.Tensor]:
    """Sample e_0 of class 0; memory row 0 has cosine ``cos_pos``, row j has ``cos_negs[j-1]``."""
    head = qualiface.create_head("unitsface", D, len(cos_negs) + 1, **kwargs).double()
    with torch.no_grad():
        for j, c in enumerate([cos_pos, *cos_negs]):
            head.feat_mem[j, 0] = c
            head.feat_mem[j, j + 1] = math.sqrt(1.0 - c * c)
        head.seen.fill_(True)
    emb = torch.zeros(1, D, dtype=torch.float64)
    emb[0, 0] = 1.7
    return head, emb


def test_clamp_at_gamma_cuts_gradients() -> None:
    head, emb = one_sample(-0.9, [-0.9], uss_only=True)
    with torch.no_grad():
        head.bias.fill_(10.0)  # γ(−0.9 − 0.1) − 10 = −74 and γ(−0.9) − 10 = −67.6: both below −γ
    e = emb.clone().requires_grad_()
    out = head(e, torch.zeros(1, dtype=torch.long))
    torch.testing.assert_close(
        out.loss, softplus(torch.tensor(64.0, dtype=torch.float64)) + softplus(torch.tensor(-64.0, dtype=torch.float64))
    )
    g_emb, g_bias = torch.autograd.grad(out.loss, [e, head.bias])
    assert float(g_emb.abs().max()) == 0.0
    assert float(g_bias.abs().max()) == 0.0

    control, emb = one_sample(0.2, [-0.9], uss_only=True)  # the positive is inside the range: gradients flow
    with torch.no_grad():
        control.bias.fill_(10.0)
    e = emb.clone().requires_grad_()
    g_emb, g_bias = torch.autograd.grad(control(e, torch.zeros(1, dtype=torch.long)).loss, [e, control.bias])
    assert float(g_emb.abs().max()) > 1e-3
    assert float(g_bias.abs().max()) > 1e-3


def stationary_bias(n: int, gamma: float, g_pos: float, g_neg: float) -> float:
    """Root of ∂/∂b [softplus(b − γ g⁺) + (n−1) softplus(γ g⁻ − b)] = 0 (all positives g⁺, negatives g⁻).

    σ(b − γg⁺) = (n−1) σ(γg⁻ − b) with u = e^b, a = e^{−γg⁺}, c = e^{γg⁻} gives
    a u² − (n−2) a c u − (n−1) c = 0.
    """
    a, c = math.exp(-gamma * g_pos), math.exp(gamma * g_neg)
    u = ((n - 2) * a * c + math.sqrt(((n - 2) * a * c) ** 2 + 4 * a * (n - 1) * c)) / (2 * a)
    return math.log(u)


def paper_bias(n: int, gamma: float) -> float:
    """The paper's ideal-case optimum b = log(((N−2)e^{−γ} + sqrt((N−2)²e^{−2γ} + 4(N−1)))/2)."""
    e = math.exp(-gamma)
    return math.log(((n - 2) * e + math.sqrt((n - 2) ** 2 * e * e + 4 * (n - 1))) / 2)


@pytest.mark.parametrize(("n", "gamma"), [(10, 64.0), (100, 4.0), (3, 1.0)])
def test_paper_ideal_case_is_positive_one_and_negatives_minus_one(n: int, gamma: float) -> None:
    assert stationary_bias(n, gamma, 1.0, -1.0) == pytest.approx(paper_bias(n, gamma), rel=1e-12)
    assert stationary_bias(n, gamma, 1.0, 0.0) != pytest.approx(paper_bias(n, gamma), rel=1e-3)


def uss_bias_gradient(n: int, gamma: float, g_pos: float, g_neg: float, bias: float) -> float:
    head, emb = one_sample(g_pos, [g_neg] * (n - 1), gamma=gamma, margin_uss=0.0, uss_only=True)
    with torch.no_grad():
        head.bias.fill_(bias)
    (grad,) = torch.autograd.grad(head(emb, torch.zeros(1, dtype=torch.long)).loss, head.bias)
    return float(grad)


def test_bias_gradient_vanishes_at_the_closed_form_optimum() -> None:
    n, gamma, g_pos, g_neg = 10, 4.0, 0.9, -0.2  # every pre-clamp value stays inside [−γ, γ] near the optimum
    b_star = stationary_bias(n, gamma, g_pos, g_neg)
    assert gamma * (g_pos - 1) < b_star - 0.5
    assert b_star + 0.5 < gamma * (1 + g_neg)
    assert abs(uss_bias_gradient(n, gamma, g_pos, g_neg, b_star)) < 1e-12
    assert uss_bias_gradient(n, gamma, g_pos, g_neg, b_star - 0.5) < -1e-3
    assert uss_bias_gradient(n, gamma, g_pos, g_neg, b_star + 0.5) > 1e-3


def test_clamp_removes_the_negatives_from_the_exact_ideal_case() -> None:
    # at g⁻ = −1 the negative terms sit at γ·(−1) − b < −γ, so the official clamp leaves only the positive
    # term's gradient σ(b − γ): the paper's stationary point holds for the unclamped loss only
    n, gamma = 10, 4.0
    b_star = paper_bias(n, gamma)
    unclamped = 1 / (1 + math.exp(gamma - b_star)) - (n - 1) / (1 + math.exp(gamma + b_star))
    assert abs(unclamped) < 1e-12
    expected = 1 / (1 + math.exp(gamma - b_star))
    assert uss_bias_gradient(n, gamma, 1.0 - 1e-12, -1.0 + 1e-12, b_star) == pytest.approx(expected, rel=1e-6)


def test_warmup_trains_cosface_only_while_the_memory_fills() -> None:
    emb, labels = make_inputs(5)
    head = make_head(5, uss_warmup_steps=2)
    for step in range(2):
        out = head(emb, labels)
        torch.testing.assert_close(out.loss_per_sample, _cosface(out))
        assert head.bias.item() == 0.0
        assert int(head.num_steps) == step + 1
    assert bool(head.seen[labels].all())
    out = head(emb, labels)
    assert head.bias.item() > 0
    assert float(out.logs["loss/uss"]) > 0
    torch.testing.assert_close(out.loss.detach(), 0.5 * out.logs["loss/cosface"] + 0.5 * out.logs["loss/uss"])


def test_state_dict_round_trip_restores_all_state() -> None:
    emb, labels = make_inputs(6)
    head = make_head(6)
    for _ in range(3):
        head(emb + 0.1 * torch.randn_like(emb), labels).loss.backward()
    state = head.state_dict()
    assert {"weight", "bias", "feat_mem", "seen", "num_steps"} <= set(state)
    fresh = qualiface.create_head("unitsface", D, C).double()
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.feat_mem, head.feat_mem)
    assert torch.equal(fresh.seen, head.seen)
    torch.testing.assert_close(fresh.bias, head.bias)
    assert int(fresh.num_steps) == int(head.num_steps) == 3
    torch.testing.assert_close(fresh.eval()(emb, labels).loss, head.eval()(emb, labels).loss)


def test_paper_defaults_and_keyword_overrides() -> None:
    head = qualiface.create_head("unitsface", 512, 1000)
    assert (head.scale, head.margin, head.gamma, head.margin_uss) == (64.0, 0.4, 64.0, 0.1)
    assert (head.combine, head.weights, head.uss_only, head.uss_warmup_steps) == ("mean", (0.5, 0.5), False, 0)
    assert head.normalize_eps == 1e-5
    assert abs(float(head.weight.detach().std()) - 1 / math.sqrt(512)) < 0.002
    assert head.feat_mem.dtype == torch.float32
    assert not head.seen.any()
    assert head.bias.item() == 0.0
    other = qualiface.create_head("unitsface", 8, 4, combine="sum", gamma=32.0, margin_uss=0.0, uss_warmup_steps=5)
    assert (other.weights, other.gamma, other.margin_uss, other.uss_warmup_steps) == ((1.0, 1.0), 32.0, 0.0, 5)
    with pytest.raises(ValueError, match="combine"):
        qualiface.create_head("unitsface", 8, 4, combine="max")


def test_threshold_is_bias_over_gamma_and_logged() -> None:
    emb, labels = make_inputs()
    head = make_head(bias=12.8, seen=SEEN).eval()
    out = head(emb, labels)
    assert float(head.threshold) == pytest.approx(0.2)
    for key in ("unitsface/threshold", "unitsface/bias", "loss/uss", "loss/cosface", "unitsface/seen_fraction"):
        assert out.logs[key].dim() == 0
        assert not out.logs[key].requires_grad
    assert float(out.logs["unitsface/seen_fraction"]) == pytest.approx(len(SEEN) / C)


def test_bf16_autocast_computes_in_float32() -> None:
    head = qualiface.create_head("unitsface", D, C)
    emb, labels = make_inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        head(emb.bfloat16(), labels)
        out = head(emb.bfloat16(), labels)
    assert out.loss.dtype == torch.float32
    assert torch.isfinite(out.loss)
    assert head.feat_mem.dtype == torch.float32


def test_tiny_training_run_lowers_the_loss() -> None:
    x, y = clustered_data(generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    backbone = torch.nn.Linear(16, 8)
    head = qualiface.create_head("unitsface", 8, 4)
    optimizer = torch.optim.SGD([*backbone.parameters(), *head.parameters()], lr=0.01)
    losses = step_losses(fit(lambda: head(backbone(x), y), optimizer))
    assert head.bias.item() > 0
    assert losses[-1] < 0.05 * max(losses[:2])
