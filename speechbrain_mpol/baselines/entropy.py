"""Mask entropy minimization (TENT-like): the naive way to make masks "confident"."""

from __future__ import annotations

import torch

from speechbrain_mpol.adapter import Adapter
from speechbrain_mpol.hooks import MaskView
from speechbrain_mpol.objective import masked_mean

_EPS = 1e-4


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Binary entropy in nats of values read as probabilities (clamped to [eps, 1 - eps]).

    Example
    -------
    >>> round(float(binary_entropy(torch.tensor(0.5))), 4)
    0.6931
    """
    p = p.clamp(_EPS, 1 - _EPS)
    return -(p * p.log() + (1 - p) * (1 - p).log())


class EntropyAdapter(Adapter):
    """Minimize the mean binary entropy of the mask's effective linear gain.

    Unlike MPol, nothing anchors the distribution: entropy is lowest when every bin goes to 0
    or 1, whichever is nearer, so the mask can collapse toward all-pass or all-stop.
    Schedule and parameter selection as in :class:`~speechbrain_mpol.adapter.Adapter`.
    """

    def loss(self, view: MaskView) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean binary entropy of ``clamp(linear gain, 0, 1)`` over valid frames."""
        entropy = masked_mean(binary_entropy(view.linear_gain()), view.lengths)
        return entropy.mean(), {"entropy": entropy.detach()}
