"""Backbones: insightface iResNet, MobileFaceNet and ViT, AdaFace IR / IR-SE, UniTSFace LResNet-E-IR."""

from qualiface.backbones.base import Backbone, Preprocessing
from qualiface.registry import import_submodules

import_submodules(__name__, __path__)  # every module registers its entrypoints

__all__ = ["Backbone", "Preprocessing"]
