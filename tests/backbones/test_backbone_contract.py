"""Contract tests over every registered backbone: official key layouts and counts, forward, gradients."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import qualiface
from qualiface import create_backbone, list_backbones
from qualiface.backbones import Backbone

# arcface_torch iResNet, AdaFace IR / IR-SE, arcface_torch MobileFaceNet (docs/methods.md, 'Backbones'):
# (len(state_dict()), number of floating parameters incl. frozen ones, excl. BN running statistics).
EXPECTED_COUNTS = {
    "iresnet18": (187, 24_025_600),
    "iresnet34": (331, 34_139_328),
    "iresnet50": (475, 43_590_848),
    "iresnet100": (925, 65_156_160),
    "iresnet200": (1807, 118_833_920),
    "ir_18": (179, 24_020_352),
    "ir_34": (323, 34_134_080),
    "ir_50": (467, 43_585_600),
    "ir_101": (917, 65_150_912),
    "ir_se_50": (515, 43_808_320),
    "ir_se_101": (1015, 65_523_136),
    "mobilefacenet": (333, 2_059_520),
    "mobilefacenet_large": (606, 6_314_880),
    # UniTSFace R50 (docs/methods.md, 'Backbones'): 477 keys and 53,203,649 numbers with C = 10,572 = 474 backbone
    # keys and 42,377,920 parameters + sample_to_class_loss.weight and feat_mem (2 x 10,572 x 512) + the USS bias (1)
    "lresnet50eir": (474, 42_377_920),
    "lresnet100eir": (924, 63_943_232),
    "lresnet200eir": (1824, 105_302_592),
    # arcface_torch ViTs (tests/backbones/test_vit.py derives every key and shape): 18 + 11 x depth keys
    "vit_t": (150, 19_137_792),
    "vit_t_dp005_mask0": (150, 19_137_792),
    "vit_s": (150, 76_023_296),
    "vit_s_dp005_mask_0": (150, 76_023_296),
    "vit_b": (282, 113_833_472),
    "vit_b_dp005_mask_005": (282, 113_833_472),
    "vit_l_dp005_mask_005": (282, 255_684_352),
    "vit_h": (546, 756_393_984),
}

BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
KEY_PATTERNS = {
    "iresnet": re.compile(
        rf"^(conv1\.weight|bn1\.{BN}|prelu\.weight"
        rf"|layer[1-4]\.\d+\.(bn[123]\.{BN}|conv[12]\.weight|prelu\.weight|downsample\.0\.weight|downsample\.1\.{BN})"
        rf"|bn2\.{BN}|fc\.(weight|bias)|features\.{BN})$"
    ),
    "ir": re.compile(
        rf"^(input_layer\.0\.weight|input_layer\.1\.{BN}|input_layer\.2\.weight"
        rf"|body\.\d+\.(shortcut_layer\.0\.weight|shortcut_layer\.1\.{BN}"
        rf"|res_layer\.[1-4]\.weight|res_layer\.[0-5]\.{BN}|res_layer\.se_block\.fc[12]\.weight)"
        rf"|output_layer\.0\.{BN}|output_layer\.3\.(weight|bias)"
        r"|output_layer\.4\.(running_mean|running_var|num_batches_tracked))$"
    ),
    "mobilefacenet": re.compile(rf"^(layers\.\d+|conv_sep|features)(\.layers\.\d+)+\.{BN}$"),
    "lresnet": re.compile(
        rf"^(conv1\.weight|bn1\.{BN}|prelu\.weight"
        rf"|layer[1-4]\.\d+\.(bn[012]\.{BN}|conv[12]\.weight|prelu\.weight|downsample\.0\.weight|downsample\.1\.{BN})"
        rf"|bn4\.{BN}|fc5\.weight|bn5\.{BN})$"
    ),
    "vit": re.compile(
        r"^(pos_embed|mask_token|patch_embed\.proj\.(weight|bias)|norm\.(weight|bias)"
        r"|blocks\.\d+\.(norm[12]\.(weight|bias)|attn\.qkv\.weight|attn\.proj\.(weight|bias)|mlp\.fc[12]\.(weight|bias))"
        rf"|feature\.[02]\.weight|feature\.[13]\.{BN})$"
    ),
}

REPRESENTATIVE_SHAPES = {
    "iresnet18": {
        "conv1.weight": (64, 3, 3, 3),
        "layer1.0.downsample.0.weight": (64, 64, 1, 1),
        "layer1.1.conv2.weight": (64, 64, 3, 3),
        "fc.weight": (512, 25088),
    },
    "iresnet50": {
        "conv1.weight": (64, 3, 3, 3),
        "prelu.weight": (64,),
        "layer1.0.bn1.running_mean": (64,),
        "layer1.0.downsample.0.weight": (64, 64, 1, 1),
        "layer2.0.bn1.weight": (64,),
        "layer2.0.conv1.weight": (128, 64, 3, 3),
        "layer2.0.conv2.weight": (128, 128, 3, 3),
        "layer2.0.downsample.0.weight": (128, 64, 1, 1),
        "layer3.13.prelu.weight": (256,),
        "layer4.2.bn3.running_var": (512,),
        "bn2.num_batches_tracked": (),
        "fc.weight": (512, 25088),
        "fc.bias": (512,),
        "features.weight": (512,),
        "features.num_batches_tracked": (),
    },
    "mobilefacenet": {
        "layers.0.layers.0.weight": (128, 3, 3, 3),
        "layers.1.layers.0.weight": (128, 2, 3, 3),
        "layers.2.layers.0.layers.0.weight": (128, 128, 1, 1),
        "layers.2.layers.1.layers.0.weight": (128, 1, 3, 3),
        "layers.2.layers.2.layers.0.weight": (128, 128, 1, 1),
        "layers.3.layers.2.layers.1.layers.0.weight": (128, 1, 3, 3),
        "layers.4.layers.0.layers.0.weight": (256, 128, 1, 1),
        "layers.4.layers.1.layers.0.weight": (256, 1, 3, 3),
        "layers.6.layers.0.layers.0.weight": (512, 256, 1, 1),
        "layers.6.layers.1.layers.0.weight": (512, 1, 3, 3),
        "layers.6.layers.2.layers.0.weight": (256, 512, 1, 1),
        "conv_sep.layers.0.weight": (512, 256, 1, 1),
        "features.layers.0.layers.0.weight": (512, 1, 7, 7),
        "features.layers.2.weight": (512, 512),
        "features.layers.3.weight": (512,),
    },
    "mobilefacenet_large": {
        "layers.0.layers.0.weight": (256, 3, 3, 3),
        "layers.1.layers.1.layers.0.layers.0.weight": (128, 256, 1, 1),
        "layers.1.layers.1.layers.1.layers.0.weight": (128, 1, 3, 3),
        "conv_sep.layers.0.weight": (512, 512, 1, 1),
        "features.layers.0.layers.0.weight": (512, 1, 7, 7),
    },
    "ir_50": {
        "input_layer.0.weight": (64, 3, 3, 3),
        "input_layer.2.weight": (64,),
        "body.0.res_layer.0.weight": (64,),
        "body.0.res_layer.1.weight": (64, 64, 3, 3),
        "body.0.res_layer.3.weight": (64,),
        "body.0.res_layer.4.weight": (64, 64, 3, 3),
        "body.3.shortcut_layer.0.weight": (128, 64, 1, 1),
        "body.3.res_layer.1.weight": (128, 64, 3, 3),
        "body.21.shortcut_layer.1.running_var": (512,),
        "output_layer.0.weight": (512,),
        "output_layer.3.weight": (512, 25088),
        "output_layer.3.bias": (512,),
        "output_layer.4.running_mean": (512,),
    },
    "lresnet50eir": {  # docs/methods.md, 'Backbones': every stride-2 convolution is 2x2
        "layer1.0.conv2.weight": (64, 64, 2, 2),
        "layer1.0.downsample.0.weight": (64, 64, 2, 2),
        "layer2.0.conv2.weight": (128, 128, 2, 2),
        "layer2.0.downsample.0.weight": (128, 64, 2, 2),
        "layer1.1.conv2.weight": (64, 64, 3, 3),
        "layer1.0.bn0.weight": (64,),
        "fc5.weight": (512, 512, 7, 7),
        "bn5.weight": (512,),
    },
    "ir_se_50": {
        "body.0.res_layer.se_block.fc1.weight": (4, 64, 1, 1),
        "body.0.res_layer.se_block.fc2.weight": (64, 4, 1, 1),
        "body.23.res_layer.se_block.fc1.weight": (32, 512, 1, 1),
    },
}

# Units that open a stage in AdaFace's flat ``body`` (``mk-minchul/AdaFace: net.py``); unit 0 has the weight-free
# shortcut.
IR_STAGE_STARTS = {"ir_18": (0, 2, 4, 6), "ir_50": (0, 3, 7, 21), "ir_101": (0, 3, 16, 46)}

SMALL = ["iresnet18", "mobilefacenet", "ir_18"]  # cheap enough for real 112x112 forwards on 2 CPU cores


def family(name: str) -> str:
    if name.startswith("lresnet"):
        return "lresnet"
    if name.startswith("vit"):
        return "vit"
    return "iresnet" if name.startswith("iresnet") else "ir" if name.startswith("ir_") else "mobilefacenet"


def build_meta(name: str, **kwargs) -> Backbone:
    with torch.device("meta"):
        return create_backbone(name, **kwargs)


def build(name: str, seed: int = 0, **kwargs) -> Backbone:
    torch.manual_seed(seed)
    return create_backbone(name, **kwargs)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def images(batch: int = 2, size: int = 112, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_every_backbone_has_expected_counts():
    assert list_backbones() == sorted(EXPECTED_COUNTS)


@pytest.mark.parametrize("name", list_backbones())
def test_key_and_parameter_counts_match_official(name):
    model = build_meta(name)
    assert (len(model.state_dict()), num_params(model)) == EXPECTED_COUNTS[name]


@pytest.mark.parametrize("name", list_backbones())
def test_key_names_follow_official_layout(name):
    pattern = KEY_PATTERNS[family(name)]
    bad = [key for key in build_meta(name).state_dict() if not pattern.match(key)]
    assert bad == []


@pytest.mark.parametrize("name", sorted(REPRESENTATIVE_SHAPES))
def test_representative_key_shapes(name):
    state = build_meta(name).state_dict()
    assert {key: tuple(state[key].shape) for key in REPRESENTATIVE_SHAPES[name]} == REPRESENTATIVE_SHAPES[name]


@pytest.mark.parametrize("name", list_backbones("iresnet*"))
def test_iresnet_downsamples_every_stage_including_layer1(name):
    keys = {k.rsplit(".", 3)[0] for k in build_meta(name).state_dict() if ".downsample.0." in k}
    assert keys == {"layer1.0", "layer2.0", "layer3.0", "layer4.0"}


@pytest.mark.parametrize("name", sorted(IR_STAGE_STARTS))
def test_ir_conv_shortcuts_sit_at_stage_starts_except_the_first(name):
    keys = build_meta(name).state_dict()
    units = sorted(int(k.split(".")[1]) for k in keys if k.endswith("shortcut_layer.0.weight"))
    assert units == list(IR_STAGE_STARTS[name][1:])
    assert not any(k.startswith("body.0.shortcut_layer") for k in keys)


@pytest.mark.parametrize("name", list_backbones("iresnet*"))
def test_iresnet_features_weight_is_frozen_by_default(name):
    assert build_meta(name).features.weight.requires_grad is False
    assert build_meta(name, features_weight_trainable=True).features.weight.requires_grad is True


@pytest.mark.parametrize("name", list_backbones())
def test_preprocessing_matches_checkpoint_family(name):
    model = build_meta(name)
    expected = {"ir": ("BGR", "adaface"), "lresnet": ("RGB", "unitsface")}.get(family(name), ("RGB", "insightface"))
    pre = model.preprocessing
    assert (pre.channel_order, pre.source) == expected
    assert pre.mean == pre.std == (0.5, 0.5, 0.5)
    assert pre.input_size == (3, 112, 112)
    assert isinstance(model, Backbone)
    assert model.embedding_dim == 512


@pytest.mark.parametrize("name", list_backbones())
def test_meta_forward_shape_and_every_parameter_gets_a_gradient(name):
    model = build_meta(name)
    out = model(torch.empty(2, 3, 112, 112, device="meta"))
    assert out.shape == (2, 512)
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


@pytest.mark.parametrize("name", SMALL)
def test_forward_gives_raw_finite_embeddings(name):
    model = build(name).eval()
    with torch.no_grad():
        out = model(images())
    assert out.shape == (2, 512)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    norms = out.norm(dim=1)
    assert not torch.allclose(norms, torch.ones_like(norms), atol=1e-2)


@pytest.mark.parametrize("name", SMALL)
def test_real_gradients_reach_every_trainable_parameter(name):
    model = build(name).train()
    model(images()).pow(2).sum().backward()
    for param_name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, param_name
            assert torch.isfinite(param.grad).all(), param_name
        else:
            assert param.grad is None, param_name


@pytest.mark.parametrize("name", SMALL)
def test_eval_mode_is_deterministic(name):
    model = build(name).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(images()), model(images()), rtol=0, atol=0)


@pytest.mark.parametrize("name", SMALL)
def test_state_dict_round_trip_strict(name):
    source, target = build(name, seed=0).eval(), build(name, seed=1).eval()
    with torch.no_grad():
        assert not torch.allclose(source(images()), target(images()))
        result = target.load_state_dict(source.state_dict(), strict=True)
        assert (result.missing_keys, result.unexpected_keys) == ([], [])
        torch.testing.assert_close(target(images()), source(images()), rtol=0, atol=0)


@pytest.mark.parametrize(("name", "side"), [("iresnet18", 32), ("ir_18", 32), ("iresnet50", 224), ("ir_50", 224)])
def test_input_size_sets_fc_in_features(name, side):
    model = build_meta(name, input_size=side)
    linear = model.fc if family(name) == "iresnet" else model.output_layer[3]
    assert linear.in_features == 512 * (side // 16) ** 2
    assert model.preprocessing.input_size == (3, side, side)
    assert model(torch.empty(2, 3, side, side, device="meta")).shape == (2, 512)


@pytest.mark.parametrize("name", ["iresnet18", "ir_18"])
def test_small_input_size_runs_for_real(name):
    model = build(name, input_size=32).eval()
    with torch.no_grad():
        assert model(images(size=32)).shape == (2, 512)


@pytest.mark.parametrize("name", ["iresnet18", "ir_18"])
@pytest.mark.parametrize("side", [0, 100, 120])
def test_input_size_must_be_multiple_of_16(name, side):
    with pytest.raises(ValueError, match="multiple of 16"):
        build_meta(name, input_size=side)


def test_iresnet_batchnorm_settings_pass_through_for_magface():
    model = build_meta("iresnet50", bn_eps=2e-5, bn_momentum=0.9)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == 1 + 3 * 24 + 4 + 2
    assert all(m.eps == 2e-5 and m.momentum == 0.9 for m in norms)


def test_iresnet_init_follows_arcface_torch():
    model = build("iresnet18")
    convs = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, nn.Conv2d)])
    assert abs(convs.std().item() - 0.1) < 0.002
    assert abs(convs.mean().item()) < 0.002
    assert torch.equal(model.features.weight, torch.ones(512))
    assert torch.equal(model.layer2[0].bn1.weight, torch.ones(64))
    assert torch.equal(model.layer2[0].bn1.bias, torch.zeros(64))


def test_iresnet_zero_init_residual_zeroes_block_bn2():
    model = build("iresnet18", zero_init_residual=True)
    blocks = [m for m in model.modules() if type(m).__name__ == "IBasicBlock"]
    assert len(blocks) == 8
    assert all(torch.count_nonzero(b.bn2.weight) == 0 for b in blocks)
    assert torch.count_nonzero(model.layer1[0].bn3.weight) == 64


@pytest.mark.parametrize(("name", "dropout"), [("iresnet18", 0.0), ("ir_18", 0.4)])
def test_dropout_default_and_override(name, dropout):
    modules = [m for m in build_meta(name).modules() if isinstance(m, nn.Dropout)]
    assert [m.p for m in modules] == [dropout]
    assert [m.p for m in build_meta(name, dropout=0.2).modules() if isinstance(m, nn.Dropout)] == [0.2]


def test_ir_final_batchnorm_is_not_affine():
    final = build_meta("ir_50").output_layer[4]
    assert isinstance(final, nn.BatchNorm1d)
    assert final.affine is False


@pytest.mark.parametrize("name", list_backbones())
def test_create_backbone_passes_kwargs_through(name):
    model = build_meta(name, embedding_dim=128)
    assert model.embedding_dim == 128
    final_norm = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)][-1]
    assert final_norm.num_features == 128


@pytest.mark.parametrize("name", SMALL)
def test_embedding_dim_sets_the_output_width(name):
    assert build_meta(name, embedding_dim=128)(torch.empty(2, 3, 112, 112, device="meta")).shape == (2, 128)


def test_create_backbone_rejects_unknown_name():
    with pytest.raises(KeyError, match="iresnet50"):
        create_backbone("iresnet5O")


def test_create_backbone_rejects_unknown_kwarg():
    with pytest.raises(TypeError):
        build_meta("iresnet18", not_an_option=1)


def test_backbones_are_reachable_from_the_top_level_package():
    assert qualiface.BACKBONES.names() == list_backbones()


def test_lresnet_clamps_prelu_slopes_after_an_optimizer_step():
    model = create_backbone("lresnet50eir", input_size=16)
    with torch.no_grad():
        model.prelu.weight.fill_(-0.5)
        model.layer3[5].prelu.weight.fill_(0.005)
        model.layer1[0].prelu.weight.fill_(0.3)
    model.after_optimizer_step()
    assert torch.all(model.prelu.weight == 0.01)
    assert torch.all(model.layer3[5].prelu.weight == 0.01)
    assert torch.all(model.layer1[0].prelu.weight == 0.3)
    assert not model.bn5.weight.requires_grad  # the official bn5 weight is frozen at 1
