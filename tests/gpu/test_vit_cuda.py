"""arcface_torch's ViT on CUDA: float32 equals the CPU, the official fp16 recipe (autocast + GradScaler) keeps the
attention, the final norm, the patch embedding and the feature head in float32, and gradient checkpointing changes
no gradient."""

from __future__ import annotations

import pytest
import torch

from qualiface import create_backbone
from qualiface.backbones.vit import Attention

pytestmark = pytest.mark.gpu

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 4, "input_size": 36, "embedding_dim": 24}


def images(batch: int, side: int) -> torch.Tensor:
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(("name", "kwargs"), [("vit_t", TINY), ("vit_t", {})])
def test_cuda_float32_equals_cpu(ieee_fp32, name, kwargs):
    model = create_backbone(name, **kwargs).eval()
    x = images(3, model.preprocessing.input_size[1])
    with torch.no_grad():
        want = model(x)
        got = model.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_fp16_autocast_keeps_the_official_float32_parts_in_float32(monkeypatch):
    """The attention product, the final norm, the patch embedding and the feature head, as arcface_torch."""
    seen: list[tuple[torch.dtype, bool]] = []
    original = Attention._attend

    def attend(self, q, k, v):
        seen.append((q.dtype, torch.is_autocast_enabled("cuda")))
        return original(self, q, k, v)

    monkeypatch.setattr(Attention, "_attend", attend)
    model = create_backbone("vit_t").cuda().eval()
    dtypes: dict[str, torch.dtype] = {}
    for name in ("patch_embed", "norm", "feature"):
        getattr(model, name).register_forward_hook(lambda m, args, out, name=name: dtypes.__setitem__(name, out.dtype))
    x = images(2, 112).cuda()
    with torch.no_grad():
        want = model(x)
        seen.clear()
        with torch.autocast("cuda", dtype=torch.float16):
            got = model(x)
    assert seen == [(torch.float32, False)] * 12
    assert dtypes == {"patch_embed": torch.float32, "norm": torch.float32, "feature": torch.float32}
    assert torch.isfinite(got).all()
    assert (got.float() - want).abs().max() < 0.02 * want.abs().max()


def test_fp16_training_step_with_checkpointing_gives_the_same_gradients():
    """vit_b's recipe in small: masking, drop path, checkpointing, autocast fp16 and a GradScaler as train_v2.py."""
    grads = []
    for using_checkpoint in (False, True):
        torch.manual_seed(0)
        model = create_backbone("vit_b_dp005_mask_005", **TINY, using_checkpoint=using_checkpoint).cuda().train()
        scaler = torch.amp.GradScaler("cuda", growth_interval=100)
        torch.manual_seed(5)  # the same masks and drop-path draws (checkpointing replays the RNG state)
        with torch.autocast("cuda", dtype=torch.float16):
            loss = model(images(8, 36).cuda()).float().pow(2).mean()
        scaler.scale(loss).backward()
        scaler.unscale_(torch.optim.SGD(model.parameters(), lr=0.0))
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]).cpu())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-3, atol=1e-5)
