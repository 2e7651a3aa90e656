"""Weight snapshots: run with other weights for a while, and what differs from the source.

Comparing the adapted model with the source (Source predictions beside adapted ones, the
rollback guard, RemixIT's teacher) means running the same modules with other weights and
putting the own ones back, and a stream's state is only the weights that moved.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def swapped_weights(module: nn.Module, state: dict[str, torch.Tensor]) -> Iterator[None]:
    """Run the body with ``state`` loaded into ``module``; its own weights come back afterwards.

    Example
    -------
    >>> net = nn.Linear(1, 1)
    >>> zeros = {k: torch.zeros_like(v) for k, v in net.state_dict().items()}
    >>> before = net.weight.detach().clone()
    >>> with swapped_weights(net, zeros):
    ...     float(net.weight.detach())
    0.0
    >>> bool(torch.equal(net.weight, before))
    True
    """
    own = copy.deepcopy(module.state_dict())
    module.load_state_dict(state)
    try:
        yield
    finally:
        module.load_state_dict(own)


def changed_tensors(
    state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Copies of the entries of ``state`` that differ from ``reference``.

    Example
    -------
    >>> changed_tensors({"a": torch.ones(1), "b": torch.zeros(1)},
    ...                 {"a": torch.ones(1), "b": torch.ones(1)})
    {'b': tensor([0.])}
    """
    return {k: v.detach().clone() for k, v in state.items() if not torch.equal(v, reference[k])}
