"""The head contract, checked for every registered head (a newly registered head is tested automatically)."""

import math

import pytest
import torch
from torch import nn

import qualiface
from _helpers.tiny_training import clustered_data, fit, step_losses
from qualiface.heads.base import HeadOutput

B, D, C = 6, 12, 9
HEADS = qualiface.list_heads()


def _aux(head, batch=B, dtype=torch.float32):
    values = {"scale": torch.rand(batch, dtype=dtype) * 30 + 10, "quality": torch.rand(batch, dtype=dtype)}
    return {name: values[name] for name in head.requires}


def _call(head, emb, labels, **extra):
    return head(emb, labels, **_aux(head, len(labels), emb.dtype), **extra)


def test_every_method_of_the_issue_is_registered():
    expected = {"softmax", "cosface", "arcface", "magface", "adaface", "scaleface", "unitsface", "cr_fiqa"}
    assert expected <= set(HEADS)


@pytest.mark.parametrize("name", HEADS)
def test_output_contract(name):
    head = qualiface.create_head(name, D, C)
    assert isinstance(head.weight, nn.Parameter)
    assert head.weight.shape == (C, D)
    emb = torch.randn(B, D, requires_grad=True)
    labels = torch.randint(0, C, (B,))
    out = _call(head, emb, labels)
    assert isinstance(out, HeadOutput)
    assert out.loss.shape == ()
    assert out.loss_per_sample.shape == (B,)
    torch.testing.assert_close(out.loss, out.loss_per_sample.mean())
    assert out.logits is None or out.logits.shape == (B, C)
    assert out.cos_target.shape == (B,)
    assert not out.cos_target.requires_grad
    assert out.logs
    for key, value in out.logs.items():
        assert value.dim() == 0, key
        assert not value.requires_grad, key
    out.loss.backward()
    assert emb.grad is not None
    assert torch.isfinite(emb.grad).all()
    assert head.weight.grad is not None
    assert head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", HEADS)
def test_computes_in_float32_under_bf16_autocast(name):
    head = qualiface.create_head(name, D, C)
    emb = torch.randn(B, D, dtype=torch.bfloat16, requires_grad=True)
    labels = torch.randint(0, C, (B,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _call(head, emb, labels)
    assert out.loss.dtype == torch.float32
    assert out.loss_per_sample.dtype == torch.float32
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert emb.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("name", HEADS)
def test_float64_head_computes_in_float64(name):
    head = qualiface.create_head(name, D, C).double()
    out = _call(head, torch.randn(B, D, dtype=torch.float64), torch.randint(0, C, (B,)))
    assert out.loss_per_sample.dtype == torch.float64


@pytest.mark.parametrize("name", HEADS)
def test_state_dict_round_trip_restores_the_head(name):
    head = qualiface.create_head(name, D, C)
    emb, labels = torch.randn(B, D), torch.randint(0, C, (B,))
    head.train()
    for _ in range(3):  # let stateful heads (AdaFace statistics, UniTSFace memory) change their state
        _call(head, emb, labels)
    head.eval()
    torch.manual_seed(1)
    aux = _aux(head)
    expected = head(emb, labels, **aux)
    clone = qualiface.create_head(name, D, C)
    clone.load_state_dict(head.state_dict())
    clone.eval()
    got = clone(emb, labels, **aux)
    torch.testing.assert_close(got.loss_per_sample, expected.loss_per_sample)


@pytest.mark.parametrize("name", HEADS)
@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (torch.tensor([0, 1, 2, 3, 4, C]), "outside"),
        (torch.tensor([0, 1, 2, 3, 4, -1]), "outside"),
        (torch.zeros(6), "integer"),
        (torch.zeros(5, dtype=torch.long), "shape"),
    ],
)
def test_bad_labels_raise_clear_errors(name, labels, message):
    head = qualiface.create_head(name, D, C)
    with pytest.raises((ValueError, TypeError), match=message):
        _call(head, torch.randn(B, D), labels)


@pytest.mark.parametrize("name", HEADS)
def test_bad_embeddings_raise_clear_errors(name):
    head = qualiface.create_head(name, D, C)
    labels = torch.randint(0, C, (B,))
    with pytest.raises(ValueError, match="shape"):
        _call(head, torch.randn(B, D + 1), labels)
    bad = torch.randn(B, D)
    bad[2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        _call(head, bad, labels)
    with pytest.raises(ValueError, match="does not take"):
        _call(head, torch.randn(B, D), labels, bogus=torch.zeros(B))


@pytest.mark.parametrize("name", HEADS)
def test_required_aux_inputs_are_checked(name):
    head = qualiface.create_head(name, D, C)
    for key in head.requires:
        aux = _aux(head)
        del aux[key]
        with pytest.raises(ValueError, match=key):
            head(torch.randn(B, D), torch.randint(0, C, (B,)), **aux)


@pytest.mark.parametrize("name", HEADS)
def test_batch_of_one_and_single_class(name):
    head = qualiface.create_head(name, D, 1)
    out = _call(head, torch.randn(1, D), torch.zeros(1, dtype=torch.long))
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize("name", HEADS)
def test_partial_fc_sampling_works_for_every_head(name):
    head = qualiface.create_head(name, D, 50, sample_rate=0.2)
    labels = torch.randint(0, 50, (B,))
    out = _call(head, torch.randn(B, D), labels)
    assert out.class_index is not None
    assert torch.equal(out.class_index[out.labels], labels)
    assert out.logits is None or out.logits.shape == (B, out.class_index.numel())


def test_create_head_overrides_defaults_and_rejects_unknown_names():
    assert qualiface.create_head("arcface", D, C, margin=0.3).margin == 0.3
    with pytest.raises(KeyError, match="arcface"):
        qualiface.create_head("arcfase", D, C)
    with pytest.raises(TypeError):
        qualiface.create_head("arcface", D, C, no_such_argument=1)


class _Synthetic(nn.Module):
    """A linear 'backbone' with the auxiliary branches some heads need."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(16, D)
        self.quality = nn.Linear(D, 1)
        self.scale = nn.Linear(16, 1)

    def forward(self, x):
        emb = self.body(x)
        return emb, {"quality": self.quality(emb).squeeze(1), "scale": 16 + nn.functional.softplus(self.scale(x))[:, 0]}


@pytest.mark.parametrize("name", HEADS)
def test_tiny_training_run_lowers_the_loss(name):
    classes = 4
    images, labels = clustered_data(classes, spread=2.0, noise=0.5, generator=torch.Generator().manual_seed(0))
    model = _Synthetic()
    head = qualiface.create_head(name, D, classes)
    params = list(model.parameters()) + list(head.parameters())
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9)

    def forward():
        emb, aux = model(images)
        return head(emb, labels, **{k: aux[k] for k in head.requires})

    losses = step_losses(fit(forward, optimizer, 60, clip=(params, 5.0)))
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses


def test_hardest_negative_excludes_only_the_target_column():
    from qualiface.heads.base import HeadInputs

    cos = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.7, 0.7], [0.3, 0.8, 0.1], [0.4, 0.4, 0.4]])
    labels = torch.tensor([0, 1, 2, 2])
    target = cos.gather(1, labels.unsqueeze(1)).squeeze(1)
    inputs = HeadInputs(torch.zeros(4, 2), torch.zeros(4, 2), torch.ones(4), cos, labels, target, None, {})
    torch.testing.assert_close(inputs.hardest_negative(), torch.tensor([0.5, 0.7, 0.8, 0.4]))


_HOST_READS = frozenset({"item", "tolist", "__bool__", "__int__", "__float__", "nonzero", "masked_select", "unique"})


class _HostReads(torch.overrides.TorchFunctionMode):
    """Counts the calls that make the host wait for a device (a CUDA synchronisation)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in _HOST_READS:
            self.calls.append(func.__name__)
        return func(*args, **(kwargs or {}))


# UniTSFace reads b (its data-dependent initialisation) and rewrites its memory rows per class at every step
@pytest.mark.parametrize("name", [h for h in HEADS if h != "unitsface"])
def test_a_step_without_input_checks_never_waits_for_the_device(name):
    torch.manual_seed(0)
    checked = qualiface.create_head(name, D, C).train()
    fast = qualiface.create_head(name, D, C, validate_inputs=False).train()
    fast.load_state_dict(checked.state_dict())
    emb = torch.randn(B, D) * 5
    labels = torch.randint(0, C, (B,))
    aux = _aux(checked)
    emb_checked, emb_fast = emb.clone().requires_grad_(), emb.clone().requires_grad_()
    with _HostReads() as with_checks:
        out_checked = checked(emb_checked, labels, **aux)
        out_checked.loss.backward()
    with _HostReads() as without:
        out_fast = fast(emb_fast, labels, **aux)
        out_fast.loss.backward()
    assert with_checks.calls, "the value checks read labels and embeddings on the host"
    assert without.calls == []
    torch.testing.assert_close(out_fast.loss, out_checked.loss, rtol=0, atol=0)
    torch.testing.assert_close(emb_fast.grad, emb_checked.grad, rtol=0, atol=0)


@pytest.mark.parametrize("name", HEADS)
def test_shape_checks_hold_without_the_value_checks(name):
    head = qualiface.create_head(name, D, C, validate_inputs=False)
    with pytest.raises(ValueError, match="embeddings must have shape"):
        _call(head, torch.randn(B, D + 1), torch.randint(0, C, (B,)))


def test_without_checks_a_bad_scale_makes_the_loss_nan_and_input_problem_says_why():
    head = qualiface.create_head("scaleface", D, C, validate_inputs=False)
    emb, labels = torch.randn(B, D), torch.randint(0, C, (B,))
    scale = torch.full((B,), 20.0)
    scale[2] = 0.0
    assert not torch.isfinite(head(emb, labels, scale=scale).loss)
    assert "scale must be positive" in head.input_problem(emb, labels, scale=scale)
    assert head.input_problem(emb, labels, scale=torch.full((B,), 20.0)) is None
    assert "label 99 is outside" in head.input_problem(emb, torch.full((B,), 99), scale=scale)


@pytest.mark.parametrize("name", ["adaface", "unitsface"])
def test_a_non_finite_batch_leaves_the_head_state_as_it_was(name):
    head = qualiface.create_head(name, D, C, validate_inputs=False).train()
    labels = torch.arange(B) % C
    head(torch.randn(B, D) * 5, labels)
    before = {k: v.clone() for k, v in head.state_dict().items() if k != "num_steps"}
    emb = torch.randn(B, D) * 5
    emb[:] = math.nan
    assert not torch.isfinite(head(emb, labels).loss)
    for key, value in before.items():
        torch.testing.assert_close(head.state_dict()[key], value, rtol=0, atol=0, equal_nan=False, msg=key)
