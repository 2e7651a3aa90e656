"""Enhancement of arbitrarily long recordings with bounded memory: chunks, cross-fades, streams.

A recording is cut into chunks of ``chunk_seconds`` that overlap by ``overlap_seconds``; each
chunk is enhanced on its own and consecutive chunks are joined by a raised-cosine (Hann)
cross-fade over the overlap, whose two weights sum to 1 at every sample. Chunks start every
``chunk - overlap`` samples and the last one is aligned to the end of the recording, so every
chunk the model sees has the full length (no tiny last chunk) and the output has exactly the
input's length. A recording no longer than one chunk is enhanced in one call, unchanged.

:func:`enhance_file_chunked` streams a file from disk to disk (read one chunk, enhance it,
cross-fade it with the previous chunk's tail, write the finished part), so peak memory depends
on ``chunk_seconds``, never on the file's length.

Levels. SpeechBrain's MetricGAN+ resynthesis peak-normalizes every output it returns, so each
chunk comes back at its own gain: a plain overlap-add has level jumps at the seams (up to 10x
between neighbouring seconds, measured) and a global level unlike the unchunked output.
``rescale`` sets the gain of each enhanced chunk before the cross-fade:

- ``"noisy"`` (default): the least-squares gain of the noisy chunk on the enhanced one
  (``<x, y> / <y, y>``), so every chunk follows the input's level and chunks agree with one
  another. The global level is then that of the input, not a peak-normalized one.
- ``None``: no rescaling (for level-preserving models such as GTCRN or a linear filter).

A recording that fits in one chunk is never rescaled (it is exactly the unchunked output), so
with MetricGAN+ and ``"noisy"`` a short file comes out peak-normalized and a long one at the
input's level; normalize downstream if a fixed level matters.

Measured (60 s of real speech + noise at 5 dB, 10 s chunks, 1 s overlap; chunked output
compared with the unchunked output of the same model; ``benchmarks/README.md``):

==================  ========  ======================  ==============================
model               rescale   SI-SDR vs unchunked     level ratio per second min/max
==================  ========  ======================  ==============================
MetricGAN+ source   None      6.0 dB                  0.99 / 10.1
MetricGAN+ source   noisy     22.0 dB                 0.80 / 1.62
GTCRN-VCTK          None      14.5 dB                 0.48 / 5.9
GTCRN-VCTK          noisy     12.8 dB                 0.69 / 14.3
==================  ========  ======================  ==============================

(GTCRN is recurrent and causal: a chunk starting from a fresh state does not rejoin the
unchunked trajectory for seconds, so its differences are state, not level; chaining each chunk's
gain to the previous chunk's overlap was also tried and was worse for both models, 12.1 and
5.2 dB, because the least-squares gain over a mostly quiet overlap is unreliable and the error
compounds from seam to seam.)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf
import torch

from speechbrain_mpol.atomic import atomic_path
from speechbrain_mpol.audio import DEFAULT_SUBTYPE

EnhanceFn = Callable[[torch.Tensor], torch.Tensor]
RESCALE_MODES = ("noisy", None)


class Chunk(NamedTuple):
    """One chunk of a recording: its first sample's index, its samples, whether it is the last."""

    start: int
    wav: torch.Tensor
    last: bool


def chunk_starts(total: int, chunk: int, overlap: int) -> list[int]:
    """First sample of every chunk: every ``chunk - overlap`` samples, the last one end-aligned.

    Arguments
    ---------
    total : int
        Samples in the recording.
    chunk : int
        Samples per chunk.
    overlap : int
        Samples shared by consecutive chunks (at most half a chunk).

    Returns
    -------
    list of int
        Chunk starts; ``[0]`` when the recording fits in one chunk.

    Example
    -------
    >>> chunk_starts(25, 10, 2)
    [0, 8, 15]
    >>> chunk_starts(10, 10, 2)
    [0]
    """
    _check_sizes(chunk, overlap)
    if total <= chunk:
        return [0]
    hop = chunk - overlap
    starts = list(range(0, total - chunk, hop))
    return starts + [total - chunk]


def _check_sizes(chunk: int, overlap: int) -> None:
    if chunk <= 0 or overlap < 0:
        raise ValueError(f"need chunk > 0 and overlap >= 0 samples, got {chunk} and {overlap}")
    if 2 * overlap > chunk:
        # The cross-fade of one seam and the tail kept for the next must not overlap.
        raise ValueError(f"overlap ({overlap} samples) must be at most half a chunk ({chunk})")


def _samples(seconds: float, sample_rate: int) -> int:
    return int(round(seconds * sample_rate))


def fade_in(overlap: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Raised-cosine ramp from 0 to 1 over ``overlap`` samples; ``1 - ramp`` fades out.

    Example
    -------
    >>> ramp = fade_in(4)
    >>> bool(torch.allclose(ramp + ramp.flip(0), torch.ones(4)))
    True
    """
    t = (torch.arange(overlap, dtype=torch.float64) + 0.5) / max(overlap, 1)
    return (0.5 - 0.5 * torch.cos(math.pi * t)).to(dtype)


def _lsq_gain(estimate: torch.Tensor, target: torch.Tensor) -> float:
    """Least-squares gain ``g`` minimizing ``|target - g * estimate|^2`` (1 when undefined)."""
    energy = float(torch.dot(estimate.double(), estimate.double()))
    if energy <= 1e-12:
        return 1.0
    gain = float(torch.dot(estimate.double(), target.double())) / energy
    return gain if math.isfinite(gain) and gain > 0 else 1.0


class CrossFader:
    """Joins enhanced chunks by overlap-add, handing back each finished stretch of output.

    Arguments
    ---------
    overlap : int
        Samples shared by consecutive chunks.
    rescale : str or None
        ``"noisy"`` or None (see the module docstring).

    Example
    -------
    >>> fader = CrossFader(overlap=2, rescale=None)
    >>> x = torch.arange(12.0)
    >>> parts = [fader.push(Chunk(s, x[s:s + 8], s == 4), x[s:s + 8]) for s in (0, 4)]
    >>> [len(p) for p in parts]
    [6, 6]
    >>> torch.allclose(torch.cat(parts), x)
    True
    """

    def __init__(self, overlap: int, rescale: str | None = "noisy"):
        if rescale not in RESCALE_MODES:
            raise ValueError(f"rescale must be one of {RESCALE_MODES}, not {rescale!r}")
        self.overlap = int(overlap)
        self.rescale = rescale
        self.ramp = fade_in(self.overlap)
        self.tail: torch.Tensor | None = None  # last `overlap` output samples, not yet final
        self.tail_start = 0
        self.gains: list[float] = []

    def push(self, chunk: Chunk, enhanced: torch.Tensor) -> torch.Tensor:
        """Add one enhanced chunk; returns the output samples that are now final.

        Arguments
        ---------
        chunk : Chunk
            The noisy chunk (its ``start`` and ``last`` place it; its ``wav`` is the reference
            of ``rescale="noisy"``).
        enhanced : torch.Tensor
            The enhanced chunk, same length as ``chunk.wav``.

        Returns
        -------
        torch.Tensor
            The next stretch of output, in order; after the last chunk, everything is out.
        """
        enhanced = enhanced.reshape(-1)
        if enhanced.shape[0] != chunk.wav.shape[-1]:
            raise ValueError(f"enhance_fn returned {enhanced.shape[0]} samples for a chunk of "
                             f"{chunk.wav.shape[-1]}; it must keep the length")
        gain = 1.0
        if self.rescale == "noisy":
            gain = _lsq_gain(enhanced, chunk.wav.reshape(-1).to(enhanced))
        self.gains.append(gain)
        if gain != 1.0:
            enhanced = enhanced * gain
        if self.tail is None:
            head = enhanced
        else:
            offset = self.tail_start - chunk.start
            ramp = self.ramp.to(enhanced)
            seam = enhanced[offset:offset + self.overlap]
            faded = self.tail * (1.0 - ramp) + seam * ramp
            head = torch.cat([faded, enhanced[offset + self.overlap:]])
        if chunk.last:
            self.tail = None
            return head
        keep = head.shape[0] - self.overlap
        self.tail = head[keep:]
        self.tail_start = chunk.start + enhanced.shape[0] - self.overlap
        return head[:keep]


def _enhance_one(enhance_fn: EnhanceFn, wav: torch.Tensor) -> torch.Tensor:
    out = enhance_fn(wav.reshape(1, -1))
    return out.reshape(-1)


def enhance_chunked(
    enhance_fn: EnhanceFn,
    wav: torch.Tensor,
    chunk_seconds: float = 10.0,
    overlap_seconds: float = 1.0,
    sample_rate: int = 16000,
    rescale: str | None = "noisy",
) -> torch.Tensor:
    """Enhance a long waveform chunk by chunk, joined by Hann cross-fades over the overlaps.

    Arguments
    ---------
    enhance_fn : callable
        ``[1, n] -> [1, n]``, e.g.
        ``lambda w: run_enhancer(enhancer, w, torch.ones(1), 16000)`` under ``torch.no_grad``.
    wav : torch.Tensor
        The waveform ``[samples]`` (or ``[1, samples]``).
    chunk_seconds : float
        Length of each chunk the model sees.
    overlap_seconds : float
        Overlap of consecutive chunks, cross-faded (at most half a chunk).
    sample_rate : int
        Rate of ``wav``.
    rescale : str or None
        Per-chunk gain handling: ``"noisy"`` or None (module docstring).

    Returns
    -------
    torch.Tensor
        The enhanced waveform ``[samples]``, exactly as long as ``wav``; when ``wav`` fits in
        one chunk, exactly ``enhance_fn(wav[None])[0]``.

    Example
    -------
    >>> x = torch.randn(25)
    >>> out = enhance_chunked(lambda w: 2 * w, x, chunk_seconds=10, overlap_seconds=2,
    ...                       sample_rate=1, rescale=None)
    >>> out.shape, bool(torch.allclose(out, 2 * x))
    (torch.Size([25]), True)
    """
    wav = wav.reshape(-1)
    chunk = _samples(chunk_seconds, sample_rate)
    overlap = _samples(overlap_seconds, sample_rate)
    starts = chunk_starts(wav.shape[0], chunk, overlap)
    if len(starts) == 1:
        return _enhance_one(enhance_fn, wav)
    fader = CrossFader(overlap, rescale)
    pieces = []
    for i, start in enumerate(starts):
        piece = Chunk(start, wav[start:start + chunk], i == len(starts) - 1)
        pieces.append(fader.push(piece, _enhance_one(enhance_fn, piece.wav)))
    return torch.cat(pieces)


def iter_chunks(
    path: str | os.PathLike,
    chunk_seconds: float = 10.0,
    overlap_seconds: float = 1.0,
    sample_rate: int = 16000,
) -> Iterator[Chunk]:
    """Read a file chunk by chunk (``SoundFile.seek`` / ``read``); never the whole file.

    Multi-channel files are averaged to mono, chunk by chunk. No resampling is done here (it
    would need the whole signal or a streaming resampler): the file must be at ``sample_rate``.

    Arguments
    ---------
    path : str or PathLike
        The audio file.
    chunk_seconds, overlap_seconds : float
        As in :func:`enhance_chunked`.
    sample_rate : int
        Expected rate of the file.

    Yields
    ------
    Chunk
        ``(start, wav [samples] float32, last)``; starts as in :func:`chunk_starts`.

    Example
    -------
    >>> import tempfile, os
    >>> tmp = os.path.join(tempfile.mkdtemp(), "a.wav")
    >>> sf.write(tmp, np.zeros(25, dtype=np.float32), 1, format="WAV", subtype="FLOAT")
    >>> [(c.start, len(c.wav), c.last) for c in iter_chunks(tmp, 10, 2, 1)]
    [(0, 10, False), (8, 10, False), (15, 10, True)]
    """
    chunk = _samples(chunk_seconds, sample_rate)
    overlap = _samples(overlap_seconds, sample_rate)
    with sf.SoundFile(str(path)) as handle:
        if handle.samplerate != sample_rate:
            raise ValueError(f"{path}: sample rate {handle.samplerate} Hz, expected "
                             f"{sample_rate} Hz (resample the file first)")
        starts = chunk_starts(handle.frames, chunk, overlap)
        for i, start in enumerate(starts):
            handle.seek(start)
            block = handle.read(chunk, dtype="float32", always_2d=True).mean(axis=1)
            yield Chunk(start, torch.from_numpy(np.ascontiguousarray(block)), i == len(starts) - 1)


@contextmanager
def _reporting_write_errors(path: Path) -> Iterator[None]:
    """libsndfile reports a failed write (a full disk) as ``LibsndfileError``, with no errno:
    raise it as one ``OSError`` naming ``path``."""
    try:
        yield
    except sf.LibsndfileError as err:
        raise OSError(f"cannot write ({err})") from None  # atomic_path names the file


def enhance_file_chunked(
    enhance_fn: EnhanceFn,
    in_path: str | os.PathLike,
    out_path: str | os.PathLike,
    chunk_seconds: float = 10.0,
    overlap_seconds: float = 1.0,
    sample_rate: int = 16000,
    rescale: str | None = "noisy",
    subtype: str = DEFAULT_SUBTYPE,
) -> Path:
    """Stream a file through ``enhance_fn``: read, enhance, cross-fade, write, chunk by chunk.

    The output goes to a temporary file next to ``out_path`` (``SoundFile(mode="w")``), renamed
    onto ``out_path`` only when complete; on any error the temporary file is removed. Peak
    memory is a few chunks' worth whatever the file's length. Samples are clipped to [-1, 1)
    for integer subtypes, as in :func:`speechbrain_mpol.audio.write_audio`. A write that
    fails (a full disk) is one ``OSError`` naming ``out_path``; no temporary file is left.

    Arguments
    ---------
    enhance_fn : callable
        ``[1, n] -> [1, n]``.
    in_path, out_path : str or PathLike
        Noisy input and enhanced output (WAV); ``out_path`` may equal ``in_path``.
    chunk_seconds, overlap_seconds, sample_rate, rescale
        As in :func:`enhance_chunked` (same output, sample for sample, up to quantization).
    subtype : str
        SoundFile subtype of the output: ``"FLOAT"`` (default, as
        :func:`~speechbrain_mpol.audio.write_audio`), ``"PCM_24"``, ``"PCM_16"``, ...

    Returns
    -------
    pathlib.Path
        ``out_path``.

    Example
    -------
    >>> import tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> noisy = os.path.join(folder, "noisy.wav")
    >>> sf.write(noisy, np.full(25, 0.25, dtype=np.float32), 1, format="WAV", subtype="FLOAT")
    >>> out = enhance_file_chunked(lambda w: 0.5 * w, noisy, os.path.join(folder, "e.wav"),
    ...                            10, 2, 1, rescale=None, subtype="FLOAT")
    >>> sf.read(out)[0].tolist() == [0.125] * 25, sorted(os.listdir(folder))
    (True, ['e.wav', 'noisy.wav'])
    """
    out_path = Path(out_path)
    overlap = _samples(overlap_seconds, sample_rate)
    fader = CrossFader(overlap, rescale)
    bits = {"PCM_16": 16, "PCM_24": 24, "PCM_32": 32}.get(subtype.upper())
    with atomic_path(out_path) as tmp, _reporting_write_errors(out_path), sf.SoundFile(
        tmp, mode="w", samplerate=sample_rate, channels=1, subtype=subtype, format="WAV"
    ) as sink:
        for chunk in iter_chunks(in_path, chunk_seconds, overlap_seconds, sample_rate):
            with torch.no_grad():
                enhanced = _enhance_one(enhance_fn, chunk.wav)
            if chunk.start == 0 and chunk.last:
                done = enhanced  # one chunk: exactly the unchunked output
            else:
                done = fader.push(chunk, enhanced)
            done = done.detach().cpu().float().numpy()
            if not np.isfinite(done).all():
                raise ValueError(f"{in_path}: enhance_fn returned non-finite samples")
            if bits:  # libsndfile wraps out-of-range samples around; clip them instead
                done = np.clip(done.astype(np.float64), -1.0, 1.0 - 2.0 ** (1 - bits))
            sink.write(done)
    return out_path


def adaptation_crop(
    wav: torch.Tensor,
    crop_seconds: float,
    sample_rate: int = 16000,
    rng: np.random.Generator | None = None,
) -> torch.Tensor:
    """A bounded crop of a long recording to adapt on: the first ``crop_seconds`` or a random one.

    Arguments
    ---------
    wav : torch.Tensor
        ``[samples]`` or ``[B, samples]`` (cropped along the last dimension).
    crop_seconds : float
        Length of the crop.
    sample_rate : int
        Rate of ``wav``.
    rng : numpy.random.Generator, optional
        If given, the crop starts at a uniformly drawn sample; else at 0.

    Returns
    -------
    torch.Tensor
        A view of at most ``crop_seconds`` of ``wav`` (all of it when shorter).

    Example
    -------
    >>> adaptation_crop(torch.arange(10.0), 0.4, sample_rate=10).tolist()
    [0.0, 1.0, 2.0, 3.0]
    >>> adaptation_crop(torch.arange(10.0), 0.4, 10, np.random.default_rng(0)).shape
    torch.Size([4])
    """
    crop = _samples(crop_seconds, sample_rate)
    total = wav.shape[-1]
    if crop <= 0:
        raise ValueError(f"crop_seconds must be positive, got {crop_seconds}")
    if total <= crop:
        return wav
    start = 0 if rng is None else int(rng.integers(0, total - crop + 1))
    return wav[..., start:start + crop]
