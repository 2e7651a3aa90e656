"""Test-time adaptation of a pretrained enhancer through its mask: the MPol step.

Shaped like ``tent``: :func:`configure_model` freezes the network except a few selected
weights; an :class:`Adapter` owns the enhancer, the hook on its mask, an unsupervised
``objective`` (MPol's :class:`~speechbrain_mpol.objective.MPolObjective`, or a baseline's), the
optimizer and a snapshot of the source weights. ``forward`` enhances a batch and adapts on it;
``reset()`` restores the source, bit for bit.

Two schedules:

- ``continual`` (the authors'): predict-then-adapt. Each batch is enhanced with the current
  weights (the returned output), then one forward/backward of the objective on its first
  ``crop_seconds`` accumulates gradients; every ``accumulation`` utterances the gradient norm is
  clipped, one optimizer step is taken and every weight is pulled ``source_pull`` of the way
  back to the source. When the crop is the whole utterance, the pass with gradient is also the
  prediction (the weights only change after it).
- ``episodic``: reset to the source, take ``steps`` updates on the batch, then enhance it.

SpeechBrain traps handled here: ``from_hparams`` freezes every parameter and calls ``eval()``;
``Brain.evaluate`` runs under ``torch.no_grad()``; a cuDNN LSTM cannot backpropagate in eval
mode. The adapter re-enables gradients for the selected parameters only, turns gradients on
around its own pass, and disables cuDNN for it, while the modules stay in eval mode (BatchNorm
keeps its source statistics, dropout stays off).
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from collections.abc import Callable, Sequence

import torch
from torch import nn

from speechbrain_mpol.gate import ShiftGate, source_scores
from speechbrain_mpol.hooks import MaskHook, MaskView
from speechbrain_mpol.inference import enhance, is_chunked, run_enhancer
from speechbrain_mpol.rollback import RollbackGuard
from speechbrain_mpol.weights import changed_tensors, swapped_weights

#: An unsupervised objective: one pass's mask view -> (scalar loss, per-utterance parts [B]).
Objective = Callable[[MaskView], tuple[torch.Tensor, dict[str, torch.Tensor]]]


def select_parameters(
    module: nn.Module, patterns: Sequence[str]
) -> list[tuple[str, nn.Parameter]]:
    """Parameters of ``module`` whose names match any of ``patterns`` (regular expressions).

    Arguments
    ---------
    module : torch.nn.Module
        The network.
    patterns : sequence of str
        Regular expressions searched in the dotted parameter names (``re.search``).

    Returns
    -------
    list of (name, parameter)
        The selected parameters, in the module's order.

    Example
    -------
    >>> net = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
    >>> [name for name, _ in select_parameters(net, [r"^1\\."])]
    ['1.weight', '1.bias']
    """
    compiled = [re.compile(p) for p in patterns]
    chosen = [(n, p) for n, p in module.named_parameters() if any(c.search(n) for c in compiled)]
    if patterns and not chosen:
        names = ", ".join(n for n, _ in module.named_parameters())
        raise ValueError(f"no parameter matches {list(patterns)}; parameters are: {names}")
    return chosen


def configure_model(module: nn.Module, patterns: Sequence[str]) -> list[tuple[str, nn.Parameter]]:
    """Freeze ``module`` except the parameters matching ``patterns``; keep it in eval mode.

    Returns
    -------
    list of (name, parameter)
        The parameters left trainable (see :func:`select_parameters`).

    Example
    -------
    >>> net = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
    >>> _ = configure_model(net, [r"^1\\."])
    >>> [n for n, p in net.named_parameters() if p.requires_grad], net.training
    (['1.weight', '1.bias'], False)
    """
    chosen = select_parameters(module, patterns)
    module.requires_grad_(False)
    for _, p in chosen:
        p.requires_grad_(True)
    module.eval()
    return chosen


def crop_batch(
    wavs: torch.Tensor, lengths: torch.Tensor, max_samples: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the first ``max_samples`` samples of each utterance, with updated relative lengths.

    Example
    -------
    >>> w, l = crop_batch(torch.zeros(2, 100), torch.tensor([1.0, 0.3]), 50)
    >>> w.shape, l.tolist()
    (torch.Size([2, 50]), [1.0, 0.6000000238418579])
    """
    total = wavs.shape[1]
    if max_samples is None or total <= max_samples:
        return wavs, lengths
    absolute = (lengths * total).clamp(max=max_samples)
    return wavs[:, :max_samples], absolute / max_samples


class Adapter(nn.Module):
    """Enhance and adapt: a pretrained enhancer, its mask hook, an objective, a schedule.

    Arguments
    ---------
    enhancer : speechbrain.inference.interfaces.Pretrained
        A loaded enhancer (``enhance_batch`` or ``separate_batch``, and ``mods``).
    hook : MaskHook
        The hook attached to the enhancer's mask.
    objective : callable, optional
        Maps a :class:`~speechbrain_mpol.hooks.MaskView` to ``(loss, parts)``, e.g.
        :class:`~speechbrain_mpol.objective.MPolObjective` (None only with no ``params``, or
        in a subclass with its own update rule).
    params : sequence of str
        Regular expressions selecting the adapted parameters by name; none: never adapt (the
        Source).
    opt_class : callable
        Builds the optimizer from a parameter list (``!name:torch.optim.AdamW`` with ``lr``).
    mode : str
        ``"continual"`` or ``"episodic"``.
    steps : int
        Updates per batch in episodic mode.
    accumulation : int
        Utterances whose gradients are accumulated per update in continual mode.
    clip_grad_norm : float or None
        Gradient-norm clipping before each step.
    source_pull : float
        Fraction of the way back to the source weights after each continual update (0: none).
    crop_seconds : float or None
        Length of the adaptation pass's crop of each utterance.
    sample_rate : int
        Sample rate of the waveforms.
    chunk_seconds : float or None
        Single utterances longer than this are enhanced chunk by chunk (bounded memory);
        adaptation always uses the crop.
    rollback_threshold : float or None
        Continual-mode guard (:class:`~speechbrain_mpol.rollback.RollbackGuard`); None: off.
    gate_threshold : float or None
        Shift gate (:class:`~speechbrain_mpol.gate.ShiftGate`): an utterance is adapted on only
        when the objective under the source weights exceeds this calibrated in-domain level;
        otherwise it is enhanced without adaptation (episodic: by the source weights). None: off.

    Example
    -------
    >>> from speechbrain.lobes.models.MetricGAN import EnhancementGenerator
    >>> from speechbrain_mpol.hooks import MetricGANMaskHook
    >>> from speechbrain_mpol.objective import MPolObjective
    >>> class Tiny(nn.Module):  # the smallest stand-in for SpectralMaskEnhancement
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.mods = nn.ModuleDict({"enhance_model": EnhancementGenerator()})
    ...     def enhance_batch(self, wavs, lengths):
    ...         feats = torch.log1p(wavs.abs().unfold(1, 257, 128))
    ...         return self.mods.enhance_model(feats, lengths=lengths).mean(-1)
    >>> tiny = Tiny()
    >>> adapter = Adapter(tiny, MetricGANMaskHook(tiny.mods.enhance_model), MPolObjective(),
    ...                   params=["linear2"], accumulation=1)
    >>> before = tiny.mods.enhance_model.linear2.weight.clone()
    >>> out = adapter(torch.randn(1, 4000))
    >>> bool((tiny.mods.enhance_model.linear2.weight != before).any())
    True
    >>> adapter.reset()
    >>> bool(torch.equal(tiny.mods.enhance_model.linear2.weight, before))
    True
    """

    def __init__(
        self,
        enhancer: nn.Module,
        hook: MaskHook,
        objective: Objective | None = None,
        params: Sequence[str] = (),
        opt_class: Callable[..., torch.optim.Optimizer] | None = None,
        mode: str = "continual",
        steps: int = 1,
        accumulation: int = 8,
        clip_grad_norm: float | None = 0.1,
        source_pull: float = 0.2,
        crop_seconds: float | None = 4.0,
        sample_rate: int = 16000,
        chunk_seconds: float | None = 30.0,
        rollback_threshold: float | None = None,
        gate_threshold: float | None = None,
    ):
        super().__init__()
        if mode not in ("continual", "episodic"):
            raise ValueError(f"mode must be 'continual' or 'episodic', not {mode!r}")
        self.enhancer = enhancer
        self.model = enhancer.mods
        self.hook = hook
        self.objective = objective
        self.mode = mode
        self.steps = int(steps)
        self.accumulation = max(1, int(accumulation))
        self.clip_grad_norm = clip_grad_norm
        self.source_pull = float(source_pull)
        self.sample_rate = int(sample_rate)
        self.chunk_seconds = chunk_seconds
        self.crop_samples = None if crop_seconds is None else int(crop_seconds * sample_rate)
        self.opt_class = opt_class or (lambda p: torch.optim.AdamW(p, lr=5e-4))
        if params and objective is None and type(self).forward is Adapter.forward:
            raise ValueError("an Adapter that adapts parameters needs an objective")
        self.named_params = configure_model(self.model, params)
        self.param_names = [name for name, _ in self.named_params]
        self.source_state = copy.deepcopy(self.model.state_dict())
        self.guard = None if rollback_threshold is None else RollbackGuard(rollback_threshold)
        self.gate = None if gate_threshold is None else ShiftGate(gate_threshold)
        self.optimizer = self._new_optimizer()
        self.pending = 0  # utterances accumulated since the last update
        self.counts: Counter = Counter()
        self.last_parts: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ the method
    def forward(self, wavs: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Enhance a batch ``[B, samples]`` (relative ``lengths`` ``[B]``) and adapt on it."""
        if lengths is None:
            lengths = torch.ones(wavs.shape[0], device=wavs.device)
        if self.optimizer is None:
            return self.predict(wavs, lengths)
        if self.gate is not None and not self.gate.opens(source_scores(self, wavs, lengths)).any():
            # audio the source model finds familiar is its business: enhanced by the source
            # weights, whatever the stream has adapted so far (continual mode)
            self.counts["forward"] += 1
            self.counts["gated"] += wavs.shape[0]
            return self.predict_source(wavs, lengths)
        if self.mode == "episodic":
            self.reset()
            for _ in range(self.steps):
                if self.forward_and_backward(wavs, lengths)[0]:
                    self.step()
                else:
                    self.optimizer.zero_grad(set_to_none=True)
            return self.predict(wavs, lengths)
        if self.crop_is_whole(wavs):
            ok, out = self.forward_and_backward(wavs, lengths)
        else:
            out = self.predict(wavs, lengths)
            ok = self.forward_and_backward(wavs, lengths)[0]
        if ok:
            self.pending += wavs.shape[0]
        if self.pending >= self.accumulation:
            if self.guard is not None and self.drifted(wavs, lengths):
                self.counts["rollbacks"] += 1
                self.restore(self.guard.good_state or self.source_state)
            else:
                self.step()
                self.pull_to_source()
                if self.guard is not None:
                    self.guard.commit(self.model)
            self.pending = 0
        return out

    def forward_and_backward(
        self, wavs: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[bool, torch.Tensor]:
        """One forward/backward of the objective on the crop, gradients accumulated.

        Returns ``(ok, output)``: ``ok`` is False when the loss was not finite (no backward);
        ``output`` is the detached enhanced crop, the current weights' prediction.
        """
        wavs, lengths = crop_batch(wavs, lengths, self.crop_samples)
        with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
            out = run_enhancer(self.enhancer, wavs, lengths, self.sample_rate).detach()
            loss, self.last_parts = self.objective(self.view(lengths))
            self.counts["forward"] += 1
            ok = bool(torch.isfinite(loss))
            if ok:
                loss.backward()
                self.counts["backward"] += 1
            else:
                self.counts["skipped_nonfinite"] += 1
        self.hook.clear()
        return ok, out

    def step(self) -> None:
        """Clip, step, zero the gradients; skip the step if a gradient is not finite."""
        params = [p for _, p in self.named_params]
        grads = [p.grad for p in params if p.grad is not None]
        if grads and all(torch.isfinite(g).all() for g in grads):
            if self.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
            self.optimizer.step()
            self.counts["updates"] += 1
        elif grads:
            self.counts["skipped_nonfinite"] += 1
        self.optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def pull_to_source(self) -> None:
        """Move every floating-point weight ``source_pull`` of the way back to the source."""
        if self.source_pull <= 0:
            return
        for name, value in self.model.state_dict().items():
            if value.is_floating_point():
                value.lerp_(self.source_state[name].to(value.device), self.source_pull)

    def reset(self) -> None:
        """Restore the source weights and a fresh optimizer (bit for bit)."""
        self.restore(self.source_state)
        if self.guard is not None:
            self.guard.good_state = None

    def drifted(self, wavs: torch.Tensor, lengths: torch.Tensor) -> bool:
        """The guard's verdict on the crop: objective under the current vs the source weights."""
        wavs, lengths = crop_batch(wavs, lengths, self.crop_samples)
        current = float(sum(self.measure(wavs, lengths).values()).mean())
        with swapped_weights(self.model, self.source_state):
            source = float(sum(self.measure(wavs, lengths).values()).mean())
        self.counts["forward"] += 2
        return self.guard.drifted(current, source)

    # ------------------------------------------------------------------ passes
    def view(self, lengths: torch.Tensor) -> MaskView:
        """The mask view of the last pass, with the batch's relative lengths."""
        view = self.hook.view()
        view.lengths = lengths
        return view

    @torch.no_grad()
    def predict(self, wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Enhance with the current weights, no gradient."""
        self.counts["forward"] += 1
        out = enhance(self.enhancer, wavs, lengths, self.sample_rate, self.chunk_seconds)
        self.hook.clear()
        return out

    @torch.no_grad()
    def predict_source(self, wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Enhance with the source weights; the adapted weights are back afterwards."""
        with swapped_weights(self.model, self.source_state):
            out = enhance(self.enhancer, wavs, lengths, self.sample_rate, self.chunk_seconds)
        self.hook.clear()
        return out

    @torch.no_grad()
    def measure(
        self, wavs: torch.Tensor, lengths: torch.Tensor, objective: Objective | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-utterance parts of ``objective`` (default: the adapter's) under the current
        weights, without updating anything."""
        run_enhancer(self.enhancer, wavs, lengths, self.sample_rate)
        _, parts = (objective or self.objective)(self.view(lengths))
        self.hook.clear()
        return parts

    def crop_is_whole(self, wavs: torch.Tensor) -> bool:
        """True if the adaptation crop is the whole batch, enhanced in one piece."""
        samples = wavs.shape[1]
        fits = self.crop_samples is None or samples <= self.crop_samples
        return fits and not is_chunked(samples, self.sample_rate, self.chunk_seconds)

    # ------------------------------------------------------------------ state
    def _new_optimizer(self) -> torch.optim.Optimizer | None:
        params = [p for _, p in self.named_params]
        return self.opt_class(params) if params else None

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        """Load ``state``, drop gradients and start a fresh optimizer."""
        self.model.load_state_dict(state)
        self.optimizer = self._new_optimizer()
        self.pending = 0
        for _, p in self.named_params:
            p.grad = None

    def adapted_state(self) -> dict:
        """Everything a stream carries from one utterance to the next, and nothing else.

        The weights that differ from the source (the adapted ones), the optimizer state, the
        accumulated gradients, the counters and the guard's last good weights: restoring it
        with :meth:`load_adapted_state` on a freshly built adapter continues the stream exactly.
        """
        return {
            "changed": changed_tensors(self.model.state_dict(), self.source_state),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()) if self.optimizer else None,
            "grads": {n: p.grad.detach().clone() for n, p in self.named_params
                      if p.grad is not None},
            "pending": self.pending,
            "counts": dict(self.counts),
            "guard": self.guard.state(self.source_state) if self.guard else None,
        }

    def load_adapted_state(self, state: dict) -> None:
        """Continue a stream from :meth:`adapted_state`."""
        self.model.load_state_dict({**self.source_state, **state["changed"]})
        if self.optimizer is not None and state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        for name, p in self.named_params:
            p.grad = state["grads"].get(name)
        self.pending = state["pending"]
        self.counts = Counter(state["counts"])
        if self.guard is not None:
            self.guard.load_state(state["guard"], self.source_state)

