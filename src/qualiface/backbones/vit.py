"""insightface ``arcface_torch`` Vision Transformers (``backbones/vit.py``), with arcface_torch's exact state-dict
layout, so its ``model.pt`` files (e.g. the WebFace42M ViT-T/S/B/L) load with ``strict=True``.

    patches:  Conv2d(3→d, k = s = patch_size) on the 112×112 crop → (⌊112/9⌋)² = 144 tokens, + pos_embed
    block:    x + dp(proj(attn(norm1(x)))), then x + dp(fc2(relu6(fc1(norm2(x))))); qkv has no bias,
              attention softmax(q kᵀ / √(d/h)) v per head, dp = drop path (stochastic depth)
    head:     norm (LayerNorm) → flatten (144·d) → feature = Linear(144·d→d, no bias) → BatchNorm1d(eps 2e-5)
              → Linear(d→embedding_dim, no bias) → BatchNorm1d(eps 2e-5)

In training mode with ``mask_ratio > 0`` a random subset of tokens is dropped before the blocks (per sample) and
the learned ``mask_token`` fills their places after the final norm; in eval mode every token is kept, so
inference is deterministic. Drop path is active in training mode only.

Precision: the official ``Attention`` / ``Block`` force CUDA fp16 autocast on ``qkv``, ``proj`` and the MLP even
when a run is not fp16; here the trainer owns autocast (``train.precision``). Under autocast, what the official
code computes in float32 stays so: the attention product (``q``, ``k``, ``v`` cast to float32, autocast off), the
final LayerNorm (autocast runs ``layer_norm`` in float32) and, with ``float32_ends`` (default), the patch
embedding and the ``feature`` head, which the official module leaves outside its autocast regions.
``using_checkpoint`` uses ``torch.utils.checkpoint`` without re-entrance (the official call is re-entrant); no key
changes.

The official ``forward_features`` calls ``random_masking(x)`` without its ``mask_ratio``, so every model with
``mask_ratio > 0`` masks 10% of the tokens (``int(144 · 0.9) = 129`` kept), including the WebFace42M
``*_mask_005`` runs: ``masking="official"`` (default) does that, ``masking="mask_ratio"`` masks ``mask_ratio``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from qualiface.backbones.base import Backbone, Preprocessing, outside_autocast
from qualiface.registry import BACKBONES

#: The ratio arcface_torch's ``random_masking`` uses when called without one (its ``forward_features`` does so).
OFFICIAL_MASK_RATIO = 0.1
Masking = Literal["official", "mask_ratio"]


def drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth: in training, zero the whole residual branch of a sample with probability ``rate`` and
    divide the kept ones by ``1 − rate`` (timm ``DropPath``, ``scale_by_keep=True``); identity otherwise."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class DropPath(nn.Module):
    """:func:`drop_path` as a module (no parameters, so no state-dict keys)."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = float(rate)

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.rate, self.training)

    def extra_repr(self) -> str:
        return f"rate={self.rate:g}"


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` patches projected to ``embed_dim`` (keys ``proj.weight``, ``proj.bias``); the
    pixels past the last whole patch (4 rows and columns at 112 / 9) are not read, as in the official model."""

    def __init__(self, input_size: int, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.grid = input_size // patch_size
        self.num_patches = self.grid * self.grid
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: Tensor) -> Tensor:
        """Tokens ``(B, num_patches, embed_dim)``, row-major over the patch grid."""
        height, width = images.shape[-2:]
        if height != self.input_size or width != self.input_size:
            raise ValueError(f"ViT input must be {self.input_size}x{self.input_size}, got {height}x{width}")
        return self.proj(images).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention: ``qkv`` (no bias) → per head ``softmax(q kᵀ · head_dim^-½) v`` → ``proj``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, attn_drop: float, proj_drop: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        weights = self.attn_drop(((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1))
        return weights @ v

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if q.dtype in (torch.float16, torch.bfloat16):  # the official attention runs in float32 under fp16
            with torch.autocast(device_type=q.device.type, enabled=False):
                out = self._attend(q.float(), k.float(), v.float()).to(q.dtype)
        else:
            out = self._attend(q, k, v)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(batch, tokens, dim)))


class Mlp(nn.Module):
    """``fc2(drop(relu6(fc1(x))))`` then dropout; arcface_torch's ViT uses ReLU6, not GELU."""

    def __init__(self, dim: int, hidden: int, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.ReLU6()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + dp(attn(norm1(x)))`` then ``x + dp(mlp(norm2(x)))``."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop: float, attn_drop: float, path: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path: nn.Module = DropPath(path) if path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer(Backbone):
    """arcface_torch's ``VisionTransformer`` (``norm_layer="ln"``, no class token): see the module docstring.

    ``forward_bottleneck`` gives the flattened normalised tokens ``(B, num_patches · embed_dim)`` that
    ``feature.0`` reads (a ScaleFace branch reads them too); ``embed`` the ``feature`` output, the raw embedding
    a CR-FIQA ``qs`` reads. Weight init as arcface_torch: Linear weights truncated N(0, 0.02²) and zero biases,
    ``pos_embed`` truncated N(0, 0.02²), ``mask_token`` N(0, 0.02²), LayerNorm 1 / 0, the patch convolution and
    the BatchNorms PyTorch's default. Without masking ``mask_token`` is kept (its key loads) but frozen, since
    nothing reads it.

    Args:
        arch: Registered name, used in messages.
        embed_dim: Token width ``d``.
        depth: Number of blocks.
        num_heads: Attention heads; must divide ``embed_dim``.
        mlp_ratio: MLP hidden width as a multiple of ``embed_dim``.
        qkv_bias: Bias on the ``qkv`` projection (arcface_torch: none).
        drop_rate: Dropout after the position embedding, in the MLP and after ``proj`` (arcface_torch: 0).
        attn_drop_rate: Dropout on the attention weights (arcface_torch: 0).
        drop_path_rate: Stochastic depth of the last block; block ``i`` uses ``rate · i / (depth − 1)``.
        mask_ratio: Fraction of tokens masked in training mode; ``0`` turns masking off.
        masking: ``"official"`` masks 10% whenever ``mask_ratio > 0`` (what arcface_torch's code does);
            ``"mask_ratio"`` masks ``mask_ratio``.
        using_checkpoint: Recompute each block in the backward pass (``torch.utils.checkpoint``) in training mode.
        float32_ends: Under autocast, compute the patch embedding and the ``feature`` head in float32 with
            autocast off, as arcface_torch (which autocasts only the attention projections and the MLP); ``False``
            lets autocast cover them too.
        patch_size: Side of a square patch (arcface_torch: 9).
        input_size: Side of the square input (arcface_torch: 112); the token count is ``(input_size //
            patch_size)²``.
        embedding_dim: Output width (arcface_torch ``num_features``).
        quality_branch: ``None`` or a registered quality branch (``"cr_fiqa"``, ``"scaleface"``; see
            :mod:`qualiface.quality.branches`).
        quality_options: The branch's options (ScaleFace: ``scale_activation``, ``scale_coefficient``).
    """

    def __init__(
        self,
        *,
        arch: str = "vit",
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        mask_ratio: float = 0.1,
        masking: Masking = "official",
        using_checkpoint: bool = False,
        float32_ends: bool = True,
        patch_size: int = 9,
        input_size: int = 112,
        embedding_dim: int = 512,
        quality_branch: str | None = None,
        **quality_options: Any,
    ) -> None:
        super().__init__()
        self._check(arch, embed_dim, depth, num_heads, drop_path_rate, mask_ratio, masking, patch_size, input_size)
        self.patch_embed = PatchEmbed(input_size, patch_size, embed_dim)
        self.num_patches = self.patch_embed.num_patches
        self.embed_dim = embed_dim
        self.mask_ratio = float(mask_ratio)
        self.masking: Masking = masking
        self.using_checkpoint = using_checkpoint
        self.float32_ends = float32_ends
        self._describe(arch, embed_dim, embedding_dim, input_size)

        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        rates = [float(r) for r in torch.linspace(0, drop_path_rate, depth, device="cpu")]
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, rate) for rate in rates
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.feature = nn.Sequential(
            nn.Linear(embed_dim * self.num_patches, embed_dim, bias=False),
            nn.BatchNorm1d(embed_dim, eps=2e-5),
            nn.Linear(embed_dim, embedding_dim, bias=False),
            nn.BatchNorm1d(embedding_dim, eps=2e-5),
        )
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self._init_weights()
        # Unused without masking (the official DDP finds unused parameters; ours does not): kept, not trained.
        self.mask_token.requires_grad_(self.active_mask_ratio > 0)
        self._add_quality_branch(quality_branch, **quality_options)

    @staticmethod
    def _check(
        arch: str,
        embed_dim: int,
        depth: int,
        num_heads: int,
        drop_path_rate: float,
        mask_ratio: float,
        masking: str,
        patch_size: int,
        input_size: int,
    ) -> None:
        """One-line ``ValueError`` naming the first argument out of range."""
        if depth < 1:
            raise ValueError(f"{arch}: depth must be at least 1, got {depth}")
        if num_heads < 1 or embed_dim % num_heads:
            raise ValueError(f"{arch}: num_heads must divide embed_dim {embed_dim}, got {num_heads}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"{arch}: drop_path_rate must be in [0, 1), got {drop_path_rate}")
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"{arch}: mask_ratio must be in [0, 1), got {mask_ratio}")
        if masking not in ("official", "mask_ratio"):
            raise ValueError(f"{arch}: masking must be 'official' or 'mask_ratio', got {masking!r}")
        if patch_size < 1 or input_size < patch_size:
            raise ValueError(f"{arch}: input_size {input_size} must hold at least one {patch_size}-pixel patch")

    def _describe(self, arch: str, embed_dim: int, embedding_dim: int, input_size: int) -> None:
        """Record the name, sizes and preprocessing (arcface_torch's: RGB, ``(x/255 − 0.5)/0.5``)."""
        self.arch = arch
        self.embedding_dim = embedding_dim
        self.bottleneck_dim = embed_dim * self.num_patches
        # arcface_torch's RGB (x/255 − 0.5)/0.5: the Preprocessing defaults
        self.preprocessing = Preprocessing(input_size=(3, input_size, input_size), source="insightface")

    def _init_weights(self) -> None:
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02, a=-2.0, b=2.0)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02, a=-2.0, b=2.0)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def active_mask_ratio(self) -> float:
        """The fraction of tokens masked in training mode (0 when masking is off)."""
        if self.mask_ratio <= 0.0:
            return 0.0
        return OFFICIAL_MASK_RATIO if self.masking == "official" else self.mask_ratio

    def _mask(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Keep ``int(L · (1 − ratio))`` tokens per sample, chosen by sorting uniform noise (lowest kept, in noise
        order); returns them and the permutation that puts tokens back in place."""
        batch, length, dim = x.shape
        keep = int(length * (1 - self.active_mask_ratio))
        shuffle = torch.argsort(torch.rand(batch, length, device=x.device), dim=1)
        restore = torch.argsort(shuffle, dim=1)
        kept = torch.gather(x, 1, shuffle[:, :keep, None].expand(-1, -1, dim))
        return kept, restore

    def forward_bottleneck(self, images: Tensor) -> Tensor:
        """Normalised tokens, masked ones replaced by ``mask_token`` in training, flattened: ``(B, 144 · d)``."""
        x = self.pos_drop(
            outside_autocast(self.patch_embed, images, self.patch_embed.proj.weight, self.float32_ends) + self.pos_embed
        )
        restore = None
        if self.training and self.active_mask_ratio > 0:
            x, restore = self._mask(x)
        recompute = self.using_checkpoint and self.training
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if recompute else block(x)
        x = self.norm(x)
        if restore is not None:
            fill = self.mask_token.to(x.dtype).expand(x.shape[0], restore.shape[1] - x.shape[1], -1)
            x = torch.gather(torch.cat([x, fill], dim=1), 1, restore[:, :, None].expand(-1, -1, x.shape[2]))
        return x.reshape(x.shape[0], self.num_patches * self.embed_dim)

    def embed(self, bottleneck: Tensor) -> Tensor:
        """Raw (un-normalised) embeddings ``(B, embedding_dim)``: the ``feature`` head."""
        first = self.feature[0]
        assert isinstance(first, nn.Linear)  # __init__ builds the head so
        return outside_autocast(self.feature, bottleneck, first.weight, self.float32_ends)


def _vit(arch: str, size: dict[str, Any], kwargs: dict[str, Any]) -> VisionTransformer:
    return VisionTransformer(arch=arch, **{**size, **kwargs})


# arcface_torch backbones/__init__.py get_model: every name is img_size 112, patch 9, 8 heads, LayerNorm.
_T = {"embed_dim": 256, "depth": 12, "num_heads": 8}
_S = {"embed_dim": 512, "depth": 12, "num_heads": 8}
_B = {"embed_dim": 512, "depth": 24, "num_heads": 8}
_L = {"embed_dim": 768, "depth": 24, "num_heads": 8}
_H = {"embed_dim": 1024, "depth": 48, "num_heads": 8}


@BACKBONES.register("vit_t")
def vit_t(**kwargs: Any) -> VisionTransformer:
    """arcface_torch ``vit_t``: d 256, 12 blocks, drop path 0.1, mask 0.1; kwargs as :class:`VisionTransformer`."""
    return _vit("vit_t", {**_T, "drop_path_rate": 0.1, "mask_ratio": 0.1}, kwargs)


@BACKBONES.register("vit_t_dp005_mask0")
def vit_t_dp005_mask0(**kwargs: Any) -> VisionTransformer:
    """arcface_torch ``vit_t_dp005_mask0`` (WebFace42M): ``vit_t`` with drop path 0.05, no masking."""
    return _vit("vit_t_dp005_mask0", {**_T, "drop_path_rate": 0.05, "mask_ratio": 0.0}, kwargs)


@BACKBONES.register("vit_s")
def vit_s(**kwargs: Any) -> VisionTransformer:
    """arcface_torch ``vit_s``: d 512, 12 blocks, drop path 0.1, mask 0.1; kwargs as :class:`VisionTransformer`."""
    return _vit("vit_s", {**_S, "drop_path_rate": 0.1, "mask_ratio": 0.1}, kwargs)


@BACKBONES.register("vit_s_dp005_mask_0")
def vit_s_dp005_mask_0(**kwargs: Any) -> VisionTransformer:
    """arcface_torch ``vit_s_dp005_mask_0`` (WebFace42M): ``vit_s`` with drop path 0.05, no masking."""
    return _vit("vit_s_dp005_mask_0", {**_S, "drop_path_rate": 0.05, "mask_ratio": 0.0}, kwargs)


@BACKBONES.register("vit_b")
def vit_b(**kwargs: Any) -> VisionTransformer:
    """arcface_torch ``vit_b``: d 512, 24 blocks, drop path 0.1, mask 0.1, checkpointing; kwargs as
    :class:`VisionTransformer`."""
    return _vit("vit_b", {**_B, "drop_path_rate": 0.1, "mask_ratio": 0.1, "using_checkpoint": True}, kwargs)


@BACKBONES.register("vit_b_dp005_mask_005")
def vit_b_dp005_mask_005(**kwargs: Any) -> VisionTransformer:
    """arcface_torch ``vit_b_dp005_mask_005`` (WebFace42M): ``vit_b`` with drop path 0.05, mask ratio 0.05 (10% is
    what the official code masks, see ``masking``)."""
    size = {**_B, "drop_path_rate": 0.05, "mask_ratio": 0.05, "using_checkpoint": True}
    return _vit("vit_b_dp005_mask_005", size, kwargs)


@BACKBONES.register("vit_l_dp005_mask_005")
def vit_l_dp005_mask_005(**kwargs: Any) -> VisionTransformer:
    """arcface_torch ``vit_l_dp005_mask_005`` (WebFace42M ViT-L; arcface_torch has no plain ``vit_l``): d 768,
    24 blocks, drop path 0.05, mask ratio 0.05 (10% masked, see ``masking``), checkpointing."""
    size = {**_L, "drop_path_rate": 0.05, "mask_ratio": 0.05, "using_checkpoint": True}
    return _vit("vit_l_dp005_mask_005", size, kwargs)


@BACKBONES.register("vit_h")
def vit_h(**kwargs: Any) -> VisionTransformer:
    """arcface_torch ``vit_h`` (WebFace42M): d 1024, 48 blocks, drop path 0.1, no masking, checkpointing."""
    return _vit("vit_h", {**_H, "drop_path_rate": 0.1, "mask_ratio": 0.0, "using_checkpoint": True}, kwargs)
