"""Source: the pretrained model, no adaptation (the reference every table compares against)."""

from __future__ import annotations

from torch import nn

from speechbrain_mpol.adapter import Adapter
from speechbrain_mpol.hooks import MaskHook


class SourceAdapter(Adapter):
    """Enhance with the source weights only; nothing is ever updated.

    Arguments
    ---------
    enhancer, hook
        See :class:`~speechbrain_mpol.adapter.Adapter`.
    **ignored
        Schedule options of other methods (``params``, ``lr``...), accepted so every method
        can be built from the same YAML block.
    """

    def __init__(self, enhancer: nn.Module, hook: MaskHook, **ignored):
        sample_rate = ignored.get("sample_rate", 16000)
        super().__init__(enhancer, hook, params=(), sample_rate=sample_rate)

    def loss(self, view):
        """No adaptation loss: the source model is never updated."""
        raise RuntimeError("SourceAdapter has no adaptation loss")
