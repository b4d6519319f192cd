"""The CR-FIQA (``qs``) and ScaleFace (``scale_predictor``) branches of the iResNet and IR backbones."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from qualiface import create_backbone, list_backbones
from qualiface.backbones.layers import SCALE_ACTIVATIONS, MLPScaleHead, scale_activation

BRANCHED = list_backbones("iresnet*") + list_backbones("ir_*")

# ScaleFace ``MLPHead(num_feats=(25088, 512, 1), batch_norm=True)`` state dict (docs/formats.md, 'scaleface').
MLP_HEAD_KEYS = {
    "mlp.0.weight": (512, 25088),
    "mlp.1.running_mean": (512,),
    "mlp.1.running_var": (512,),
    "mlp.1.num_batches_tracked": (),
    "mlp.3.weight": (1, 512),
}


def build_meta(name, **kwargs):
    with torch.device("meta"):
        return create_backbone(name, **kwargs)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def images(batch: int = 3, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def branch_state(model: nn.Module, prefix: str) -> dict[str, tuple[int, ...]]:
    return {k[len(prefix) :]: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith(prefix)}


@pytest.mark.parametrize("name", BRANCHED)
def test_cr_fiqa_branch_adds_exactly_qs(name):
    plain, branched = build_meta(name), build_meta(name, quality_branch="cr_fiqa")
    extra = set(branched.state_dict()) - set(plain.state_dict())
    assert extra == {"qs.weight", "qs.bias"}
    assert branch_state(branched, "qs.") == {"weight": (1, 512), "bias": (1,)}
    assert num_params(branched) == num_params(plain) + 513
    assert list(branched.state_dict())[-2:] == ["qs.weight", "qs.bias"]


def test_cr_fiqa_iresnet100_counts_match_official():
    model = build_meta("iresnet100", quality_branch="cr_fiqa", features_weight_trainable=True)
    assert (len(model.state_dict()), num_params(model)) == (927, 65_156_673)
    assert model.features.weight.requires_grad is True


@pytest.mark.parametrize("name", BRANCHED)
def test_scaleface_branch_keys_equal_mlp_head(name):
    plain, branched = build_meta(name), build_meta(name, quality_branch="scaleface")
    extra = set(branched.state_dict()) - set(plain.state_dict())
    assert extra == {f"scale_predictor.{k}" for k in MLP_HEAD_KEYS}
    assert branch_state(branched, "scale_predictor.") == MLP_HEAD_KEYS
    assert num_params(branched) == num_params(plain) + 512 * 25088 + 512


def test_scaleface_bottleneck_follows_input_size():
    model = build_meta("iresnet18", quality_branch="scaleface", input_size=32)
    assert branch_state(model, "scale_predictor.")["mlp.0.weight"] == (512, 512 * 2 * 2)


@pytest.mark.parametrize("name", ["iresnet18", "ir_18"])
def test_no_branch_gives_empty_aux(name):
    model = create_backbone(name, input_size=32).eval()
    with torch.no_grad():
        emb, aux = model.forward_aux(images())
        torch.testing.assert_close(emb, model(images()))
    assert aux == {}
    assert model.quality_branch is None


@pytest.mark.parametrize("name", ["iresnet18", "ir_18"])
def test_cr_fiqa_quality_is_qs_of_the_raw_embedding(name):
    torch.manual_seed(0)
    model = create_backbone(name, input_size=32, quality_branch="cr_fiqa").eval()
    with torch.no_grad():
        emb, aux = model.forward_aux(images())
        torch.testing.assert_close(emb, model(images()))
        expected = emb @ model.qs.weight[0] + model.qs.bias[0]
    assert set(aux) == {"quality"}
    assert aux["quality"].shape == (3,)
    torch.testing.assert_close(aux["quality"], expected)


@pytest.mark.parametrize("name", ["iresnet18", "ir_18"])
def test_cr_fiqa_quality_is_not_detached(name):
    torch.manual_seed(0)
    model = create_backbone(name, input_size=32, quality_branch="cr_fiqa").train()
    _, aux = model.forward_aux(images())
    aux["quality"].pow(2).sum().backward()  # a plain sum is constant under train-mode BatchNorm1d
    assert model.qs.weight.grad is not None
    linear = model.fc if name.startswith("iresnet") else model.output_layer[3]
    assert linear.weight.grad is not None
    assert linear.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["iresnet18", "ir_18"])
def test_scaleface_scale_reads_the_flattened_bn2_output(name):
    torch.manual_seed(0)
    model = create_backbone(name, input_size=32, quality_branch="scaleface").eval()
    final_bn = model.bn2 if name.startswith("iresnet") else model.output_layer[0]
    seen = {}

    def record(key, index):
        def hook(module, inputs, output):  # returns None, so the output is left alone
            seen[key] = (output, *inputs)[index]

        return hook

    final_bn.register_forward_hook(record("bn2", 0))
    model.scale_predictor.register_forward_hook(record("input", 1))
    with torch.no_grad():
        emb, aux = model.forward_aux(images())
        torch.testing.assert_close(emb, model(images()))
    assert seen["input"].dtype == torch.float32
    torch.testing.assert_close(seen["input"], seen["bn2"].flatten(1), rtol=0, atol=0)
    assert set(aux) == {"scale"}
    assert aux["scale"].shape == (3,)
    assert ((aux["scale"] >= 0) & (aux["scale"] <= 32)).all()  # default sigm_mul, c = 32 (saturates at random init)


@pytest.mark.parametrize("name", ["iresnet18", "ir_18"])
@pytest.mark.parametrize("branch", ["cr_fiqa", "scaleface"])
def test_gradients_reach_backbone_and_branch(name, branch):
    torch.manual_seed(0)
    model = create_backbone(name, input_size=32, quality_branch=branch).train()
    emb, aux = model.forward_aux(images())
    (emb.pow(2).sum() + next(iter(aux.values())).sum()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


def test_branched_state_dict_round_trip_strict():
    source = create_backbone("ir_18", input_size=32, quality_branch="scaleface").eval()
    target = create_backbone("ir_18", input_size=32, quality_branch="scaleface").eval()
    target.load_state_dict(source.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(target.forward_aux(images())[1], source.forward_aux(images())[1])


def test_scale_kwargs_pass_through():
    model = build_meta("iresnet18", quality_branch="scaleface", scale_activation="exp", scale_coefficient=64.0)
    assert (model.scale_predictor.activation, model.scale_predictor.coefficient) == ("exp", 64.0)


def test_unknown_quality_branch_is_rejected():
    with pytest.raises(ValueError, match="quality_branch"):
        build_meta("iresnet18", quality_branch="magface")


def test_unknown_scale_activation_is_rejected():
    with pytest.raises(ValueError, match="softplus"):
        build_meta("iresnet18", quality_branch="scaleface", scale_activation="softplus")
    with pytest.raises(ValueError, match="softplus"):
        scale_activation(torch.zeros(1), "softplus", 1.0)


def reference_activation(z: float, activation: str, c: float) -> float:
    """ScaleFace ``MLPHead`` activations written out per element (docs/methods.md, 'ScaleFace')."""
    sigmoid = 1.0 / (1.0 + math.exp(-z))
    return {
        "exp": math.exp(z),
        "sigm": sigmoid,
        "sigm_mul": c * sigmoid,
        "sigm_sum": c + sigmoid,
        "sigm_sum_mul": c + c * sigmoid,
        "relu": c * max(z, 0.0),
        "lin": z,
    }[activation]


def test_all_scaleface_activations_are_implemented():
    assert set(SCALE_ACTIVATIONS) == {"exp", "sigm", "sigm_mul", "sigm_sum", "sigm_sum_mul", "relu", "lin"}


@pytest.mark.parametrize("activation", SCALE_ACTIVATIONS)
@pytest.mark.parametrize("coefficient", [8.0, 32.0])
def test_scale_activation_matches_float64_reference(activation, coefficient):
    z = torch.linspace(-6.0, 6.0, 25, dtype=torch.float64)
    expected = torch.tensor([reference_activation(v, activation, coefficient) for v in z.tolist()], dtype=torch.float64)
    torch.testing.assert_close(scale_activation(z, activation, coefficient), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", SCALE_ACTIVATIONS)
def test_mlp_scale_head_matches_float64_reference(activation):
    torch.manual_seed(0)
    head = MLPScaleHead((40, 16, 1), activation=activation, coefficient=32.0).double().eval()
    x = torch.randn(5, 40, dtype=torch.float64)
    bn = head.mlp[1]
    hidden = ((x @ head.mlp[0].weight.T) - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)
    z = (hidden.clamp_min(0) @ head.mlp[3].weight.T)[:, 0]
    expected = torch.tensor([reference_activation(v, activation, 32.0) for v in z.tolist()], dtype=torch.float64)
    out = head(x)
    assert out.shape == (5, 1)
    torch.testing.assert_close(out[:, 0], expected, rtol=1e-10, atol=1e-10)


def test_mlp_scale_head_layout():
    head = MLPScaleHead()
    assert [type(m) for m in head.mlp] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert head.mlp[0].bias is None
    assert head.mlp[3].bias is None
    assert head.mlp[1].affine is False
    assert branch_state(head, "") == MLP_HEAD_KEYS
