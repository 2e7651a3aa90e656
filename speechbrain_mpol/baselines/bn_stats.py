"""BatchNorm statistics adaptation: re-estimate running mean/variance on test audio.

The classic test-time adaptation for BatchNorm models (Schneider et al., 2020): no loss and no
gradient; each incoming utterance updates the BatchNorm running statistics (exponential moving
average with ``momentum``) and is then enhanced with them.
"""

from __future__ import annotations

import torch
from torch import nn

from speechbrain_mpol.adapter import Adapter
from speechbrain_mpol.hooks import MaskHook
from speechbrain_mpol.inference import run_enhancer


class BNStatsAdapter(Adapter):
    """Update BatchNorm running statistics from each utterance, then enhance it.

    Arguments
    ---------
    enhancer, hook
        See :class:`~speechbrain_mpol.adapter.Adapter`.
    momentum : float
        Weight of the new utterance in the running statistics (PyTorch's BN momentum).
    mode : str
        ``"continual"`` (statistics carry over) or ``"episodic"`` (reset per utterance).
    sample_rate : int
        Sample rate of the waveforms.
    chunk_seconds : float or None
        See :class:`~speechbrain_mpol.adapter.Adapter`.
    """

    def __init__(
        self,
        enhancer: nn.Module,
        hook: MaskHook,
        momentum: float = 0.1,
        mode: str = "continual",
        sample_rate: int = 16000,
        chunk_seconds: float | None = 30.0,
    ):
        super().__init__(enhancer, hook, mode=mode, sample_rate=sample_rate,
                         chunk_seconds=chunk_seconds)
        self.momentum = float(momentum)
        batchnorm = nn.modules.batchnorm._BatchNorm
        self.norms = [m for m in self.model.modules() if isinstance(m, batchnorm)]
        if not self.norms:
            raise ValueError("BNStatsAdapter: the model has no BatchNorm layer")

    @torch.no_grad()
    def forward(self, wavs: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Update the statistics on the batch (no gradient), then enhance it."""
        if lengths is None:
            lengths = torch.ones(wavs.shape[0], device=wavs.device)
        if self.mode == "episodic":
            self.reset()
        saved = [(m.momentum, m.training) for m in self.norms]
        for m in self.norms:
            m.momentum = self.momentum
            m.train()
        try:
            run_enhancer(self.enhancer, wavs, lengths, self.sample_rate)
            self.counts["forward"] += 1
            self.counts["updates"] += 1
        finally:
            for m, (momentum, training) in zip(self.norms, saved, strict=True):
                m.momentum = momentum
                m.train(training)
            self.hook.clear()
        return self.predict(wavs, lengths)
