"""Mixers that build domain-shifted test material from clean speech, noise and rooms.

All functions take and return 1-D numpy float arrays at one sample rate. SNR is set on
whole-utterance RMS, as in the evaluation protocol of the field. The arithmetic is the
libraries': the SNR mixing is ``torchaudio.functional.add_noise``, RMS and peak amplitudes are
SpeechBrain's ``compute_amplitude``, decibels SpeechBrain's ``dB_to_amplitude``, convolution
and filtering scipy's. Levels and SNRs are computed in float64 whatever the input type; the
outputs keep the input type.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> speech, noise = rng.standard_normal(16000), rng.standard_normal(8000)
>>> noisy, scaled = mix_at_snr(speech, noise, 5.0, rng)
>>> round(snr_db(speech, scaled), 6)
5.0
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import signal
from speechbrain.processing.signal_processing import compute_amplitude, dB_to_amplitude
from torchaudio.functional import add_noise

#: Floor of an amplitude before it divides or goes into a logarithm (-240 dB).
RMS_FLOOR = 1e-12


def _as_tensor(x: np.ndarray) -> torch.Tensor:
    array = np.ascontiguousarray(x, dtype=np.float64)
    # torch refuses to share read-only memory (cached audio is read-only), so copy that;
    # reversed views (scipy's filtfilt output) were made contiguous above.
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def rms(x: np.ndarray) -> float:
    """Root mean square of a signal.

    Example
    -------
    >>> rms(np.array([3.0, -3.0, 3.0, -3.0]))
    3.0
    """
    return float(compute_amplitude(_as_tensor(x), amp_type="rms"))


def peak_amplitude(x: np.ndarray) -> float:
    """Largest absolute sample of a signal.

    Example
    -------
    >>> peak_amplitude(np.array([0.1, -0.7, 0.5]))
    0.7
    """
    return float(compute_amplitude(_as_tensor(x), amp_type="peak"))


def snr_db(speech: np.ndarray, noise: np.ndarray) -> float:
    """Signal-to-noise ratio in dB between two equal-length signals."""
    return float(20.0 * np.log10(rms(speech) / max(rms(noise), RMS_FLOOR)))


def fit_length(noise: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """Crop (at a random offset) or loop ``noise`` to exactly ``length`` samples."""
    if len(noise) >= length:
        start = int(rng.integers(0, len(noise) - length + 1))
        return noise[start : start + length]
    reps = int(np.ceil(length / len(noise)))
    return np.tile(noise, reps)[:length]


def noise_segment(
    noise: np.ndarray, length: int, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """A random ``length``-sample stretch of ``noise`` and the offset it starts at.

    Like :func:`fit_length`, but the offset is returned so that it can be recorded, and a
    noise shorter than ``length`` is looped from a random offset rather than from its start.

    Example
    -------
    >>> segment, offset = noise_segment(np.arange(5.0), 7, np.random.default_rng(0))
    >>> offset, segment.tolist()
    (4, [4.0, 0.0, 1.0, 2.0, 3.0, 4.0, 0.0])
    """
    if len(noise) >= length:
        offset = int(rng.integers(0, len(noise) - length + 1))
        return noise[offset : offset + length], offset
    offset = int(rng.integers(0, len(noise)))
    reps = int(np.ceil((offset + length) / len(noise)))
    return np.tile(noise, reps)[offset : offset + length], offset


def mix_at_snr(
    speech: np.ndarray, noise: np.ndarray, snr: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Add ``noise`` to ``speech`` at an SNR of ``snr`` dB (whole-utterance RMS).

    Arguments
    ---------
    speech : numpy.ndarray
        Clean speech (the reference).
    noise : numpy.ndarray
        Noise of any length; cropped at a random offset or looped to the speech length.
    snr : float
        Target SNR in dB.
    rng : numpy.random.Generator
        Source of the crop offset.

    Returns
    -------
    mixture : numpy.ndarray
        speech + scaled noise.
    scaled_noise : numpy.ndarray
        The noise as it is in the mixture.

    Raises
    ------
    ValueError
        When the noise (after cropping) is all zeros: no gain sets its SNR.
    """
    noise = fit_length(noise, len(speech), rng)
    if not np.any(noise):
        raise ValueError(f"cannot mix at {snr} dB SNR: the noise segment is all zeros")
    clean = _as_tensor(speech)
    mixture = add_noise(clean, _as_tensor(noise), torch.tensor(float(snr), dtype=torch.float64))
    scaled = (mixture - clean).numpy().astype(noise.dtype, copy=False)
    return mixture.numpy().astype(np.result_type(speech, noise), copy=False), scaled


def apply_rir(speech: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve speech with a room impulse response, keeping length and direct-path timing.

    The output is shifted by the RIR's direct-path delay (its peak), so the reverberant
    signal stays time-aligned with the dry one, and cropped to the input length.
    """
    delay = int(np.argmax(np.abs(rir)))
    wet = signal.fftconvolve(speech, rir)[delay : delay + len(speech)]
    return wet.astype(speech.dtype, copy=False)


def set_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    """Scale ``x`` so that its RMS is ``dbfs`` dB relative to full scale (1.0).

    Example
    -------
    >>> round(level_dbfs(set_level(np.ones(100), -20.0)), 6)
    -20.0
    """
    return x * (dB_to_amplitude(dbfs) / max(rms(x), RMS_FLOOR))


def level_dbfs(x: np.ndarray) -> float:
    """RMS level of ``x`` in dBFS (-240 for digital silence)."""
    return float(20.0 * np.log10(max(rms(x), RMS_FLOOR)))


def band_limit(
    x: np.ndarray, sample_rate: int, low: float = 300.0, high: float = 3400.0, order: int = 8
) -> np.ndarray:
    """Telephone-style band limit: zero-phase Butterworth band-pass from ``low`` to ``high`` Hz."""
    sos = signal.butter(order, [low, high], btype="bandpass", fs=sample_rate, output="sos")
    return signal.sosfiltfilt(sos, x).astype(x.dtype, copy=False)


def peak_normalize(*signals: np.ndarray, peak: float = 0.95) -> tuple[np.ndarray, ...]:
    """Scale several signals by one common factor so the first one peaks at most at ``peak``.

    Used to keep a mixture and its clean reference at the same relative scale; a signal is
    only ever scaled down.

    Example
    -------
    >>> noisy, clean = peak_normalize(np.array([2.0, -1.0]), np.array([1.0, 0.5]))
    >>> noisy.tolist(), clean.tolist()
    ([0.95, -0.475], [0.475, 0.2375])
    """
    top = peak_amplitude(signals[0])
    gain = min(1.0, peak / top) if top > 0 else 1.0
    return tuple(s * gain for s in signals)
