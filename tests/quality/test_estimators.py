"""Contract tests over every registered quality estimator."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qualiface import QUALITY, create_backbone, create_quality_estimator, list_quality
from qualiface.quality import QualityEstimator

BRANCH_FOR = {"cr_fiqa": "cr_fiqa", "feature_norm": None, "scaleface": "scaleface"}
AUX_KEY = {"cr_fiqa": "quality", "scaleface": "scale"}


def images(batch: int = 4, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def backbone_for(estimator: str, name: str = "iresnet18", **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return create_backbone(name, input_size=32, quality_branch=BRANCH_FOR[estimator], **kwargs).eval()


def test_list_quality():
    assert list_quality() == ["cr_fiqa", "feature_norm", "scaleface"]


@pytest.mark.parametrize("name", list_quality())
def test_estimator_contract(name):
    estimator = create_quality_estimator(name, backbone=backbone_for(name))
    assert isinstance(estimator, QualityEstimator)
    assert type(estimator).name == name
    assert type(estimator).higher_is_better is True
    with torch.no_grad():
        scores = estimator(images())
    assert scores.shape == (4,)
    assert scores.dtype == torch.float32
    assert torch.isfinite(scores).all()


@pytest.mark.parametrize("backbone_name", ["iresnet18", "ir_18"])
def test_feature_norm_is_the_norm_of_the_raw_embedding(backbone_name):
    backbone = backbone_for("feature_norm", backbone_name)
    estimator = create_quality_estimator("feature_norm", backbone=backbone)
    with torch.no_grad():
        torch.testing.assert_close(estimator(images()), backbone(images()).norm(dim=1))


def test_feature_norm_works_on_any_backbone():
    torch.manual_seed(0)
    backbone = create_backbone("mobilefacenet").eval()
    x = images(batch=2, size=112)
    estimator = create_quality_estimator("feature_norm", backbone=backbone)
    with torch.no_grad():
        torch.testing.assert_close(estimator(x), backbone(x).norm(dim=1))
    plain = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 8))
    assert create_quality_estimator("feature_norm", backbone=plain)(images()).shape == (4,)


@pytest.mark.parametrize("name", ["cr_fiqa", "scaleface"])
@pytest.mark.parametrize("backbone_name", ["iresnet18", "ir_18"])
def test_branch_estimators_return_the_branch_output(name, backbone_name):
    backbone = backbone_for(name, backbone_name)
    estimator = create_quality_estimator(name, backbone=backbone)
    with torch.no_grad():
        torch.testing.assert_close(estimator(images()), backbone.forward_aux(images())[1][AUX_KEY[name]])


@pytest.mark.parametrize(
    ("name", "branch"), [("cr_fiqa", None), ("cr_fiqa", "scaleface"), ("scaleface", None), ("scaleface", "cr_fiqa")]
)
def test_branch_estimators_reject_a_backbone_without_the_branch(name, branch):
    with torch.device("meta"):
        backbone = create_backbone("iresnet50", quality_branch=branch)
    with pytest.raises(ValueError, match=rf"'iresnet50'.*quality_branch='{name}'"):
        create_quality_estimator(name, backbone=backbone)


@pytest.mark.parametrize("name", ["cr_fiqa", "scaleface"])
def test_branch_estimators_reject_foreign_modules(name):
    with pytest.raises(ValueError, match=f"quality_branch='{name}'"):
        create_quality_estimator(name, backbone=nn.Linear(4, 4))


@pytest.mark.parametrize("name", list_quality())
def test_scores_are_float32_for_a_bfloat16_backbone(name):
    backbone = backbone_for(name).to(torch.bfloat16)
    estimator = create_quality_estimator(name, backbone=backbone)
    with torch.no_grad():
        scores = estimator(images().to(torch.bfloat16))
    assert scores.dtype == torch.float32
    assert scores.shape == (4,)


@pytest.mark.parametrize("name", list_quality())
def test_estimator_keeps_caller_mode_and_gradients(name):
    # "lin": an untrained net in eval mode saturates the default sigm_mul, whose gradient is then zero
    options = {"scale_activation": "lin"} if BRANCH_FOR[name] == "scaleface" else {}
    estimator = create_quality_estimator(name, backbone=backbone_for(name, **options))
    estimator.train()
    assert estimator.backbone.training
    estimator.eval()
    assert not estimator.backbone.training
    x = images().requires_grad_(True)
    estimator(x).sum().backward()
    assert x.grad is not None
    assert x.grad.abs().sum() > 0


def test_create_quality_estimator_rejects_unknown_name():
    with pytest.raises(KeyError, match="feature_norm"):
        create_quality_estimator("feature_nrom", backbone=nn.Identity())


def test_quality_registry_is_the_public_one():
    assert QUALITY.names() == list_quality()
