"""Inference engines: the `core` step that turns a batch of model inputs into logits."""

from imagenet_zoo.engines.base import Engine

__all__ = ["Engine"]
