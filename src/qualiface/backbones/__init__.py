"""Backbones: insightface iResNet and MobileFaceNet, AdaFace IR / IR-SE, UniTSFace LResNet-E-IR."""

from qualiface.backbones import ir, iresnet, lresnet, mobilefacenet  # noqa: F401  (registers the entrypoints)
from qualiface.backbones.base import Backbone, Preprocessing

__all__ = ["Backbone", "Preprocessing"]
