"""The continual-mode rollback guard: drop an update that made the objective worse than the
source weights do on the same audio, and go back to the last good weights.

Continual adaptation can drift: a run of unusual utterances can push the adapted weights where
the unsupervised objective, measured on the incoming audio, is worse than the unadapted model's.
Before each update the adapter measures the objective on the current crop twice, under the
current and under the source weights; :meth:`RollbackGuard.drifted` decides, and the guard keeps
the last weights that passed.
"""

from __future__ import annotations

import copy

import torch

from speechbrain_mpol.weights import changed_tensors


class RollbackGuard:
    """Decide whether to drop an update, and remember the last good weights.

    Arguments
    ---------
    threshold : float
        An update is dropped when the current weights' objective exceeds the source weights'
        by more than this fraction: ``current > (1 + threshold) * source``.

    Example
    -------
    >>> guard = RollbackGuard(0.5)
    >>> guard.drifted(current=1.4, source=1.0), guard.drifted(current=1.6, source=1.0)
    (False, True)
    """

    def __init__(self, threshold: float):
        self.threshold = float(threshold)
        self.good_state: dict[str, torch.Tensor] | None = None  # None: the source weights

    def drifted(self, current: float, source: float) -> bool:
        """True if the objective under the current weights is too far above the source's."""
        return current > (1.0 + self.threshold) * source

    def commit(self, model: torch.nn.Module) -> None:
        """Remember the model's weights as the last good ones."""
        self.good_state = copy.deepcopy(model.state_dict())

    def state(self, source_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        """The last good weights as their difference to the source (None: the source)."""
        if self.good_state is None:
            return None
        return changed_tensors(self.good_state, source_state)

    def load_state(
        self, state: dict[str, torch.Tensor] | None, source_state: dict[str, torch.Tensor]
    ) -> None:
        """Restore what :meth:`state` returned."""
        self.good_state = None if state is None else {**copy.deepcopy(source_state), **state}
