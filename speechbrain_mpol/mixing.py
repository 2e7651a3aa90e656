"""Mixers that build domain-shifted test material from clean speech, noise and rooms.

All functions take and return 1-D numpy float arrays at one sample rate. SNR is set on
whole-utterance RMS, as in the evaluation protocol of the field.

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
from scipy import signal

_EPS = 1e-12


def rms(x: np.ndarray) -> float:
    """Root mean square of a signal."""
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def snr_db(speech: np.ndarray, noise: np.ndarray) -> float:
    """Signal-to-noise ratio in dB between two equal-length signals."""
    return float(20.0 * np.log10(rms(speech) / max(rms(noise), _EPS)))


def fit_length(noise: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """Crop (at a random offset) or loop ``noise`` to exactly ``length`` samples."""
    if len(noise) >= length:
        start = int(rng.integers(0, len(noise) - length + 1))
        return noise[start : start + length]
    reps = int(np.ceil(length / len(noise)))
    return np.tile(noise, reps)[:length]


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
    """
    noise = fit_length(noise, len(speech), rng)
    gain = rms(speech) / max(rms(noise), _EPS) * 10.0 ** (-snr / 20.0)
    scaled = noise * gain
    return speech + scaled, scaled


def apply_rir(speech: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve speech with a room impulse response, keeping length and direct-path timing.

    The output is shifted by the RIR's direct-path delay (its peak), so the reverberant
    signal stays time-aligned with the dry one, and cropped to the input length.
    """
    delay = int(np.argmax(np.abs(rir)))
    wet = signal.fftconvolve(speech, rir)[delay : delay + len(speech)]
    return wet.astype(speech.dtype, copy=False)


def set_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    """Scale ``x`` so that its RMS is ``dbfs`` dB relative to full scale (1.0)."""
    return x * (10.0 ** (dbfs / 20.0) / max(rms(x), _EPS))


def level_dbfs(x: np.ndarray) -> float:
    """RMS level of ``x`` in dBFS."""
    return float(20.0 * np.log10(max(rms(x), _EPS)))


def band_limit(
    x: np.ndarray, sample_rate: int, low: float = 300.0, high: float = 3400.0, order: int = 8
) -> np.ndarray:
    """Telephone-style band limit: zero-phase Butterworth band-pass from ``low`` to ``high`` Hz."""
    sos = signal.butter(order, [low, high], btype="bandpass", fs=sample_rate, output="sos")
    return signal.sosfiltfilt(sos, x).astype(x.dtype, copy=False)


def peak_normalize(*signals: np.ndarray, peak: float = 0.95) -> tuple[np.ndarray, ...]:
    """Scale several signals by one common factor so the first one peaks at most at ``peak``.

    Used to keep a mixture and its clean reference at the same relative scale.
    """
    top = float(np.max(np.abs(signals[0])))
    gain = min(1.0, peak / top) if top > 0 else 1.0
    return tuple(s * gain for s in signals)
