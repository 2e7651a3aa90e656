"""Mask entropy minimization (TENT-like): the naive way to make masks "confident"."""

from __future__ import annotations

import torch

from speechbrain_mpol.hooks import MaskView
from speechbrain_mpol.objective import masked_mean

#: Probabilities are clamped to [PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR] before the logs.
PROBABILITY_FLOOR = 1e-4


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Binary entropy in nats of values read as probabilities.

    Example
    -------
    >>> round(float(binary_entropy(torch.tensor(0.5))), 4)
    0.6931
    """
    p = p.clamp(PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    return -(p * p.log() + (1 - p) * (1 - p).log())


class MaskEntropy:
    """Objective: the mean binary entropy of the mask's effective linear gain.

    Unlike MPol, nothing anchors the distribution: entropy is lowest when every bin goes to 0
    or 1, whichever is nearer, so the mask can collapse toward all-pass or all-stop. Used with
    :class:`~speechbrain_mpol.adapter.Adapter` exactly like the MPol objective.

    Example
    -------
    >>> mask = torch.full((1, 4, 3), 0.5, requires_grad=True)
    >>> view = MaskView(mask, torch.ones(1, 4, 3), mask, None, lambda m: m, lambda g: g)
    >>> loss, parts = MaskEntropy()(view)
    >>> round(float(loss.detach()), 4), sorted(parts)
    (0.6931, ['entropy'])
    """

    def __call__(self, view: MaskView) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean binary entropy of ``clamp(linear gain, 0, 1)`` over valid frames."""
        entropy = masked_mean(binary_entropy(view.linear_gain()), view.lengths)
        return entropy.mean(), {"entropy": entropy.detach()}
