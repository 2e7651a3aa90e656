"""Running a pretrained SpeechBrain enhancer on waveforms: any interface, rate or length.

:func:`run_enhancer` calls ``enhance_batch`` (``SpectralMaskEnhancement``, the project's
``GTCRNEnhancement``) or ``separate_batch`` (``SepformerSeparation``, first source) and
resamples in and out when the model declares another rate than the audio's, so callers always
hand over and get back waveforms at their own rate and length. :func:`enhance` adds
bounded-memory enhancement of long single files (cross-faded chunks, see
:mod:`speechbrain_mpol.chunking`).
"""

from __future__ import annotations

import torch
import torchaudio
from torch import nn

from speechbrain_mpol.chunking import enhance_chunked


def model_sample_rate(enhancer: nn.Module) -> int | None:
    """The sample rate a pretrained enhancer declares in its hyperparameters, if any.

    Example
    -------
    >>> class Declares(nn.Module):
    ...     hparams = type("H", (), {"sample_rate": 8000})()
    >>> model_sample_rate(Declares()), model_sample_rate(nn.Identity())
    (8000, None)
    """
    hparams = getattr(enhancer, "hparams", None)
    rate = getattr(hparams, "sample_rate", None) if hparams is not None else None
    return int(rate) if rate else None


def run_enhancer(
    enhancer: nn.Module,
    wavs: torch.Tensor,
    lengths: torch.Tensor | None = None,
    sample_rate: int | None = None,
) -> torch.Tensor:
    """Enhance ``wavs`` ``[B, samples]`` with any supported SpeechBrain interface.

    Gradients are neither switched on nor off here: adaptation calls this with gradients on.

    Arguments
    ---------
    enhancer : torch.nn.Module
        The pretrained interface.
    wavs : torch.Tensor
        Noisy waveforms ``[B, samples]``.
    lengths : torch.Tensor, optional
        Relative lengths ``[B]``.
    sample_rate : int, optional
        Rate of ``wavs``; None means the model's own.

    Returns
    -------
    torch.Tensor
        Enhanced waveforms ``[B, samples]``.
    """
    model_rate = model_sample_rate(enhancer)
    resample = sample_rate is not None and model_rate is not None and model_rate != sample_rate
    x = torchaudio.functional.resample(wavs, sample_rate, model_rate) if resample else wavs
    if hasattr(enhancer, "enhance_batch"):
        out = enhancer.enhance_batch(x, lengths)
    elif hasattr(enhancer, "separate_batch"):
        out = enhancer.separate_batch(x)[..., 0]
    else:
        raise TypeError(f"{type(enhancer).__name__} has neither enhance_batch nor separate_batch")
    if resample:
        out = torchaudio.functional.resample(out, model_rate, sample_rate)
    samples = wavs.shape[1]
    if out.shape[1] < samples:
        out = torch.nn.functional.pad(out, (0, samples - out.shape[1]))
    return out[:, :samples]


def is_chunked(samples: int, sample_rate: int, chunk_seconds: float | None) -> bool:
    """True if a single utterance of ``samples`` is enhanced in chunks (see :func:`enhance`).

    Example
    -------
    >>> is_chunked(16000 * 31, 16000, 30.0), is_chunked(16000 * 31, 16000, None)
    (True, False)
    """
    return bool(chunk_seconds) and samples > chunk_seconds * sample_rate


@torch.no_grad()
def enhance(
    enhancer: nn.Module,
    wavs: torch.Tensor,
    lengths: torch.Tensor,
    sample_rate: int,
    chunk_seconds: float | None = 30.0,
) -> torch.Tensor:
    """Enhance a batch without gradient; a single utterance longer than ``chunk_seconds`` goes
    chunk by chunk (bounded memory for files of any length).

    Arguments
    ---------
    enhancer : torch.nn.Module
        The pretrained interface.
    wavs : torch.Tensor
        Noisy waveforms ``[B, samples]``.
    lengths : torch.Tensor
        Relative lengths ``[B]``.
    sample_rate : int
        Rate of ``wavs``.
    chunk_seconds : float, optional
        Chunk length for long single utterances (None: never chunk).

    Returns
    -------
    torch.Tensor
        Enhanced waveforms ``[B, samples]``.
    """
    if wavs.shape[0] == 1 and is_chunked(wavs.shape[1], sample_rate, chunk_seconds):
        ones = torch.ones(1, device=wavs.device)
        return enhance_chunked(
            lambda w: run_enhancer(enhancer, w, ones, sample_rate),
            wavs[0], chunk_seconds, min(1.0, chunk_seconds / 4), sample_rate,
        )[None]
    return run_enhancer(enhancer, wavs, lengths, sample_rate)
