"""RemixIT, online form (Tzinis et al., 2022): self-training on remixed teacher estimates.

For each incoming utterance the teacher (an exponential moving average of the student, kept as
a real copy of the weights) splits the mixture into a speech estimate ``s`` and a noise
estimate ``n = y - s``. Pairs are buffered; when ``buffer_size`` pairs are there, the noises are
permuted across the buffer, remixed with the speech estimates, and the student is trained to
recover the teacher's speech estimate from each remix (negative SI-SDR on the waveform). After
each student step the teacher moves toward the student: ``teacher <- beta teacher + (1 - beta)
student``.
"""

from __future__ import annotations

import copy

import torch
from speechbrain.nnet.losses import cal_si_snr
from torch import nn

from speechbrain_mpol.adapter import Adapter, crop_batch
from speechbrain_mpol.hooks import MaskHook
from speechbrain_mpol.inference import run_enhancer
from speechbrain_mpol.weights import swapped_weights


def neg_si_sdr(estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Negative scale-invariant SDR in dB per row of ``[B, samples]`` (SpeechBrain's
    ``cal_si_snr``, which takes ``[samples, B, sources]``).

    Example
    -------
    >>> x = torch.randn(1, 1000)
    >>> bool(neg_si_sdr(2 * x, x) < -60)
    True
    """
    return cal_si_snr(target.T.unsqueeze(-1), estimate.T.unsqueeze(-1)).reshape(-1)


class RemixITAdapter(Adapter):
    """Online RemixIT with an EMA teacher.

    Arguments
    ---------
    enhancer, hook, params, opt_class, clip_grad_norm, crop_seconds, sample_rate
        See :class:`~speechbrain_mpol.adapter.Adapter` (``mode`` is always continual).
    buffer_size : int
        Utterances whose noise estimates are shuffled together (one student step per buffer).
    teacher_momentum : float
        ``beta`` of the teacher's moving average.
    seed : int
        Seed of the noise permutations.
    chunk_seconds : float or None
        See :class:`~speechbrain_mpol.adapter.Adapter`.
    """

    def __init__(
        self,
        enhancer: nn.Module,
        hook: MaskHook,
        params=(),
        opt_class=None,
        clip_grad_norm: float | None = 0.1,
        crop_seconds: float | None = 4.0,
        sample_rate: int = 16000,
        buffer_size: int = 4,
        teacher_momentum: float = 0.99,
        seed: int = 0,
        chunk_seconds: float | None = 30.0,
    ):
        super().__init__(enhancer, hook, params=params,
                         opt_class=opt_class, clip_grad_norm=clip_grad_norm,
                         crop_seconds=crop_seconds, sample_rate=sample_rate, source_pull=0.0,
                         chunk_seconds=chunk_seconds)
        self.buffer_size = max(2, int(buffer_size))
        self.teacher_momentum = float(teacher_momentum)
        self.teacher_state = copy.deepcopy(self.model.state_dict())  # a copy, never an alias
        self.buffer: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.generator = torch.Generator().manual_seed(seed)

    def reset(self) -> None:
        """Restore the source weights for student and teacher; empty the buffer."""
        super().reset()
        self.teacher_state = copy.deepcopy(self.source_state)
        self.buffer = []

    @torch.no_grad()
    def teacher_split(self, wavs: torch.Tensor, lengths: torch.Tensor):
        """Teacher's (speech, noise) estimates of a batch, the student's weights restored after."""
        with swapped_weights(self.model, self.teacher_state):
            speech = run_enhancer(self.enhancer, wavs, lengths, self.sample_rate)
        self.hook.clear()
        self.counts["forward"] += 1
        # MetricGAN+'s resynthesis peak-normalizes its output: rescale the speech estimate to
        # the mixture (least squares) so that mixture - speech is a meaningful noise estimate.
        scale = (speech * wavs).sum(1, keepdim=True) / speech.pow(2).sum(1, keepdim=True).clamp(
            min=1e-8
        )
        speech = speech * scale.clamp(min=0.0)
        return speech, wavs - speech

    @torch.no_grad()
    def update_teacher(self) -> None:
        """``teacher <- beta teacher + (1 - beta) student`` on floating-point tensors."""
        for name, value in self.model.state_dict().items():
            if value.is_floating_point():
                self.teacher_state[name].lerp_(value.to(self.teacher_state[name].device),
                                               1 - self.teacher_momentum)

    def student_step(self) -> None:
        """Remix the buffered estimates with permuted noises; one student update."""
        length = min(s.shape[-1] for s, _ in self.buffer)
        speech = torch.stack([s[:length] for s, _ in self.buffer])
        noise = torch.stack([n[:length] for _, n in self.buffer])
        perm = torch.randperm(len(self.buffer), generator=self.generator)
        if torch.equal(perm, torch.arange(len(perm))):
            perm = perm.roll(1)  # a real remix: no mixture keeps its own noise
        remix = speech + noise[perm.to(noise.device)]
        lengths = torch.ones(remix.shape[0], device=remix.device)
        with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
            estimate = run_enhancer(self.enhancer, remix, lengths, self.sample_rate)
            loss = neg_si_sdr(estimate, speech).mean()
            self.counts["forward"] += 1
            self.hook.clear()
            self.last_parts = {"neg_si_sdr": loss.detach().reshape(1)}
            if torch.isfinite(loss):
                loss.backward()
                self.counts["backward"] += 1
                self.step()
            else:
                self.counts["skipped_nonfinite"] += 1
                self.optimizer.zero_grad(set_to_none=True)
        self.update_teacher()
        self.buffer = []

    def forward(self, wavs: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Enhance with the student, then buffer the teacher's split and maybe train."""
        if lengths is None:
            lengths = torch.ones(wavs.shape[0], device=wavs.device)
        out = self.predict(wavs, lengths)
        if self.optimizer is None:
            return out
        cropped, crop_lengths = crop_batch(wavs, lengths, self.crop_samples)
        speech, noise = self.teacher_split(cropped, crop_lengths)
        total = cropped.shape[1]
        for i in range(cropped.shape[0]):
            n = int(round(float(crop_lengths[i]) * total))
            self.buffer.append((speech[i, :n], noise[i, :n]))
        if len(self.buffer) >= self.buffer_size:
            self.student_step()
        return out
