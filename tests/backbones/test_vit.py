"""arcface_torch's Vision Transformers (``recognition/arcface_torch/backbones/vit.py`` and ``get_model`` in
``backbones/__init__.py``): the state-dict layout of every name, equality with a float64 re-implementation written
here from the equations, masking and drop path, quality branches, ONNX export."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from qualiface import create_backbone, list_backbones
from qualiface.backbones.layers import MLPScaleHead
from qualiface.backbones.vit import Attention, VisionTransformer, drop_path

# get_model (arcface_torch backbones/__init__.py): every ViT is img_size 112, patch_size 9, 8 heads, mlp_ratio 4,
# qkv_bias False, norm_layer "ln", num_classes = num_features = 512. name -> (embed_dim, depth, drop_path_rate,
# mask_ratio, using_checkpoint).
OFFICIAL = {
    "vit_t": (256, 12, 0.1, 0.1, False),
    "vit_t_dp005_mask0": (256, 12, 0.05, 0.0, False),
    "vit_s": (512, 12, 0.1, 0.1, False),
    "vit_s_dp005_mask_0": (512, 12, 0.05, 0.0, False),
    "vit_b": (512, 24, 0.1, 0.1, True),
    "vit_b_dp005_mask_005": (512, 24, 0.05, 0.05, True),
    "vit_l_dp005_mask_005": (768, 24, 0.05, 0.05, True),
    "vit_h": (1024, 48, 0.1, 0.0, True),
}
HEADS = 8
PATCH = 9
TOKENS = (112 // PATCH) ** 2  # PatchEmbed.num_patches = 144
BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# A small configuration of the same class (4 x 4 = 16 tokens) for the checks that run many forwards.
TINY = {"embed_dim": 32, "depth": 2, "num_heads": 4, "input_size": 36, "embedding_dim": 24}


def official_layout(embed_dim: int, depth: int, tokens: int = TOKENS, out: int = 512) -> dict[str, tuple[int, ...]]:
    """Every key of VisionTransformer(norm_layer="ln").state_dict() and its shape, from the official module: the
    parameters pos_embed (1, N, d) and mask_token (1, 1, d); PatchEmbed.proj = Conv2d(3, d, 9, 9); per Block
    norm1 / norm2 = LayerNorm(d), attn.qkv = Linear(d, 3d, bias=False), attn.proj = Linear(d, d),
    mlp.fc1 = Linear(d, 4d), mlp.fc2 = Linear(4d, d) (DropPath and Dropout have no keys); norm = LayerNorm(d);
    feature = Sequential(Linear(N d, d, bias=False), BatchNorm1d(d), Linear(d, out, bias=False), BatchNorm1d(out))."""
    d = embed_dim
    layout: dict[str, tuple[int, ...]] = {
        "pos_embed": (1, tokens, d),
        "mask_token": (1, 1, d),
        "patch_embed.proj.weight": (d, 3, PATCH, PATCH),
        "patch_embed.proj.bias": (d,),
    }
    for i in range(depth):
        block = {
            "norm1.weight": (d,),
            "norm1.bias": (d,),
            "attn.qkv.weight": (3 * d, d),
            "attn.proj.weight": (d, d),
            "attn.proj.bias": (d,),
            "norm2.weight": (d,),
            "norm2.bias": (d,),
            "mlp.fc1.weight": (4 * d, d),
            "mlp.fc1.bias": (4 * d,),
            "mlp.fc2.weight": (d, 4 * d),
            "mlp.fc2.bias": (d,),
        }
        layout.update({f"blocks.{i}.{k}": v for k, v in block.items()})
    layout.update({"norm.weight": (d,), "norm.bias": (d,), "feature.0.weight": (d, tokens * d)})
    layout.update({f"feature.1.{k}": () if k == "num_batches_tracked" else (d,) for k in BN_KEYS})
    layout["feature.2.weight"] = (out, d)
    layout.update({f"feature.3.{k}": () if k == "num_batches_tracked" else (out,) for k in BN_KEYS})
    return layout


def build_meta(name: str, **kwargs) -> VisionTransformer:
    with torch.device("meta"):
        model = create_backbone(name, **kwargs)
    assert isinstance(model, VisionTransformer)
    return model


def random_state(layout: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, Tensor]:
    """Random float64 weights for ``layout``: matrices ~ N(0, 1/fan_in), ``qkv`` and ``fc1`` larger (attention far
    from uniform, many MLP activations past ReLU6's 6), norm weights around 1, biases and running means around 0,
    running variances in [0.5, 2]."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, Tensor] = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen, dtype=torch.float64) * 1.5 + 0.5
        elif len(shape) == 1 and key.endswith("weight"):
            state[key] = 1.0 + 0.2 * torch.randn(shape, generator=gen, dtype=torch.float64)
        elif len(shape) == 1:
            state[key] = 0.2 * torch.randn(shape, generator=gen, dtype=torch.float64)
        else:
            fan_in = math.prod(shape[1:]) if key.endswith(".weight") else shape[-1]
            scale = 2.0 if key.endswith("attn.qkv.weight") else 4.0 if key.endswith("mlp.fc1.weight") else 1.0
            state[key] = scale * torch.randn(shape, generator=gen).double() / math.sqrt(fan_in)
    return state


# ---- the independent float64 reference, from the equations ----


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    mean = x.sum(-1, keepdim=True) / x.shape[-1]
    var = ((x - mean) ** 2).sum(-1, keepdim=True) / x.shape[-1]
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def batch_norm_eval(x: Tensor, state: dict[str, Tensor], prefix: str, eps: float = 2e-5) -> Tensor:
    mean, var = state[prefix + "running_mean"], state[prefix + "running_var"]
    return (x - mean) / torch.sqrt(var + eps) * state[prefix + "weight"] + state[prefix + "bias"]


def softmax(scores: Tensor) -> Tensor:
    e = torch.exp(scores - scores.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def reference_tokens(state: dict[str, Tensor], tokens: Tensor, depth: int, heads: int) -> Tensor:
    """The blocks and the final LayerNorm on ``tokens`` (B, N, d): pre-norm attention and ReLU6 MLP residuals."""
    d = tokens.shape[-1]
    hd = d // heads
    t = tokens
    for i in range(depth):
        p = f"blocks.{i}."
        h = layer_norm(t, state[p + "norm1.weight"], state[p + "norm1.bias"])
        qkv = h @ state[p + "attn.qkv.weight"].T
        q, k, v = qkv[..., :d], qkv[..., d : 2 * d], qkv[..., 2 * d :]
        heads_out = []
        for j in range(heads):
            cols = slice(j * hd, (j + 1) * hd)
            weights = softmax(q[..., cols] @ k[..., cols].transpose(-1, -2) / math.sqrt(hd))
            heads_out.append(weights @ v[..., cols])
        t = t + torch.cat(heads_out, dim=-1) @ state[p + "attn.proj.weight"].T + state[p + "attn.proj.bias"]
        h = layer_norm(t, state[p + "norm2.weight"], state[p + "norm2.bias"])
        hidden = torch.clamp(h @ state[p + "mlp.fc1.weight"].T + state[p + "mlp.fc1.bias"], 0.0, 6.0)
        t = t + hidden @ state[p + "mlp.fc2.weight"].T + state[p + "mlp.fc2.bias"]
    return layer_norm(t, state["norm.weight"], state["norm.bias"])


def reference_patches(state: dict[str, Tensor], images: Tensor) -> Tensor:
    """Each 9x9 patch (row-major grid, pixels past the last whole patch unused) times the projection, + pos_embed."""
    weight = state["patch_embed.proj.weight"]
    d, _, p, _ = weight.shape
    b, _, side, _ = images.shape
    g = side // p
    patches = images[:, :, : g * p, : g * p].reshape(b, 3, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(b, g * g, -1)
    return patches @ weight.reshape(d, -1).T + state["patch_embed.proj.bias"] + state["pos_embed"][0]


def reference_embed(state: dict[str, Tensor], normed: Tensor) -> Tensor:
    f = normed.reshape(normed.shape[0], -1) @ state["feature.0.weight"].T
    f = batch_norm_eval(f, state, "feature.1.")
    return batch_norm_eval(f @ state["feature.2.weight"].T, state, "feature.3.")


def reference_forward(state: dict[str, Tensor], images: Tensor, depth: int, heads: int) -> Tensor:
    return reference_embed(state, reference_tokens(state, reference_patches(state, images), depth, heads))


def images(batch: int = 2, side: int = 112, seed: int = 1, dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def loaded(name: str, state: dict[str, Tensor], **kwargs) -> VisionTransformer:
    """``name`` built on the meta device (no init cost) with ``state`` loaded strictly (assigned), in eval mode."""
    model = build_meta(name, **kwargs).eval()
    result = model.load_state_dict(state, strict=True, assign=True)
    assert (result.missing_keys, result.unexpected_keys) == ([], [])
    return model


# ---- (a) layout and hyper-parameters of every name ----


def test_every_official_name_is_registered():
    assert list_backbones("vit*") == sorted(OFFICIAL)


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_state_dict_keys_and_shapes_equal_the_official_layout(name):
    embed_dim, depth, *_ = OFFICIAL[name]
    state = build_meta(name).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == official_layout(embed_dim, depth)


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_hyper_parameters_follow_get_model(name):
    embed_dim, depth, rate, mask_ratio, using_checkpoint = OFFICIAL[name]
    model = build_meta(name)
    assert (model.embed_dim, len(model.blocks), model.num_patches) == (embed_dim, depth, TOKENS)
    assert model.mask_ratio == mask_ratio
    assert model.using_checkpoint is using_checkpoint
    assert all(block.attn.num_heads == HEADS for block in model.blocks)
    assert all(block.attn.qkv.bias is None for block in model.blocks)
    # dpr = torch.linspace(0, drop_path_rate, depth); a zero rate is nn.Identity
    rates = [getattr(block.drop_path, "rate", 0.0) for block in model.blocks]
    expected = [rate * i / (depth - 1) for i in range(depth)]
    assert rates == pytest.approx(expected, abs=1e-7)
    assert isinstance(model.blocks[0].drop_path, nn.Identity)
    assert model.feature[1].eps == model.feature[3].eps == 2e-5
    assert isinstance(model.blocks[0].mlp.act, nn.ReLU6)


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_parameter_count_follows_the_layout(name):
    embed_dim, depth, *_ = OFFICIAL[name]
    d = embed_dim
    blocks = depth * (12 * d * d + 10 * d)
    expected = TOKENS * d + d + 3 * 81 * d + d + blocks + 2 * d + TOKENS * d * d + 2 * d + 512 * d + 2 * 512
    assert sum(p.numel() for p in build_meta(name).parameters()) == expected


def test_preprocessing_is_arcface_torch():
    model = build_meta("vit_t")
    pre = model.preprocessing
    assert (pre.channel_order, pre.mean, pre.std, pre.input_size) == ("RGB", (0.5,) * 3, (0.5,) * 3, (3, 112, 112))
    assert model.bottleneck_dim == TOKENS * 256


# ---- (b), (c) float64 equality with the reference on an official-layout state dict ----


def test_vit_t_equals_the_reference_on_a_strictly_loaded_official_state_dict():
    state = random_state(official_layout(256, 12))
    model = loaded("vit_t", state)
    x = images(batch=1)
    with torch.no_grad():
        got = model(x)
    want = reference_forward(state, x, depth=12, heads=HEADS)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    assert want.std() > 0.1  # not a degenerate comparison


@pytest.mark.parametrize("heads", [1, 4])
def test_tiny_configuration_equals_the_reference(heads):
    layout = official_layout(32, 2, tokens=16, out=24)
    state = random_state(layout, seed=heads)
    model = loaded("vit_t", state, **{**TINY, "num_heads": heads})
    x = images(batch=3, side=36)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_forward(state, x, depth=2, heads=heads), rtol=1e-10, atol=1e-10)


def test_pixels_past_the_last_whole_patch_are_not_read():
    model = create_backbone("vit_t", **{**TINY, "input_size": 40}).eval()  # 4 x 9 = 36: 4 unread rows / columns
    x = images(side=40, dtype=torch.float32)
    y = x.clone()
    y[:, :, 36:, :] = 5.0
    y[:, :, :, 36:] = -5.0
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(y), rtol=0, atol=0)


def test_strict_load_refuses_a_missing_or_extra_key():
    state = random_state(official_layout(32, 2, tokens=16, out=24))
    model = create_backbone("vit_t", **TINY).double()
    extra = {**state, "cls_token": torch.zeros(1, 1, 32, dtype=torch.float64)}
    with pytest.raises(RuntimeError, match="cls_token"):
        model.load_state_dict(extra, strict=True)
    missing = {k: v for k, v in state.items() if k != "mask_token"}
    with pytest.raises(RuntimeError, match="mask_token"):
        model.load_state_dict(missing, strict=True)


def test_fp16_like_inputs_keep_the_attention_in_float32():
    """bf16 parameters (what autocast hands the attention): the result stays close to float32 and finite."""
    model = create_backbone("vit_t", **TINY).eval()
    x = images(side=36, dtype=torch.float32)
    with torch.no_grad():
        want = model(x)
        got = model.to(torch.bfloat16)(x.to(torch.bfloat16)).float()
    assert torch.isfinite(got).all()
    assert (got - want).abs().max() < 0.1 * want.abs().max()


def spy_attention(monkeypatch) -> list[tuple[torch.dtype, bool]]:
    """Record (dtype of q, autocast on?) at every attention product."""
    seen: list[tuple[torch.dtype, bool]] = []
    original = Attention._attend

    def attend(self, q, k, v):
        seen.append((q.dtype, torch.is_autocast_enabled(q.device.type)))
        return original(self, q, k, v)

    monkeypatch.setattr(Attention, "_attend", attend)
    return seen


def output_dtypes(model: VisionTransformer) -> dict[str, list[torch.dtype]]:
    """The output dtypes of the patch embedding, the first qkv projection, the final norm and the feature head."""
    seen: dict[str, list[torch.dtype]] = {}
    modules = {
        "patches": model.patch_embed,
        "qkv": model.blocks[0].attn.qkv,
        "norm": model.norm,
        "feature": model.feature,
    }
    for name, module in modules.items():
        module.register_forward_hook(lambda m, args, out, name=name: seen.setdefault(name, []).append(out.dtype))
    return seen


def test_under_autocast_the_official_float32_parts_stay_float32(monkeypatch):
    """arcface_torch autocasts only qkv, proj and the MLP: softmax(q kᵀ) v runs in float32 with autocast off, the
    final norm on x.float(), and the patch embedding and the feature head outside every autocast region."""
    attention = spy_attention(monkeypatch)
    model = create_backbone("vit_t", **TINY).eval()
    x = images(side=36, dtype=torch.float32)
    with torch.no_grad():
        want = model(x)
        attention.clear()
        dtypes = output_dtypes(model)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(x)
    assert attention == [(torch.float32, False)] * 2
    assert dtypes == {
        "patches": [torch.float32],
        "qkv": [torch.bfloat16],  # the projections do run in bf16
        "norm": [torch.float32],
        "feature": [torch.float32],
    }
    assert got.dtype == torch.float32
    assert (got - want).abs().max() < 0.05 * want.abs().max()


def test_float32_ends_off_lets_autocast_cover_the_patches_and_the_head():
    model = create_backbone("vit_t", **TINY, float32_ends=False).eval()
    dtypes = output_dtypes(model)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(images(side=36, dtype=torch.float32))
    assert dtypes["patches"] == [torch.bfloat16]
    assert dtypes["norm"] == [torch.float32]
    assert got.dtype == torch.bfloat16


# ---- (d) masking and drop path ----


def masked_rows(model: VisionTransformer, bottleneck: Tensor) -> Tensor:
    """Per sample, which token rows equal the mask token exactly."""
    rows = bottleneck.reshape(bottleneck.shape[0], model.num_patches, model.embed_dim)
    return (rows == model.mask_token.reshape(1, 1, -1)).all(dim=-1)


@pytest.mark.parametrize(
    ("name", "masking", "expected"),
    [
        ("vit_t", "official", 144 - 129),  # int(144 * 0.9)
        ("vit_b_dp005_mask_005", "official", 144 - 129),  # the official code ignores 0.05 and masks 10%
        ("vit_b_dp005_mask_005", "mask_ratio", 144 - 136),  # int(144 * 0.95)
        ("vit_t_dp005_mask0", "official", 0),
        ("vit_h", "mask_ratio", 0),
    ],
)
def test_training_masks_the_official_number_of_tokens(name, masking, expected):
    model = create_backbone(name, embed_dim=16, depth=1, num_heads=2, drop_path_rate=0.0, masking=masking).train()
    with torch.no_grad():
        rows = masked_rows(model, model.forward_bottleneck(images(batch=3, dtype=torch.float32)))
    assert rows.sum(dim=1).tolist() == [expected] * 3
    if expected:
        assert not torch.equal(rows[0], rows[1])  # chosen per sample


def test_masked_tokens_are_left_out_of_the_attention():
    """Training mode: the kept tokens equal the reference transformer run on those tokens alone."""
    torch.manual_seed(3)
    state = random_state(official_layout(16, 2, tokens=TOKENS, out=24))
    model = loaded("vit_t", state, embed_dim=16, depth=2, num_heads=2, embedding_dim=24, drop_path_rate=0.0).train()
    x = images(batch=2)
    with torch.no_grad():
        bottleneck = model.forward_bottleneck(x).reshape(2, TOKENS, 16)
    masked = masked_rows(model, bottleneck.reshape(2, -1))
    tokens = reference_patches(state, x)
    for i in range(2):
        kept = ~masked[i]
        assert int(kept.sum()) == 129
        want = reference_tokens(state, tokens[i : i + 1, kept], depth=2, heads=2)[0]
        torch.testing.assert_close(bottleneck[i, kept], want, rtol=1e-9, atol=1e-9)


def test_eval_mode_is_deterministic_and_unmasked():
    model = create_backbone("vit_t", **{**TINY, "drop_path_rate": 0.5}).eval()
    x = images(side=36, dtype=torch.float32)
    with torch.no_grad():
        first, second = model.forward_bottleneck(x), model.forward_bottleneck(x)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert not masked_rows(model, first).any()


def test_drop_path_is_off_in_eval_and_on_in_training():
    state = random_state(official_layout(32, 2, tokens=16, out=24))
    model = loaded("vit_t_dp005_mask0", state, **{**TINY, "drop_path_rate": 0.5})
    x = images(batch=8, side=36)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_forward(state, x, depth=2, heads=4), rtol=1e-9, atol=1e-9)
        model.train()
        a, b = model.forward_bottleneck(x), model.forward_bottleneck(x)
    assert not torch.equal(a, b)


def test_drop_path_zeroes_whole_samples_and_rescales_the_rest():
    x = torch.ones(2000, 3, 4)
    out = drop_path(x, 0.25, training=True)
    per_sample = out.reshape(2000, -1)
    assert torch.all((per_sample == 0).all(dim=1) | (per_sample == 1 / 0.75).all(dim=1))
    assert abs((per_sample[:, 0] == 0).float().mean().item() - 0.25) < 0.05
    assert torch.equal(drop_path(x, 0.25, training=False), x)


def test_mask_token_trains_only_with_masking():
    assert build_meta("vit_t").mask_token.requires_grad
    assert not build_meta("vit_t_dp005_mask0").mask_token.requires_grad
    model = create_backbone("vit_t", **TINY).train()
    model(images(side=36, dtype=torch.float32)).pow(2).sum().backward()
    assert model.mask_token.grad is not None
    assert all(p.grad is not None for p in model.parameters())


def test_checkpointing_keeps_keys_and_gradients():
    plain = create_backbone("vit_t", **TINY)
    ckpt = create_backbone("vit_t", **TINY, using_checkpoint=True)
    assert list(plain.state_dict()) == list(ckpt.state_dict())
    ckpt.load_state_dict(plain.state_dict())
    x = images(side=36, dtype=torch.float32)
    grads = []
    for model in (plain, ckpt):
        torch.manual_seed(5)  # the same masks and drop-path draws
        model.train()(x).pow(2).sum().backward()
        grads.append(model.blocks[0].attn.qkv.weight.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_heads": 3}, "num_heads"),
        ({"mask_ratio": 1.0}, "mask_ratio"),
        ({"drop_path_rate": -0.1}, "drop_path_rate"),
        ({"masking": "half"}, "masking"),
        ({"input_size": 8}, "input_size"),
        ({"depth": 0}, "depth"),
    ],
)
def test_bad_arguments_are_one_line_errors_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field) as info:
        build_meta("vit_t", **kwargs)
    assert "\n" not in str(info.value)


def test_wrong_input_size_is_refused():
    model = create_backbone("vit_t", **TINY).eval()
    with pytest.raises(ValueError, match="36x36"):
        model(torch.zeros(1, 3, 112, 112))


# ---- (e) quality branches ----


def test_cr_fiqa_branch_reads_the_embedding():
    plain, branched = build_meta("vit_t"), build_meta("vit_t", quality_branch="cr_fiqa")
    extra = {k: tuple(v.shape) for k, v in branched.state_dict().items() if k not in plain.state_dict()}
    assert extra == {"qs.weight": (1, 512), "qs.bias": (1,)}
    assert list(branched.state_dict())[-2:] == ["qs.weight", "qs.bias"]
    model = create_backbone("vit_t", **TINY, quality_branch="cr_fiqa").eval()
    x = images(batch=3, side=36, dtype=torch.float32)
    with torch.no_grad():
        emb, aux = model.forward_aux(x)
        torch.testing.assert_close(emb, model(x))
        torch.testing.assert_close(aux["quality"], emb @ model.qs.weight[0] + model.qs.bias[0])
    assert aux["quality"].shape == (3,)


def test_scaleface_branch_reads_the_flattened_tokens():
    branched = build_meta("vit_t", quality_branch="scaleface")
    assert tuple(branched.state_dict()["scale_predictor.mlp.0.weight"].shape) == (512, TOKENS * 256)
    model = create_backbone("vit_t", **TINY, quality_branch="scaleface", scale_coefficient=16.0).eval()
    assert isinstance(model.scale_predictor, MLPScaleHead)
    x = images(batch=3, side=36, dtype=torch.float32)
    with torch.no_grad():
        emb, aux = model.forward_aux(x)
        bottleneck = model.forward_bottleneck(x)
        mlp = model.scale_predictor.mlp
        want = 16.0 * torch.sigmoid(mlp[3](mlp[2](mlp[1](mlp[0](bottleneck))))).squeeze(1)
    assert bottleneck.shape == (3, 16 * 32)
    torch.testing.assert_close(aux["scale"], want)
    assert torch.all((aux["scale"] > 0) & (aux["scale"] < 16.0))
    torch.testing.assert_close(emb, model(x))


# ---- (f) export ----


def check_onnx_round_trip(backbone: VisionTransformer, path) -> None:
    """Export through the project's path, reload with onnxruntime, compare embeddings and quality on a batch of 3."""
    pytest.importorskip("onnxruntime", reason="the export check needs onnxruntime (pip install .[onnx])")
    from qualiface.models import export_onnx, load_model

    model = load_model(export_onnx(backbone, path))
    assert model.preprocessing == backbone.preprocessing
    side = backbone.preprocessing.input_size[1]
    x = np.random.default_rng(0).standard_normal((3, 3, side, side)).astype(np.float32)
    with torch.no_grad():
        want, aux = backbone.forward_aux(torch.from_numpy(x))
    got, quality = model.forward_array(x)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=0)
    assert quality is not None
    np.testing.assert_allclose(quality, next(iter(aux.values())).numpy(), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("branch", ["cr_fiqa", "scaleface"])
def test_onnx_export_of_a_small_vit_matches_torch(tmp_path, branch):
    check_onnx_round_trip(create_backbone("vit_t", **TINY, quality_branch=branch).eval(), tmp_path / "vit.onnx")


@pytest.mark.slow  # 12-20 s on a shared 2-core machine
def test_onnx_export_of_vit_t_matches_torch(tmp_path):
    check_onnx_round_trip(create_backbone("vit_t", quality_branch="cr_fiqa").eval(), tmp_path / "vit_t.onnx")


def test_safetensors_export_rebuilds_the_configuration(tmp_path):
    from qualiface.models import export_safetensors, load_model

    backbone = create_backbone("vit_s_dp005_mask_0", **TINY).eval()
    model = load_model(export_safetensors(backbone, tmp_path / "vit.safetensors"))
    assert model.module is not None
    x = images(side=36, dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(model.module(x), backbone(x), rtol=0, atol=0)


# ---- an arcface_torch ViT model.pt through load_model (the insightface format) ----


def test_load_model_reads_an_arcface_torch_vit_model_pt(tmp_path):
    from qualiface.models import load_model

    layout = official_layout(256, 12)
    state = {k: torch.zeros(shape) for k, shape in layout.items()}
    state.update({k: torch.ones(shape) for k, shape in layout.items() if k.endswith("running_var")})
    state.update({k: torch.tensor(0) for k in layout if k.endswith("num_batches_tracked")})
    torch.save(state, tmp_path / "model.pt")
    model = load_model(tmp_path / "model.pt")
    assert model.card.source_format == "insightface"
    assert model.card.architecture == "vit_t_dp005_mask0"
    assert model.preprocessing.flip_fusion == "sum"
    assert model.preprocessing.input_size == (3, 112, 112)
    assert isinstance(model.module, VisionTransformer)
    assert set(model.module.state_dict()) == set(layout)


def test_load_model_vit_weights_give_the_reference_embedding(tmp_path):
    from qualiface.models import load_model

    state = random_state(official_layout(32, 2, tokens=16, out=24), seed=7)
    torch.save({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, tmp_path / "model.pt")
    model = load_model(
        tmp_path / "model.pt", arch="vit_t", backbone_kwargs={"embed_dim": 32, "depth": 2, "num_heads": 4}
    )
    assert model.module is not None
    assert model.module.preprocessing.input_size == (3, 36, 36)  # from pos_embed (16 tokens) and the 9x9 patches
    x = images(batch=2, side=36)
    with torch.no_grad():
        got = model.module(x.float()).double()
    torch.testing.assert_close(got, reference_forward(state, x, depth=2, heads=4), rtol=1e-4, atol=1e-4)


def test_load_model_refuses_a_vit_of_unknown_size(tmp_path):
    from qualiface.models import ModelLoadError, load_model

    layout = official_layout(64, 3)
    torch.save({k: torch.zeros(shape) for k, shape in layout.items()}, tmp_path / "model.pt")
    with pytest.raises(ModelLoadError, match="ViT d 64, 3 blocks match none"):
        load_model(tmp_path / "model.pt")
