"""Audio in and out: validated reading and atomic writing of waveforms.

Every problem with an input file is raised as :class:`AudioError`, whose message names the
file and the problem, so a batch run can report and skip it instead of failing deep inside
torch. Outputs are written to a temporary file beside the target and renamed into place, so a
killed run never leaves a half-written file behind. Output is 32-bit float WAV by default,
so the delivered file is exactly the waveform that was scored (16-bit PCM on request).

Example
-------
>>> import tempfile, os, torch
>>> folder = tempfile.mkdtemp()
>>> path = os.path.join(folder, "tone.wav")
>>> tone = 0.1 * torch.sin(torch.arange(16000) / 16000 * 2 * 3.1416 * 440)
>>> _ = write_audio(path, tone, 16000)  # returns the samples as stored
>>> read_audio(path, 16000).shape
torch.Size([16000])
"""

from __future__ import annotations

import io
import logging
import math
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from speechbrain_mpol.atomic import atomic_write_bytes

logger = logging.getLogger(__name__)

#: Peak level from which a file counts as clipped (16-bit full scale minus one step).
CLIP_LEVEL = 0.999
#: RMS below which a file counts as silent (about -100 dBFS).
SILENCE_RMS = 1e-5


class AudioError(ValueError):
    """An input file that cannot be enhanced; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def read_audio(
    path: str | os.PathLike,
    sample_rate: int,
    *,
    max_seconds: float | None = None,
    downmix: bool = True,
    allow_silent: bool = False,
) -> torch.Tensor:
    """Read a file as a mono float32 waveform at ``sample_rate``, or raise :class:`AudioError`.

    Multichannel audio is averaged to mono (or refused when ``downmix`` is False), other
    sample rates are resampled, clipped audio is accepted with a warning.

    Arguments
    ---------
    path : str or PathLike
        The audio file (any format libsndfile reads: wav, flac, ogg, ...).
    sample_rate : int
        The rate the model expects; the waveform is resampled to it when needed.
    max_seconds : float, optional
        Refuse files longer than this (the caller then uses a chunked path).
    downmix : bool
        Average the channels of a multichannel file; if False, such a file is an error.
    allow_silent : bool
        Accept an all-silent file instead of raising.

    Returns
    -------
    torch.Tensor
        The waveform, shape ``[samples]``, float32.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "file not found")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        info = sf.info(str(path))
    except Exception as err:  # libsndfile reports corrupt and non-audio files alike
        raise AudioError(path, f"unreadable or not an audio file ({err})") from None
    if info.frames == 0:
        raise AudioError(path, "zero-length audio (no samples)")
    seconds = info.frames / info.samplerate
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(
            path, f"too long for memory: {seconds:.0f} s > max_seconds={max_seconds:.0f}"
        )
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:
        raise AudioError(path, f"unreadable audio data ({err})") from None
    if not np.isfinite(data).all():
        raise AudioError(path, "contains NaN or Inf samples")
    if data.shape[1] > 1:
        if not downmix:
            raise AudioError(path, f"{data.shape[1]} channels; the model takes mono")
        logger.warning("%s: %d channels, averaged to mono", path, data.shape[1])
    wav = torch.from_numpy(data.mean(axis=1))
    peak = float(wav.abs().max())
    if peak >= CLIP_LEVEL:
        logger.warning("%s: clipped (peak %.3f); enhancing anyway", path, peak)
    if not allow_silent and float(wav.pow(2).mean().sqrt()) < SILENCE_RMS:
        raise AudioError(path, "all-silent audio (RMS below -100 dBFS)")
    if rate != sample_rate:
        wav = torchaudio.functional.resample(wav, rate, sample_rate)
    return wav.contiguous()


#: Default subtype of :func:`write_audio`: 32-bit float keeps every sample the model produced,
#: so the delivered file scores exactly as the waveform that was scored. 16-bit PCM adds
#: quantization noise at -96 dBFS that moves PESQ of quiet outputs (see tests/test_audio.py).
DEFAULT_SUBTYPE = "FLOAT"
#: Subtypes :func:`write_audio` accepts (WAV container).
SUBTYPES = ("FLOAT", "DOUBLE", "PCM_24", "PCM_32", "PCM_16")
_PCM_BITS = {"PCM_16": 16, "PCM_24": 24, "PCM_32": 32}


def write_audio(
    path: str | os.PathLike,
    wav: torch.Tensor | np.ndarray,
    sample_rate: int,
    subtype: str = DEFAULT_SUBTYPE,
) -> np.ndarray:
    """Write a mono waveform as WAV, atomically (temporary file, then rename).

    Integer subtypes clip the samples to [-1, 1) before quantization; float subtypes store
    them as they are. The file is rendered in memory and written in one piece, so a full disk
    or a read-only folder is one ``OSError`` naming ``path`` and leaves no temporary file.
    The samples as stored are returned: scoring them scores the delivered file, whatever the
    subtype.

    Arguments
    ---------
    path : str or PathLike
        Target file; its folder is created if missing.
    wav : torch.Tensor or numpy.ndarray
        Mono waveform, shape ``[samples]`` (a leading singleton dimension is accepted).
    sample_rate : int
        Sample rate written in the header.
    subtype : str
        ``"FLOAT"`` (default: bit-exact float32), ``"PCM_24"``, ``"PCM_16"`` (the size of
        CD audio, at the cost of quantization noise), ``"PCM_32"`` or ``"DOUBLE"``.

    Returns
    -------
    numpy.ndarray
        The samples a reader gets back from the file (float32), e.g. quantized to 16 bits.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "q.wav")
    >>> quiet = np.float32(1e-5) * np.arange(8, dtype=np.float32)
    >>> stored = write_audio(path, quiet, 16000)
    >>> bool((sf.read(path, dtype="float32")[0] == quiet).all()), bool((stored == quiet).all())
    (True, True)
    >>> stored = write_audio(path, quiet, 16000, subtype="PCM_16")
    >>> bool((sf.read(path, dtype="float32")[0] == quiet).all())
    False
    >>> bool((sf.read(path, dtype="float32")[0] == stored).all())
    True
    """
    subtype = subtype.upper()
    if subtype not in SUBTYPES:
        raise ValueError(f"subtype must be one of {SUBTYPES}, not {subtype!r}")
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().cpu().float().numpy()
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    if not np.isfinite(wav).all():
        raise AudioError(path, "refusing to write non-finite samples")
    bits = _PCM_BITS.get(subtype)
    if bits:  # libsndfile wraps out-of-range samples around; clip to the largest code instead
        wav = np.clip(wav.astype(np.float64), -1.0, 1.0 - 2.0 ** (1 - bits))
    buffer = io.BytesIO()
    sf.write(buffer, wav, sample_rate, subtype=subtype, format="WAV")
    atomic_write_bytes(path, buffer.getvalue())
    if subtype == "FLOAT":
        return wav
    buffer.seek(0)
    return sf.read(buffer, dtype="float32")[0]


def duration_seconds(path: str | os.PathLike) -> float:
    """Duration of an audio file from its header, in seconds (``math.nan`` if unreadable)."""
    try:
        info = sf.info(str(path))
    except Exception:
        return math.nan
    return info.frames / info.samplerate
