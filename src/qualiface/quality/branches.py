"""Quality branches: small modules that attach to any backbone and predict one quality value per image.

A branch is a registered class (``QUALITY_BRANCHES``) that says everything the rest of the library needs to know
about it: the sub-module name it is stored under (its state-dict prefix), the keyword under which
:meth:`~qualiface.backbones.base.Backbone.forward_aux` returns its output (the keyword the matching head takes),
what it reads (the raw embedding or the flattened final feature map, the *bottleneck*), the constructor options it
accepts, and the quality method a loaded model reports for it. The trainer (which modules stay trainable when the
backbone is frozen, which outputs a head needs), the loader, the exporter and the demo ask this registry instead of
naming branches.

Every backbone family (iResNet, IR / IR-SE, MobileFaceNet, LResNet-E-IR) exposes ``forward_bottleneck`` and
``embed``, so every branch attaches to every family.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from torch import Tensor, nn

from qualiface.registry import QUALITY_BRANCHES


class QualityBranch:
    """Description and behaviour of one kind of quality branch (used as a class; never instantiated)."""

    name: ClassVar[str]
    #: Attribute (and state-dict prefix) of the branch module on the backbone.
    module_name: ClassVar[str]
    #: Keyword of ``forward_aux``'s output dict, the keyword the matching head takes.
    aux_key: ClassVar[str]
    #: What the branch reads.
    reads: ClassVar[Literal["embedding", "bottleneck"]]
    #: Constructor options (backbone keyword arguments) the branch accepts, with their defaults.
    options: ClassVar[dict[str, Any]] = {}
    #: Human-readable meaning of the score.
    meaning: ClassVar[str] = ""

    @classmethod
    def build(cls, embedding_dim: int, bottleneck_dim: int, **options: Any) -> nn.Module:
        """The branch module for a backbone of these sizes."""
        raise NotImplementedError

    @classmethod
    def score(cls, module: nn.Module, embeddings: Tensor, bottleneck: Tensor) -> Tensor:
        """One value per image ``(B,)``, higher = better."""
        raise NotImplementedError


@QUALITY_BRANCHES.register("cr_fiqa")
class CRFIQABranch(QualityBranch):
    """CR-FIQA's ``qs``: ``Linear(embedding_dim, 1)`` on the raw embedding (not detached), regressing the
    certainty ratio; its output is unbounded."""

    name = "cr_fiqa"
    module_name = "qs"
    aux_key = "quality"
    reads = "embedding"
    meaning = "CR-FIQA regressed certainty ratio (qs)"

    @classmethod
    def build(cls, embedding_dim: int, bottleneck_dim: int, **options: Any) -> nn.Module:
        return nn.Linear(embedding_dim, 1)

    @classmethod
    def score(cls, module: nn.Module, embeddings: Tensor, bottleneck: Tensor) -> Tensor:
        return module(embeddings).squeeze(1)


@QUALITY_BRANCHES.register("scaleface")
class ScaleFaceBranch(QualityBranch):
    """ScaleFace's ``scale_predictor``: :class:`~qualiface.backbones.layers.MLPScaleHead` on the float32
    flattened bottleneck, predicting the per-sample scale ``s(x)`` (higher = more certain)."""

    name = "scaleface"
    module_name = "scale_predictor"
    aux_key = "scale"
    reads = "bottleneck"
    options: ClassVar[dict[str, Any]] = {"scale_activation": "sigm_mul", "scale_coefficient": 32.0}
    meaning = "ScaleFace predicted scale s(x)"

    @classmethod
    def build(cls, embedding_dim: int, bottleneck_dim: int, **options: Any) -> nn.Module:
        from qualiface.backbones.layers import MLPScaleHead

        return MLPScaleHead(
            (bottleneck_dim, 512, 1), activation=options["scale_activation"], coefficient=options["scale_coefficient"]
        )

    @classmethod
    def score(cls, module: nn.Module, embeddings: Tensor, bottleneck: Tensor) -> Tensor:
        return module(bottleneck.flatten(1).float()).squeeze(1)


def get_branch(name: str) -> type[QualityBranch]:
    """The registered branch ``name`` (``KeyError`` listing the known ones)."""
    return QUALITY_BRANCHES.get(name)  # type: ignore[return-value]


def branch_names() -> list[str]:
    """Names of the registered quality branches."""
    return QUALITY_BRANCHES.names()


def branch_modules() -> tuple[str, ...]:
    """Module names of every registered branch (trained even when the backbone is frozen)."""
    return tuple(get_branch(name).module_name for name in branch_names())


def branch_for_aux_key(aux_key: str) -> type[QualityBranch] | None:
    """The branch whose output is returned under ``aux_key`` (``"quality"``, ``"scale"``), if any."""
    for name in branch_names():
        branch = get_branch(name)
        if branch.aux_key == aux_key:
            return branch
    return None
