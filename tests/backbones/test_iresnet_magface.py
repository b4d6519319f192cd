"""MagFace's iResNet as options of the iResNet family (``IrvingMeng/MagFace: models/iresnet.py``): channel dropout
``Dropout2d(p=0.4)`` on the ``bn2`` map before the flatten, BatchNorm ``eps=2e-5, momentum=0.9``, a trainable
``features`` weight, Kaiming fan-out convolutions, and arcface_torch's (= MagFace's) state-dict keys."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from _helpers import official_checkpoints as oc
from qualiface import create_backbone
from qualiface.backbones.iresnet import MAGFACE_OPTIONS
from qualiface.models import load_model

SIDE = 32  # a 2x2 map after the four stride-2 stages: channel and element dropout differ


def magface(name: str = "iresnet18", **kwargs) -> nn.Module:
    return create_backbone(name, input_size=SIDE, **{**MAGFACE_OPTIONS, **kwargs})


def images(batch: int = 6, seed: int = 3) -> Tensor:
    return torch.randn(batch, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))


def bn2_output(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """The ``bn2`` map and the bottleneck (what ``fc`` reads) of one forward pass."""
    seen: list[Tensor] = []
    handle = model.bn2.register_forward_hook(lambda _m, _i, out: seen.append(out.detach().clone()))
    try:
        bottleneck = model.forward_bottleneck(x)
    finally:
        handle.remove()
    return seen[0], bottleneck.detach()


def test_options_are_magfaces():
    assert MAGFACE_OPTIONS == {
        "dropout": 0.4,
        "dropout_kind": "channel",
        "bn_eps": 2e-5,
        "bn_momentum": 0.9,
        "features_weight_trainable": True,
        "conv_init": "kaiming",
    }


def test_channel_dropout_zeroes_whole_channels_in_training():
    torch.manual_seed(0)
    model = magface().train()
    assert isinstance(model.dropout, nn.Dropout2d)
    assert model.dropout.p == 0.4
    bn2, bottleneck = bn2_output(model, images())
    out = bottleneck.view_as(bn2)  # flatten(1) of the (N, 512, 2, 2) map
    zero = (out == 0).flatten(2)
    whole = zero.all(-1)
    assert torch.equal(zero.any(-1), whole), "a channel is partly zeroed: element dropout, not Dropout2d"
    assert 0.3 < whole.float().mean().item() < 0.5  # p = 0.4 of the 6 x 512 channels
    kept = ~whole
    # the kept channels are the bn2 map scaled by 1 / (1 - p), dropout after bn2 and before the flatten
    torch.testing.assert_close(out[kept], bn2[kept] / 0.6, rtol=1e-6, atol=1e-6)


def test_element_dropout_is_unchanged_and_differs():
    torch.manual_seed(0)
    model = create_backbone("iresnet18", input_size=SIDE, dropout=0.4).train()
    assert type(model.dropout) is nn.Dropout
    bn2, bottleneck = bn2_output(model, images())
    zero = (bottleneck.view_as(bn2) == 0).flatten(2)
    assert bool((zero.any(-1) & ~zero.all(-1)).any()), "element dropout should zero single positions"


def test_dropout_is_off_in_eval():
    model = magface().eval()
    bn2, bottleneck = bn2_output(model, images())
    torch.testing.assert_close(bottleneck, bn2.flatten(1), rtol=0, atol=0)


def test_batchnorm_eps_momentum_and_trainable_features():
    model = magface()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(norms) > 20
    assert {(m.eps, m.momentum) for m in norms} == {(2e-5, 0.9)}
    assert model.features.weight.requires_grad is True
    plain = create_backbone("iresnet18", input_size=SIDE)
    assert plain.features.weight.requires_grad is False
    assert {(m.eps, m.momentum) for m in plain.modules() if isinstance(m, nn.BatchNorm2d)} == {(1e-5, 0.1)}


def test_kaiming_fan_out_convolutions():
    torch.manual_seed(0)
    conv = magface().layer4[1].conv1  # 512 -> 512, 3x3: fan-out 512 * 9
    want = math.sqrt(2.0 / (512 * 9))
    assert abs(conv.weight.std().item() / want - 1) < 0.02
    plain = create_backbone("iresnet18", input_size=SIDE).layer4[1].conv1
    assert abs(plain.weight.std().item() / 0.1 - 1) < 0.02


@pytest.mark.parametrize(("key", "value"), [("dropout_kind", "spatial"), ("conv_init", "xavier")])
def test_unknown_option_values_are_one_line_errors(key, value):
    with pytest.raises(ValueError, match=rf"^{key} must be .*{value!r}$"):
        create_backbone("iresnet18", input_size=SIDE, **{key: value})


# ------------------------------------------------------------------ float64 reference, written from the equations


def _bn(x: Tensor, sd: dict[str, Tensor], prefix: str, eps: float) -> Tensor:
    """Eval BatchNorm: ``(x − μ) / sqrt(σ² + eps) · γ + β`` over the channel axis 1."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean, var = sd[prefix + "running_mean"].view(shape), sd[prefix + "running_var"].view(shape)
    return (x - mean) / torch.sqrt(var + eps) * sd[prefix + "weight"].view(shape) + sd[prefix + "bias"].view(shape)


def _prelu(x: Tensor, slope: Tensor) -> Tensor:
    a = slope.view(1, -1, 1, 1)
    return torch.where(x > 0, x, a * x)


def reference_forward(sd: dict[str, Tensor], x: Tensor, eps: float = 2e-5) -> Tensor:
    """MagFace's iResNet in eval mode: stem ``prelu(bn1(conv3x3(x)))``; per block
    ``bn3(conv2(prelu(bn2(conv1(bn1(x)))))) + shortcut`` (``conv2`` carries the stride, the shortcut is
    ``bn(conv1x1_stride(x))`` where a downsample exists); ``bn2``, Dropout2d (identity), flatten, ``fc``,
    ``features`` (BatchNorm1d)."""
    sd = {k: v.double() for k, v in sd.items() if v.is_floating_point()}
    h = _prelu(_bn(F.conv2d(x, sd["conv1.weight"], padding=1), sd, "bn1.", eps), sd["prelu.weight"])
    for stage in range(1, 5):
        block = 0
        while f"layer{stage}.{block}.conv1.weight" in sd:
            p = f"layer{stage}.{block}."
            stride = 2 if block == 0 else 1
            out = _bn(h, sd, p + "bn1.", eps)
            out = F.conv2d(out, sd[p + "conv1.weight"], padding=1)
            out = _prelu(_bn(out, sd, p + "bn2.", eps), sd[p + "prelu.weight"])
            out = _bn(F.conv2d(out, sd[p + "conv2.weight"], stride=stride, padding=1), sd, p + "bn3.", eps)
            if p + "downsample.0.weight" in sd:
                short = _bn(F.conv2d(h, sd[p + "downsample.0.weight"], stride=stride), sd, p + "downsample.1.", eps)
            else:
                short = h
            h = out + short
            block += 1
    h = _bn(h, sd, "bn2.", eps).flatten(1)
    h = h @ sd["fc.weight"].T + sd["fc.bias"]
    return _bn(h, sd, "features.", eps)


def test_eval_forward_equals_float64_reference():
    model = oc.make_backbone("iresnet18", SIDE, **MAGFACE_OPTIONS)  # random affine params, calibrated BN
    with torch.no_grad():  # small variances, where eps 2e-5 and 1e-5 give different outputs
        model.bn2.running_var.mul_(1e-4)
    x = images(4).double()
    want = reference_forward(model.state_dict(), x)
    got = model.eval()(x.float()).double()
    torch.testing.assert_close(got, want, rtol=2e-4, atol=2e-4 * want.abs().max().item())
    other_eps = reference_forward(model.state_dict(), x, eps=1e-5)
    assert (other_eps - want).abs().max() > 10 * (got - want).abs().max()


# ------------------------------------------------------------------------------------------ checkpoint key layout


def magface_iresnet18_keys() -> set[str]:
    """The state-dict keys of MagFace's ``iresnet18`` (``models/iresnet.py``), listed from its modules: stem
    ``conv1``/``bn1``/``prelu``; blocks ``bn1, conv1, bn2, prelu, conv2, bn3`` and ``downsample.{0,1}`` in each
    stage's first block (every stage changes stride); ``bn2``; ``dropout`` (no parameters); ``fc``; ``features``."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight", "prelu.weight", "fc.weight", "fc.bias"}
    keys |= {f"{m}.{b}" for m in ("bn1", "bn2", "features") for b in bn}
    for stage in range(1, 5):
        for block in range(2):
            p = f"layer{stage}.{block}."
            keys |= {p + "conv1.weight", p + "conv2.weight", p + "prelu.weight"}
            keys |= {f"{p}{m}.{b}" for m in ("bn1", "bn2", "bn3") for b in bn}
            if block == 0:
                keys |= {p + "downsample.0.weight"} | {f"{p}downsample.1.{b}" for b in bn}
    return keys


def test_keys_are_magfaces_and_arcface_torchs():
    variant = magface()
    assert set(variant.state_dict()) == magface_iresnet18_keys()
    assert list(variant.state_dict()) == list(create_backbone("iresnet18", input_size=SIDE).state_dict())


@pytest.mark.parametrize("ddp", [False, True], ids=["dataparallel", "ddp"])
def test_magface_checkpoint_of_the_variant_loads_strict(tmp_path, ddp):
    source = oc.make_backbone("iresnet18", SIDE, **MAGFACE_OPTIONS)
    path = oc.save_magface(source, tmp_path / "00025.pth", ddp=ddp)
    model = load_model(path)  # strict: a missing or extra key is an error
    assert model.source_format == "magface"
    loaded = model.module.state_dict()
    assert set(loaded) == set(source.state_dict())
    for key, value in source.state_dict().items():
        assert torch.equal(loaded[key], value), key
    rgb = np.random.default_rng(0).integers(0, 256, (2, SIDE, SIDE, 3), dtype=np.uint8)
    with torch.no_grad():
        want = source.eval()(oc.reference_input(rgb, "BGR", 0.0, 1.0)).numpy()
    np.testing.assert_array_equal(model.embed(rgb), want)
