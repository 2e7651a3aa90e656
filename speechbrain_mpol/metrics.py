"""Intrusive speech-enhancement metrics: PESQ-WB, STOI, ESTOI, SI-SDR, segSNR, CSIG/CBAK/COVL.

Functions take 1-D numpy arrays (clean reference, enhanced estimate, same length). The
composite measures follow Hu & Loizou (2008) (``composite.m``): segmental SNR, LLR and WSS on
30 ms Hann frames with 75% overlap; as in the Python implementations used by VoiceBank-DEMAND
papers, the PESQ term is wide-band PESQ.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.standard_normal(16000)
>>> si_sdr(x, 0.5 * x) > 100
True
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pesq as pesq_lib
from pystoi import stoi as pystoi_stoi
from scipy.linalg import toeplitz

logger = logging.getLogger(__name__)
_EPS = np.finfo(np.float64).eps


def _check(clean: np.ndarray, enhanced: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    clean = np.asarray(clean, dtype=np.float64)
    enhanced = np.asarray(enhanced, dtype=np.float64)
    if clean.ndim != 1 or enhanced.ndim != 1:
        raise ValueError(f"signals must be 1-D, got {clean.shape} and {enhanced.shape}")
    if clean.shape != enhanced.shape:
        raise ValueError(f"lengths differ: {clean.shape[0]} vs {enhanced.shape[0]}")
    return clean, enhanced


def pesq_wb(clean: np.ndarray, enhanced: np.ndarray, sample_rate: int = 16000) -> float:
    """Wide-band PESQ (ITU-T P.862.2); ``nan`` with a warning when PESQ cannot score the pair."""
    clean, enhanced = _check(clean, enhanced)
    try:
        return float(pesq_lib.pesq(sample_rate, clean, enhanced, "wb"))
    except Exception as err:  # NoUtterancesError, too short, ...
        logger.warning("PESQ failed (%s); reporting nan", err)
        return math.nan


def stoi(clean: np.ndarray, enhanced: np.ndarray, sample_rate: int = 16000) -> float:
    """Short-time objective intelligibility (Taal et al., 2011)."""
    clean, enhanced = _check(clean, enhanced)
    return float(pystoi_stoi(clean, enhanced, sample_rate, extended=False))


def estoi(clean: np.ndarray, enhanced: np.ndarray, sample_rate: int = 16000) -> float:
    """Extended STOI (Jensen & Taal, 2016)."""
    clean, enhanced = _check(clean, enhanced)
    return float(pystoi_stoi(clean, enhanced, sample_rate, extended=True))


def si_sdr(clean: np.ndarray, enhanced: np.ndarray) -> float:
    """Scale-invariant SDR in dB (both signals made zero-mean).

    Example
    -------
    >>> t = np.arange(8000)
    >>> s = np.sin(t / 5.0); n = np.cos(t / 3.0)
    >>> round(si_sdr(s, s + 0.1 * n), 1)
    20.0
    """
    clean, enhanced = _check(clean, enhanced)
    clean = clean - clean.mean()
    enhanced = enhanced - enhanced.mean()
    target = (enhanced @ clean) / (clean @ clean + _EPS) * clean
    noise = enhanced - target
    return float(10 * np.log10((target @ target + _EPS) / (noise @ noise + _EPS)))


def _frames(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """30 ms frames, 75% overlap, Hann-weighted (as composite.m), ``[frames, length]``."""
    length = round(0.03 * sample_rate)
    hop = length // 4
    count = max(0, (len(x) - length) // hop + 1)
    idx = np.arange(length)[None, :] + hop * np.arange(count)[:, None]
    window = 0.5 * (1 - np.cos(2 * np.pi * np.arange(1, length + 1) / (length + 1)))
    return x[idx] * window


def segmental_snr(clean: np.ndarray, enhanced: np.ndarray, sample_rate: int = 16000) -> float:
    """Mean frame SNR in dB, each frame clipped to [-10, 35] dB.

    Example
    -------
    >>> x = np.random.default_rng(1).standard_normal(16000)
    >>> segmental_snr(x, x)
    35.0
    """
    clean, enhanced = _check(clean, enhanced)
    c, e = _frames(clean, sample_rate), _frames(enhanced, sample_rate)
    signal = (c**2).sum(1)
    noise = ((c - e) ** 2).sum(1)
    snr = 10 * np.log10(signal / (noise + _EPS) + _EPS)
    return float(np.clip(snr, -10, 35).mean())


def _lpc(frame: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Autocorrelation ``[order + 1]`` and LPC polynomial ``[1, -a1, ...]`` (Levinson-Durbin)."""
    n = len(frame)
    r = np.array([frame[: n - k] @ frame[k:] for k in range(order + 1)])
    a = np.zeros(order)
    err = r[0] + _EPS
    for i in range(order):
        k = (r[i + 1] - a[:i] @ r[i:0:-1]) / err
        a[:i] = a[:i] - k * a[:i][::-1]
        a[i] = k
        err *= 1 - k * k
    return r, np.concatenate([[1.0], -a])


def llr(clean: np.ndarray, enhanced: np.ndarray, sample_rate: int = 16000) -> float:
    """Log-likelihood ratio of LPC models (order 10 below 10 kHz, else 16), lowest 95% mean."""
    clean, enhanced = _check(clean, enhanced)
    order = 10 if sample_rate < 10000 else 16
    values = []
    for c, e in zip(_frames(clean, sample_rate), _frames(enhanced, sample_rate), strict=True):
        r_clean, a_clean = _lpc(c, order)
        _, a_enh = _lpc(e, order)
        matrix = toeplitz(r_clean)
        ratio = (a_enh @ matrix @ a_enh) / max(a_clean @ matrix @ a_clean, _EPS)
        values.append(np.log(max(ratio, _EPS)))
    values = np.sort(values)
    return float(values[: max(1, round(len(values) * 0.95))].mean())


# Critical bands of composite.m's WSS (centre frequencies and bandwidths in Hz).
_CENTRES = np.array([
    50.0, 120, 190, 260, 330, 400, 470, 540, 617.372, 703.378, 798.717, 904.554, 1020.38,
    1148.30, 1288.72, 1442.54, 1610.70, 1794.16, 1993.93, 2211.08, 2446.71, 2701.97, 2978.04,
    3276.17, 3597.63,
])
_BANDWIDTHS = np.array([
    70.0, 70, 70, 70, 70, 70, 70, 77.3724, 86.0056, 95.3398, 105.411, 116.256, 127.914,
    140.423, 153.823, 168.154, 183.457, 199.776, 217.153, 235.631, 255.255, 276.072, 298.126,
    321.465, 346.136,
])


def _local_peaks(energy: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """Nearest spectral peak per band, searched along the slope (composite.m's convention)."""
    bands = len(slope)
    peaks = np.empty(bands)
    for i in range(bands):
        n = i
        if slope[i] > 0:
            while n < bands and slope[n] > 0:
                n += 1
            peaks[i] = energy[n - 1]
        else:
            while n >= 0 and slope[n] <= 0:
                n -= 1
            peaks[i] = energy[n + 1]
    return peaks


def wss(clean: np.ndarray, enhanced: np.ndarray, sample_rate: int = 16000) -> float:
    """Weighted spectral slope distance (Klatt, 1982), 25 critical bands, lowest 95% mean."""
    clean, enhanced = _check(clean, enhanced)
    length = round(0.03 * sample_rate)
    n_fft = 2 ** int(np.ceil(np.log2(2 * length)))
    half = n_fft // 2
    bins = np.arange(half)
    f0 = _CENTRES / (sample_rate / 2) * half
    bw = _BANDWIDTHS / (sample_rate / 2) * half
    norm = np.log(_BANDWIDTHS[0]) - np.log(_BANDWIDTHS)
    bank = np.exp(-11 * ((bins[None, :] - np.floor(f0)[:, None]) / bw[:, None]) ** 2
                  + norm[:, None])
    bank *= bank > np.exp(-30 / (2 * 2.303))

    def band_energy(frames):
        spec = np.abs(np.fft.fft(frames, n_fft, axis=1)[:, :half]) ** 2
        return 10 * np.log10(np.maximum(spec @ bank.T, 1e-10))

    e_clean = band_energy(_frames(clean, sample_rate))
    e_enh = band_energy(_frames(enhanced, sample_rate))
    k_max, k_locmax = 20.0, 1.0
    values = []
    for ec, ee in zip(e_clean, e_enh, strict=True):
        sc, se = np.diff(ec), np.diff(ee)
        wc = (k_max / (k_max + ec.max() - ec[:-1])) * (
            k_locmax / (k_locmax + _local_peaks(ec, sc) - ec[:-1]))
        we = (k_max / (k_max + ee.max() - ee[:-1])) * (
            k_locmax / (k_locmax + _local_peaks(ee, se) - ee[:-1]))
        w = (wc + we) / 2
        values.append((w * (sc - se) ** 2).sum() / w.sum())
    values = np.sort(values)
    return float(values[: max(1, round(len(values) * 0.95))].mean())


def composite(
    clean: np.ndarray, enhanced: np.ndarray, sample_rate: int = 16000, pesq_value=None
) -> dict[str, float]:
    """CSIG, CBAK, COVL (Hu & Loizou, 2008), each clipped to [1, 5].

    Arguments
    ---------
    clean, enhanced : numpy.ndarray
        Reference and estimate, 1-D, same length.
    sample_rate : int
        Sample rate in Hz.
    pesq_value : float, optional
        Wide-band PESQ of the pair, if already computed.

    Returns
    -------
    dict
        ``{"csig", "cbak", "covl"}``.
    """
    p = pesq_wb(clean, enhanced, sample_rate) if pesq_value is None else pesq_value
    llr_value = llr(clean, enhanced, sample_rate)
    wss_value = wss(clean, enhanced, sample_rate)
    seg = segmental_snr(clean, enhanced, sample_rate)
    csig = 3.093 - 1.029 * llr_value + 0.603 * p - 0.009 * wss_value
    cbak = 1.634 + 0.478 * p - 0.007 * wss_value + 0.063 * seg
    covl = 1.594 + 0.805 * p - 0.512 * llr_value - 0.007 * wss_value
    return {k: float(np.clip(v, 1, 5)) for k, v in
            (("csig", csig), ("cbak", cbak), ("covl", covl))}


def evaluate_pair(
    clean: np.ndarray,
    enhanced: np.ndarray,
    sample_rate: int = 16000,
    composite_measures: bool = True,
) -> dict[str, float]:
    """All metrics of one (clean, enhanced) pair; a metric that cannot be computed is ``nan``.

    Arguments
    ---------
    clean, enhanced : numpy.ndarray
        Reference and estimate, 1-D, same length.
    sample_rate : int
        Sample rate in Hz.
    composite_measures : bool
        Also compute CSIG/CBAK/COVL (slower: LLR and WSS per frame).

    Returns
    -------
    dict
        ``pesq, stoi, estoi, si_sdr, segsnr`` (+ ``csig, cbak, covl``).
    """
    clean, enhanced = _check(clean, enhanced)
    scores = {"pesq": pesq_wb(clean, enhanced, sample_rate)}
    for name, fn in (("stoi", stoi), ("estoi", estoi)):
        try:
            scores[name] = fn(clean, enhanced, sample_rate)
        except Exception as err:  # e.g. shorter than STOI's analysis window
            logger.warning("%s failed (%s); reporting nan", name, err)
            scores[name] = math.nan
    scores["si_sdr"] = si_sdr(clean, enhanced)
    scores["segsnr"] = segmental_snr(clean, enhanced, sample_rate)
    if composite_measures:
        scores.update(composite(clean, enhanced, sample_rate, pesq_value=scores["pesq"]))
    return scores


def bootstrap_ci(
    values, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (nans ignored).

    Example
    -------
    >>> low, high = bootstrap_ci(np.arange(100.0))
    >>> low < 49.5 < high
    True
    """
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (n_resamples, values.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def paired_bootstrap_ci(a, b, n_resamples: int = 2000, confidence: float = 0.95,
                        seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of the mean paired difference ``a - b`` (pairs with a nan dropped)."""
    return bootstrap_ci(np.asarray(a, float) - np.asarray(b, float), n_resamples, confidence,
                        seed)
