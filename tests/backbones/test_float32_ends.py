"""Under autocast, iResNet's ``fc`` and ``features`` run in float32 as arcface_torch's (``fc(x.float())`` outside
its autocast region); ``float32_ends=False`` lets autocast cover them."""

from __future__ import annotations

import pytest
import torch

import qualiface


@pytest.mark.parametrize("float32_ends", [True, False])
def test_iresnet_fc_and_features_stay_float32_under_autocast(float32_ends: bool) -> None:
    torch.manual_seed(0)
    model = qualiface.create_backbone("iresnet18", input_size=32, embedding_dim=64, float32_ends=float32_ends).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bottleneck = model.forward_bottleneck(images)
        embedding = model.embed(bottleneck)
    assert bottleneck.dtype == torch.bfloat16  # the convolutions run in bf16 either way
    if float32_ends:
        assert embedding.dtype == torch.float32
        # float64 reference of fc + BatchNorm1d (eval) on the same bf16 bottleneck
        x = bottleneck.double()
        fc = x @ model.fc.weight.double().T + model.fc.bias.double()
        bn = model.features
        want = (fc - bn.running_mean.double()) / torch.sqrt(bn.running_var.double() + bn.eps)
        want = want * bn.weight.double() + bn.bias.double()
        # float32 over a 512-wide product: relative error ~1e-5 of the largest value; a bf16 fc gives ~4e-3
        scale = want.abs().max().item()
        torch.testing.assert_close(embedding.double(), want, rtol=0, atol=2e-4 * scale)
    else:
        assert embedding.dtype == torch.bfloat16
