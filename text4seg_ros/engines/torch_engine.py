"""The ``torch`` engine: the model's own PyTorch modules, eager; the reference for the others.

Prefix: the backbone's processor and ``model.model`` over the prompt prefix
(:meth:`~text4seg_ros.model.registry.Backbone.encode_prefix`); steps: the language model with a
``transformers`` ``DynamicCache``, the output head at the selected positions only
(:meth:`~text4seg_ros.model.registry.Backbone.make_step`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .base import Backbone, Prefix


class TorchEngine:
    """Eager PyTorch on the model's device and dtype (see the module doc)."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, backbone: Backbone) -> None:
        self.model, self.backbone = model, backbone

    @property
    def device(self) -> torch.device:
        """Where the model's parameters (and the decoder's inputs) live."""
        return self.model.device

    def encode_prefix(
        self, processor: Any, image: np.ndarray, system: str | None, question: str | None = None
    ) -> Prefix:
        """Vision tower + projector + prompt prefix through the language model (batch 1)."""
        return self.backbone.encode_prefix(self.model, processor, image, system, question)

    def encode_prefixes(
        self, processor: Any, image: np.ndarray, system: str | None, questions: Sequence[str]
    ) -> Prefix:
        """Question first: the goals' prefixes of one frame in one pass, stacked."""
        return self.backbone.encode_prefixes(self.model, processor, image, system, questions)

    def cache(self, prefix: Prefix, batch: int) -> Any:
        """A ``DynamicCache`` of the prefix for ``batch`` rows."""
        return prefix.cache(batch)

    def make_step(self, prefix: Prefix) -> Any:
        """The backbone's step (``selects``; caches sliced by the decoder's ``select_cache``)."""
        return self.backbone.make_step(self.model, prefix)


__all__ = ["TorchEngine"]
