"""Test-time adapters: the MPol adapter and the machinery every adaptation method shares.

Shaped like ``tent``: one class owns the enhancer, the optimizer and a snapshot of the source
weights; ``forward`` enhances a batch and adapts on it; ``reset()`` restores the source model.

Two schedules are supported:

- ``continual`` (the authors' default): predict-then-adapt. Each batch is first enhanced with
  the current weights (the returned output), then one forward/backward on its first
  ``crop_seconds`` accumulates gradients; every ``accumulation`` utterances the gradient norm
  is clipped, one optimizer step is taken and every weight is pulled back toward the source
  (``theta <- (1 - source_pull) * theta + source_pull * theta_source``).
- ``episodic``: reset to the source, take ``steps`` updates on the batch, then enhance it.

SpeechBrain traps handled here: ``from_hparams`` freezes every parameter and calls ``eval()``;
``Brain.evaluate`` runs under ``torch.no_grad()``; a cuDNN LSTM cannot backpropagate in eval
mode. The adapter re-enables gradients for the selected parameters only, turns gradients on
around its own update, and disables cuDNN for the adaptation pass while the modules stay in
eval mode (so BatchNorm keeps its source statistics and dropout stays off).
"""

from __future__ import annotations

import copy
import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence

import torch
from torch import nn

from speechbrain_mpol.chunking import enhance_chunked
from speechbrain_mpol.hooks import MaskHook, MaskView, run_enhancer
from speechbrain_mpol.objective import reference_gain, sign_penalty, wasserstein_1d

logger = logging.getLogger(__name__)


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


@torch.no_grad()
def measure(
    enhancer: nn.Module,
    hook: MaskHook,
    loss_fn: Callable[[MaskView], tuple[torch.Tensor, dict[str, torch.Tensor]]],
    wavs: torch.Tensor,
    lengths: torch.Tensor,
    sample_rate: int | None = None,
) -> dict[str, torch.Tensor]:
    """Per-utterance terms of ``loss_fn`` for one no-gradient pass of ``enhancer``.

    Arguments
    ---------
    enhancer : torch.nn.Module
        The enhancer (``enhance_batch(wavs, lengths)``).
    hook : MaskHook
        Its attached mask hook.
    loss_fn : callable
        Maps a :class:`~speechbrain_mpol.hooks.MaskView` to ``(loss, parts)``.
    wavs, lengths : torch.Tensor
        The batch.
    sample_rate : int, optional
        Rate of ``wavs`` (resampled to the model's if it differs).

    Returns
    -------
    dict of str to torch.Tensor
        ``parts`` of the loss, ``[B]`` each.
    """
    run_enhancer(enhancer, wavs, lengths, sample_rate)
    view = hook.view()
    view.lengths = lengths
    _, parts = loss_fn(view)
    hook.clear()
    return parts


class Adapter(nn.Module):
    """Shared state and schedule of a test-time adaptation method; subclasses define the loss.

    Arguments
    ---------
    enhancer : speechbrain.inference.interfaces.Pretrained
        A loaded enhancer with ``enhance_batch(wavs, lengths)`` and ``mods``.
    hook : MaskHook
        The hook attached to the enhancer's mask.
    params : sequence of str
        Regular expressions selecting the adapted parameters by name (empty: adapt nothing).
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
        Fraction of the way back to the source weights after each continual update (0 = none).
    crop_seconds : float or None
        Length of the adaptation pass's crop of each utterance.
    sample_rate : int
        Sample rate of the waveforms.
    chunk_seconds : float or None
        Utterances longer than this are enhanced chunk by chunk with cross-faded overlaps
        (bounded memory for arbitrarily long files); adaptation always uses the crop.
    rollback_threshold : float or None
        Continual-mode guard: before each update, the loss under the current weights is
        compared with the loss under the source weights on the same crop; if it is more than
        ``(1 + rollback_threshold)`` times larger, the update is dropped and the weights roll
        back to the last good state (counted as ``rollbacks``). None disables the guard.
    """

    def __init__(
        self,
        enhancer: nn.Module,
        hook: MaskHook,
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
    ):
        super().__init__()
        if mode not in ("continual", "episodic"):
            raise ValueError(f"mode must be 'continual' or 'episodic', not {mode!r}")
        self.enhancer = enhancer
        self.model = enhancer.mods
        self.hook = hook
        self.mode = mode
        self.steps = int(steps)
        self.accumulation = max(1, int(accumulation))
        self.clip_grad_norm = clip_grad_norm
        self.source_pull = float(source_pull)
        self.sample_rate = int(sample_rate)
        self.chunk_seconds = chunk_seconds
        self.crop_samples = None if crop_seconds is None else int(crop_seconds * sample_rate)
        self.opt_class = opt_class or (lambda p: torch.optim.AdamW(p, lr=5e-4))

        self.named_params = select_parameters(self.model, params)
        self.param_names = [name for name, _ in self.named_params]
        for _, p in self.model.named_parameters():
            p.requires_grad_(False)
        for _, p in self.named_params:
            p.requires_grad_(True)
        self.model.eval()
        self.source_state = copy.deepcopy(self.model.state_dict())
        self.good_state = self.source_state
        self.rollback_threshold = rollback_threshold
        self.optimizer = self._new_optimizer()
        self.pending = 0  # utterances accumulated since the last update
        self.counts: Counter = Counter()
        self.last_parts: dict[str, torch.Tensor] = {}

    # ----------------------------------------------------------------- state
    def _new_optimizer(self) -> torch.optim.Optimizer | None:
        params = [p for _, p in self.named_params]
        return self.opt_class(params) if params else None

    def reset(self) -> None:
        """Restore the source weights and a fresh optimizer (bit for bit)."""
        self.restore(self.source_state)
        self.good_state = self.source_state

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        """Load ``state``, drop gradients and start a fresh optimizer."""
        self.model.load_state_dict(state)
        self.optimizer = self._new_optimizer()
        self.pending = 0
        for _, p in self.named_params:
            p.grad = None

    @torch.no_grad()
    def drifted(self, wavs: torch.Tensor, lengths: torch.Tensor) -> bool:
        """True if the current weights' loss on this crop exceeds the source's by the threshold."""
        wavs, lengths = crop_batch(wavs, lengths, self.crop_samples)
        current = float(self.loss_terms(wavs, lengths).mean())
        weights = copy.deepcopy(self.model.state_dict())
        self.model.load_state_dict(self.source_state)
        try:
            source = float(self.loss_terms(wavs, lengths).mean())
        finally:
            self.model.load_state_dict(weights)
        self.counts["forward"] += 2
        return current > (1.0 + self.rollback_threshold) * source

    def loss_terms(self, wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Per-utterance adaptation loss ``[B]`` with the current weights, no gradient."""
        parts = self.objective(wavs, lengths)
        return sum(parts.values())

    def resume_state(self) -> dict:
        """Everything a continual stream carries from one utterance to the next.

        Weights, optimizer state, accumulated gradients, counters and the last good state:
        restoring it with :meth:`load_resume_state` continues the stream exactly.
        """
        return {
            "model": copy.deepcopy(self.model.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()) if self.optimizer else None,
            "grads": {n: p.grad.detach().clone() for n, p in self.named_params
                      if p.grad is not None},
            "pending": self.pending,
            "counts": dict(self.counts),
            "good_state": None if self.good_state is self.source_state else self.good_state,
        }

    def load_resume_state(self, state: dict) -> None:
        """Continue a stream from :meth:`resume_state`."""
        self.model.load_state_dict(state["model"])
        if self.optimizer is not None and state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        for name, p in self.named_params:
            p.grad = state["grads"].get(name)
        self.pending = state["pending"]
        self.counts = Counter(state["counts"])
        self.good_state = state["good_state"] or self.source_state

    @torch.no_grad()
    def pull_to_source(self) -> None:
        """Move every floating-point weight ``source_pull`` of the way back to the source."""
        if self.source_pull <= 0:
            return
        for name, value in self.model.state_dict().items():
            if value.is_floating_point():
                value.lerp_(self.source_state[name].to(value.device), self.source_pull)

    # ----------------------------------------------------------------- passes
    @torch.no_grad()
    def enhance(self, wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Enhance with the current weights; single long utterances go chunk by chunk."""
        long = self.chunk_seconds and wavs.shape[1] > self.chunk_seconds * self.sample_rate
        if long and wavs.shape[0] == 1:
            ones = torch.ones(1, device=wavs.device)
            out = enhance_chunked(
                lambda w: run_enhancer(self.enhancer, w, ones, self.sample_rate),
                wavs[0], self.chunk_seconds, min(1.0, self.chunk_seconds / 4), self.sample_rate,
            )[None]
        else:
            out = run_enhancer(self.enhancer, wavs, lengths, self.sample_rate)
        self.hook.clear()
        return out

    @torch.no_grad()
    def predict(self, wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Enhance with the current weights, no gradient."""
        self.counts["forward"] += 1
        return self.enhance(wavs, lengths)

    @torch.no_grad()
    def predict_source(self, wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Enhance with the source weights, leaving the adapted weights in place afterwards."""
        current = copy.deepcopy(self.model.state_dict())
        self.model.load_state_dict(self.source_state)
        try:
            out = self.enhance(wavs, lengths)
        finally:
            self.model.load_state_dict(current)
        return out

    def loss(self, view: MaskView) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The adaptation loss of one pass; defined by each method."""
        raise NotImplementedError

    def objective(self, wavs: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        """The unsupervised loss terms per utterance with the current weights, no update."""
        return measure(self.enhancer, self.hook, self.loss, wavs, lengths, self.sample_rate)

    def backward_pass(
        self, wavs: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[bool, torch.Tensor]:
        """One forward/backward of the adaptation loss on the crop.

        Returns ``(ok, output)``: ``ok`` is False if the loss was not finite (no backward),
        ``output`` the detached enhanced crop. When the crop is the whole utterance, that output
        is exactly the prediction of the current weights, so continual adaptation needs no
        separate inference pass.
        """
        wavs, lengths = crop_batch(wavs, lengths, self.crop_samples)
        with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
            out = run_enhancer(self.enhancer, wavs, lengths, self.sample_rate).detach()
            view = self.hook.view()
            view.lengths = lengths
            loss, parts = self.loss(view)
            self.counts["forward"] += 1
            self.last_parts = parts
            ok = bool(torch.isfinite(loss))
            if ok:
                loss.backward()
                self.counts["backward"] += 1
            else:
                self.counts["skipped_nonfinite"] += 1
        self.hook.clear()
        return ok, out

    def crop_is_whole(self, wavs: torch.Tensor) -> bool:
        """True if the adaptation crop is the whole batch and it is enhanced in one piece."""
        samples = wavs.shape[1]
        chunked = self.chunk_seconds and samples > self.chunk_seconds * self.sample_rate
        return (self.crop_samples is None or samples <= self.crop_samples) and not chunked

    def update(self) -> None:
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

    def forward(self, wavs: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Enhance a batch ``[B, samples]`` and adapt on it, per the schedule.

        Arguments
        ---------
        wavs : torch.Tensor
            Noisy waveforms ``[B, samples]``.
        lengths : torch.Tensor, optional
            Relative lengths ``[B]`` (all ones if omitted).

        Returns
        -------
        torch.Tensor
            Enhanced waveforms ``[B, samples]``.
        """
        if lengths is None:
            lengths = torch.ones(wavs.shape[0], device=wavs.device)
        if self.optimizer is None:
            return self.predict(wavs, lengths)
        if self.mode == "episodic":
            self.reset()
            for _ in range(self.steps):
                if self.backward_pass(wavs, lengths)[0]:
                    self.update()
                else:
                    self.optimizer.zero_grad(set_to_none=True)
            return self.predict(wavs, lengths)
        if self.crop_is_whole(wavs):
            # One pass serves both: the update happens only after it, so its output is the
            # prediction of the current weights (1 forward + 1 backward instead of 2 + 1).
            ok, out = self.backward_pass(wavs, lengths)
        else:
            out = self.predict(wavs, lengths)
            ok = self.backward_pass(wavs, lengths)[0]
        if ok:
            self.pending += wavs.shape[0]
        if self.pending >= self.accumulation:
            if self.rollback_threshold is not None and self.drifted(wavs, lengths):
                self.counts["rollbacks"] += 1
                self.restore(self.good_state)
            else:
                self.update()
                self.pull_to_source()
                if self.rollback_threshold is not None:
                    self.good_state = copy.deepcopy(self.model.state_dict())
            self.pending = 0
        return out


class MPolObjective:
    """The MPol loss of a :class:`~speechbrain_mpol.hooks.MaskView`, with its options.

    Arguments
    ---------
    reference : str
        Reference gain: ``"self"`` (the authors' S/(S+N)) or ``"noisy_wiener"``.
    compare_in : str
        ``"linear"``: compare the mask's effective linear gain with the reference;
        ``"mask"``: map the reference into the mask's own domain (e.g. MetricGAN+'s log1p
        domain) and compare it with the raw mask.
    noise_frames : int
        Frames in the noise estimate (k).
    compression : float
        Power-law compression of the magnitude domain (1 for none).
    sign_weight, wasser_weight : float
        Loss weights.
    """

    def __init__(
        self,
        reference: str = "self",
        compare_in: str = "linear",
        noise_frames: int = 32,
        compression: float = 1.0,
        sign_weight: float = 10.0,
        wasser_weight: float = 1.0,
    ):
        if compare_in not in ("linear", "mask"):
            raise ValueError(f"compare_in must be 'linear' or 'mask', not {compare_in!r}")
        reference_gain(reference, torch.ones(1, 1, 1), torch.ones(1, 1, 1))  # validates the name
        self.reference = reference
        self.compare_in = compare_in
        self.noise_frames = int(noise_frames)
        self.compression = float(compression)
        self.sign_weight = float(sign_weight)
        self.wasser_weight = float(wasser_weight)

    def reference_gain(self, view: MaskView) -> torch.Tensor:
        """The reference as a linear gain ``[B, T, F]`` (detached)."""
        return reference_gain(
            self.reference,
            view.noisy,
            view.enhanced.detach(),
            view.lengths,
            k=self.noise_frames,
            compression=self.compression,
        )

    def mask_and_reference(self, view: MaskView) -> tuple[torch.Tensor, torch.Tensor]:
        """The (mask, reference) pair in the comparison domain."""
        gain = self.reference_gain(view)
        if self.compare_in == "linear":
            return view.linear_gain(), gain
        return view.mask, view.from_linear(gain).detach()

    def __call__(self, view: MaskView) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``sign_weight * mean(relu(-M)) + wasser_weight * W1(M, G)``, mean over the batch."""
        mask, ref = self.mask_and_reference(view)
        w1 = wasserstein_1d(mask, ref, view.lengths)
        sign = sign_penalty(view.mask, view.lengths)
        loss = (self.sign_weight * sign + self.wasser_weight * w1).mean()
        return loss, {"w1": w1.detach(), "sign": sign.detach()}


class MPolAdapter(Adapter):
    """Mask polarization: match the mask's value histogram to a reference gain's (W1).

    Arguments
    ---------
    enhancer, hook, **schedule
        See :class:`Adapter`.
    reference, compare_in, noise_frames, compression, sign_weight, wasser_weight
        See :class:`MPolObjective`.

    Example
    -------
    >>> from speechbrain_mpol.hooks import MetricGANMaskHook
    >>> from speechbrain.lobes.models.MetricGAN import EnhancementGenerator
    >>> class Tiny(nn.Module):  # the smallest stand-in for SpectralMaskEnhancement
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.mods = nn.ModuleDict({"enhance_model": EnhancementGenerator()})
    ...     def enhance_batch(self, wavs, lengths):
    ...         feats = torch.log1p(wavs.abs().unfold(1, 257, 128))
    ...         return self.mods.enhance_model(feats, lengths=lengths).mean(-1)
    >>> tiny = Tiny()
    >>> adapter = MPolAdapter(tiny, MetricGANMaskHook(tiny.mods.enhance_model),
    ...                       params=["linear2"], accumulation=1)
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
        reference: str = "self",
        compare_in: str = "linear",
        noise_frames: int = 32,
        compression: float = 1.0,
        sign_weight: float = 10.0,
        wasser_weight: float = 1.0,
        **schedule,
    ):
        super().__init__(enhancer, hook, **schedule)
        self.objective_fn = MPolObjective(
            reference, compare_in, noise_frames, compression, sign_weight, wasser_weight
        )

    def loss(self, view: MaskView) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The MPol loss (see :class:`MPolObjective`)."""
        return self.objective_fn(view)
