"""Intrusive speech-enhancement metrics: PESQ-WB, STOI, ESTOI, SI-SDR, segSNR, CSIG/CBAK/COVL.

Every function takes 1-D numpy arrays: the clean reference first, the enhanced estimate second,
of equal length. The composite measures follow Hu & Loizou (2008) as implemented in Loizou's
``composite.m``: segmental SNR, LLR and WSS on 30 ms Hann frames with 75% overlap. Their PESQ
term is wide-band PESQ (ITU-T P.862.2), as in the Python evaluation scripts of the
VoiceBank-DEMAND literature (SEGAN, MetricGAN+, CMGAN, ...); ``composite.m`` itself used its own
narrow-band P.862 implementation, so the numbers here are comparable with those papers rather
than with the original MATLAB. segSNR, WSS and CSIG/CBAK/COVL (given the same PESQ) reproduce
the MATLAB reference values that pysepm ships for its 16 kHz example pair to 6 digits.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.standard_normal(16000)
>>> si_sdr(x, 0.5 * x) > 100
True
"""

from __future__ import annotations

import atexit
import logging
import math
import pickle
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from math import gcd

import numpy as np
import pesq as pesq_lib
from pystoi import stoi as pystoi_stoi
from scipy.signal import resample_poly
from scipy.stats import bootstrap

logger = logging.getLogger(__name__)

_EPS = np.finfo(np.float64).eps

#: Bounds of the per-frame SNR in segmental SNR (composite.m's MIN_SNR / MAX_SNR), in dB.
SEGSNR_RANGE = (-10.0, 35.0)

#: Fraction of the best frames kept for LLR and WSS (composite.m's ``alpha``): the worst 5% are
#: dropped because a few silent or transient frames would otherwise dominate the mean.
_KEEP = 0.95


def _check(clean: np.ndarray, enhanced: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both signals as float64, or a ValueError saying what is wrong with them."""
    clean = np.asarray(clean, dtype=np.float64)
    enhanced = np.asarray(enhanced, dtype=np.float64)
    if clean.ndim != 1 or enhanced.ndim != 1:
        raise ValueError(
            f"signals must be 1-D, got shapes {clean.shape} (clean) and {enhanced.shape} "
            "(enhanced)"
        )
    if clean.shape != enhanced.shape:
        raise ValueError(
            f"lengths differ: clean has {clean.shape[0]} samples, enhanced {enhanced.shape[0]}"
        )
    return clean, enhanced


def _resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling by the exact rational factor ``target / rate``."""
    if rate == target:
        return x
    g = gcd(int(rate), int(target))
    return resample_poly(x, target // g, rate // g)


#: The whole program of a :class:`PesqWorker` process: it reads ``(rate, ref, deg, mode)``
#: pickles and answers ``("ok", score)`` or ``("error", reason)``. It imports ``pesq`` only
#: (not scipy), so it starts in under a second.
_WORKER_PROGRAM = """
import os, pickle, signal, sys
import pesq
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's; EOF stops the worker
answers = os.fdopen(os.dup(1), "wb")
os.dup2(2, 1)  # what the library prints goes to stderr, not into the answers
while True:
    try:
        rate, ref, deg, mode = pickle.load(sys.stdin.buffer)
    except EOFError:
        break
    try:
        answer = ("ok", float(pesq.pesq(rate, ref, deg, mode)))
    except Exception as err:
        answer = ("error", f"{type(err).__name__}: {err}".strip())
    pickle.dump(answer, answers)
    answers.flush()
"""


class PesqWorker:
    """The ``pesq`` package in a child process, so that its crashes cost a score, not the run.

    ``pesq`` 0.0.4 (the C reference code of P.862) keeps the speech segments it finds in
    the reference in fixed tables of 50 entries and writes past them when there are more:
    the process dies with SIGSEGV or "stack smashing". Whether a long reference does so depends
    on its pauses, not on its length alone (measured: 2.9 s speech tiled crashes from 169 s
    on; issue #16 reports 115 s). The worker is started on first use, restarted after a
    crash, and a call that takes longer than its timeout is killed.

    Arguments
    ---------
    timeout : float
        Seconds allowed per call, plus ``timeout_per_second`` per second of reference.
    timeout_per_second : float
        Extra seconds allowed per second of audio (P.862 takes about 0.02 s per second).

    Example
    -------
    >>> worker = PesqWorker()
    >>> t = np.arange(16000) / 16000
    >>> tone = np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 2 * t) > 0)
    >>> score, reason = worker.score(tone, tone)
    >>> score > 4.4, reason
    (True, None)
    >>> worker.close()
    """

    def __init__(self, timeout: float = 60.0, timeout_per_second: float = 1.0):
        self.timeout = float(timeout)
        self.timeout_per_second = float(timeout_per_second)
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", _WORKER_PROGRAM],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def _stop(self) -> int | None:
        """Stop the worker; its exit code (negative: killed by that signal)."""
        process, self._process = self._process, None
        if process is None:
            return None
        for stream in (process.stdin, process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            return process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def close(self) -> None:
        """Stop the worker process (a later call starts a new one)."""
        with self._lock:
            self._stop()

    def score(
        self, ref: np.ndarray, deg: np.ndarray, rate: int = 16000, mode: str = "wb"
    ) -> tuple[float, str | None]:
        """``pesq.pesq(rate, ref, deg, mode)`` in the worker.

        Returns
        -------
        tuple
            ``(score, None)``, or ``(nan, reason)`` when the library refused the pair, the
            worker crashed or timed out.
        """
        ref = np.ascontiguousarray(ref, dtype=np.float64)
        deg = np.ascontiguousarray(deg, dtype=np.float64)
        timeout = self.timeout + self.timeout_per_second * len(ref) / rate
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._stop()
                self._process = self._start()
            process = self._process
            try:
                pickle.dump((rate, ref, deg, mode), process.stdin)
                process.stdin.flush()
                ready, _, _ = select.select([process.stdout], [], [], timeout)
                if not ready:
                    process.kill()
                    self._stop()
                    return math.nan, f"PESQ took longer than {timeout:.0f} s; worker stopped"
                status, value = pickle.load(process.stdout)
            except (EOFError, BrokenPipeError, pickle.UnpicklingError):
                code = self._stop()
                return math.nan, (f"PESQ crashed its worker process ({_exit_reason(code)}); the "
                                  "pesq package does so on long references with many pauses")
        if status == "ok":
            return value, None
        return math.nan, value


def _exit_reason(code: int | None) -> str:
    """``"SIGSEGV"`` for a process killed by signal 11, ``"exit code 1"``, ..."""
    if code is not None and code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


_WORKER = PesqWorker()
atexit.register(_WORKER.close)


def pesq_wb_or_reason(
    clean: np.ndarray, enhanced: np.ndarray, sample_rate: int = 16000, isolated: bool = True
) -> tuple[float, str | None]:
    """Wide-band PESQ (ITU-T P.862.2) and, when it is ``nan``, why.

    The same figure as :func:`pesq_wb`, computed on the whole signals; see :func:`pesq_wb`.

    Arguments
    ---------
    clean : numpy.ndarray
        Reference signal, 1-D.
    enhanced : numpy.ndarray
        Estimate, 1-D, same length.
    sample_rate : int
        Sample rate of both signals in Hz.
    isolated : bool
        Score in the :class:`PesqWorker` process (default) so that a crash of the ``pesq``
        package costs this score only; False calls it in this process (slightly faster,
        for inputs known to be short).

    Returns
    -------
    tuple
        ``(score, None)`` or ``(nan, one-line reason)``.

    Example
    -------
    >>> pesq_wb_or_reason(np.zeros(16000), np.ones(16000))
    (nan, 'PESQ is undefined for an all-zero signal')
    """
    clean, enhanced = _check(clean, enhanced)
    if not (np.isfinite(clean).all() and np.isfinite(enhanced).all()):
        return math.nan, "non-finite samples"
    # PESQ aligns levels, so an all-zero signal has no score (the pesq package fails on nan).
    if not (np.any(clean) and np.any(enhanced)):
        return math.nan, "PESQ is undefined for an all-zero signal"
    clean, enhanced = _resample(clean, sample_rate, 16000), _resample(enhanced, sample_rate, 16000)
    if isolated:
        return _WORKER.score(clean, enhanced, 16000, "wb")
    try:
        return float(pesq_lib.pesq(16000, clean, enhanced, "wb")), None
    except pesq_lib.PesqError as err:  # NoUtterancesError, BufferTooShortError, ...
        return math.nan, f"{type(err).__name__}: {err}".strip()


def pesq_wb(
    clean: np.ndarray, enhanced: np.ndarray, sample_rate: int = 16000, isolated: bool = True
) -> float:
    """Wide-band PESQ (ITU-T P.862.2) through the ``pesq`` package.

    P.862.2 is defined at 16 kHz only, so other rates are resampled to 16 kHz first. The
    score is always that of the whole pair (no segmenting). By default the library runs in a
    worker process (:class:`PesqWorker`): on references where the ``pesq`` package crashes
    (long recordings with more than 50 speech segments) the result is ``nan`` and the caller
    lives on.

    Arguments
    ---------
    clean : numpy.ndarray
        Reference signal, 1-D.
    enhanced : numpy.ndarray
        Estimate, 1-D, same length.
    sample_rate : int
        Sample rate of both signals in Hz.
    isolated : bool
        Run the library in the worker process (see :func:`pesq_wb_or_reason`).

    Returns
    -------
    float
        MOS-LQO in about [1.04, 4.64]; ``nan`` (with a logged warning giving the reason) when
        PESQ cannot score the pair: no utterance found, input under 1/4 s, an all-zero or
        non-finite signal, a crash of the library.

    Example
    -------
    >>> t = np.arange(16000) / 16000
    >>> tone = np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 2 * t) > 0)
    >>> pesq_wb(tone, tone) > 4.4
    True
    >>> import math; math.isnan(pesq_wb(tone[:800], tone[:800]))
    True
    """
    score, reason = pesq_wb_or_reason(clean, enhanced, sample_rate, isolated)
    if reason is not None:
        logger.warning("PESQ: %s; reporting nan", reason)
    return score


def stoi(clean: np.ndarray, enhanced: np.ndarray, sample_rate: int = 16000) -> float:
    """Short-time objective intelligibility (Taal et al., 2011) through ``pystoi``.

    Arguments
    ---------
    clean : numpy.ndarray
        Reference signal, 1-D.
    enhanced : numpy.ndarray
        Estimate, 1-D, same length.
    sample_rate : int
        Sample rate in Hz (pystoi resamples to 10 kHz internally).

    Returns
    -------
    float
        STOI, in practice in [0, 1], higher is better.

    Example
    -------
    >>> x = np.random.default_rng(0).standard_normal(16000)
    >>> round(stoi(x, x), 3)
    1.0
    """
    clean, enhanced = _check(clean, enhanced)
    return float(pystoi_stoi(clean, enhanced, sample_rate, extended=False))


def estoi(clean: np.ndarray, enhanced: np.ndarray, sample_rate: int = 16000) -> float:
    """Extended STOI (Jensen & Taal, 2016) through ``pystoi``.

    Arguments
    ---------
    clean : numpy.ndarray
        Reference signal, 1-D.
    enhanced : numpy.ndarray
        Estimate, 1-D, same length.
    sample_rate : int
        Sample rate in Hz.

    Returns
    -------
    float
        ESTOI, in practice in [0, 1], higher is better.

    Example
    -------
    >>> x = np.random.default_rng(0).standard_normal(16000)
    >>> round(estoi(x, x), 3)
    1.0
    """
    clean, enhanced = _check(clean, enhanced)
    return float(pystoi_stoi(clean, enhanced, sample_rate, extended=True))


def si_sdr(clean: np.ndarray, enhanced: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio (Le Roux et al., 2019) in dB.

    Both signals are made zero-mean; the estimate is split into its projection on the reference
    (the target) and the rest (the distortion). Written in numpy rather than through
    ``speechbrain.nnet.losses.cal_si_snr``, which wants batched torch tensors and returns the
    negated value as a loss.

    Arguments
    ---------
    clean : numpy.ndarray
        Reference signal, 1-D.
    enhanced : numpy.ndarray
        Estimate, 1-D, same length.

    Returns
    -------
    float
        SI-SDR in dB, higher is better; unchanged when ``enhanced`` is rescaled.

    Example
    -------
    >>> t = np.arange(8000)
    >>> s, n = np.sin(t / 5.0), np.cos(t / 3.0)
    >>> round(si_sdr(s, s + 0.1 * n), 1)
    20.0
    >>> round(si_sdr(s, 7 * (s + 0.1 * n)), 1)
    20.0
    """
    clean, enhanced = _check(clean, enhanced)
    if clean.size == 0:
        return math.nan
    clean = clean - clean.mean()
    enhanced = enhanced - enhanced.mean()
    target = (enhanced @ clean) / (clean @ clean + _EPS) * clean
    distortion = enhanced - target
    return float(10 * np.log10((target @ target + _EPS) / (distortion @ distortion + _EPS)))


def _frames(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Hann-weighted 30 ms frames with 75% overlap, ``[frames, length]``, as in composite.m.

    The frame count is composite.m's ``len/hop - win/hop`` (rounded down), which leaves out the
    last frame that would still fit; kept so the numbers match the reference implementation.
    """
    length = round(0.03 * sample_rate)
    hop = length // 4
    count = max(0, math.floor(len(x) / hop - length / hop))
    idx = np.arange(length)[None, :] + hop * np.arange(count)[:, None]
    # composite.m's Hann window: no zero end points (denominator length + 1).
    window = 0.5 * (1 - np.cos(2 * np.pi * np.arange(1, length + 1) / (length + 1)))
    return x[idx] * window


def _mean_of_lowest(values: np.ndarray) -> float:
    """Mean of the lowest 95% of ``values`` (composite.m keeps ``round(0.95 * n)`` of them)."""
    values = np.sort(values[np.isfinite(values)])
    if values.size == 0:
        return math.nan
    return float(values[: max(1, round(values.size * _KEEP))].mean())


def segmental_snr(clean: np.ndarray, enhanced: np.ndarray, sample_rate: int = 16000) -> float:
    """Segmental SNR of the composite-measure literature (Hu & Loizou, 2008), in dB.

    30 ms Hann frames with 75% overlap; each frame's SNR is clipped to [-10, 35] dB before the
    mean, so silent reference frames count as -10 dB rather than minus infinity.

    Arguments
    ---------
    clean : numpy.ndarray
        Reference signal, 1-D.
    enhanced : numpy.ndarray
        Estimate, 1-D, same length.
    sample_rate : int
        Sample rate in Hz.

    Returns
    -------
    float
        Mean clipped frame SNR in dB, within [-10, 35]; ``nan`` if shorter than two frames.

    Example
    -------
    >>> x = np.random.default_rng(1).standard_normal(16000)
    >>> segmental_snr(x, x)
    35.0
    >>> round(segmental_snr(x, np.zeros_like(x)), 6)
    0.0
    >>> segmental_snr(x, -100 * x)
    -10.0
    """
    clean, enhanced = _check(clean, enhanced)
    c, e = _frames(clean, sample_rate), _frames(enhanced, sample_rate)
    if len(c) == 0:
        return math.nan
    signal = (c**2).sum(axis=1)
    noise = ((c - e) ** 2).sum(axis=1)
    snr = 10 * np.log10(signal / (noise + _EPS) + _EPS)
    return float(np.clip(snr, *SEGSNR_RANGE).mean())


def _autocorrelation(frames: np.ndarray, order: int) -> np.ndarray:
    """Biased autocorrelation lags 0..order of each frame, ``[frames, order + 1]``."""
    n = frames.shape[1]
    return np.stack(
        [(frames[:, : n - k] * frames[:, k:]).sum(axis=1) for k in range(order + 1)], axis=1
    )


def _levinson(r: np.ndarray) -> np.ndarray:
    """LPC polynomials ``[1, -a_1, ..., -a_p]`` from autocorrelations ``[frames, p + 1]``.

    Levinson-Durbin recursion run on all frames at once (composite.m's ``lpcoeff``).
    """
    frames, order = r.shape[0], r.shape[1] - 1
    a = np.zeros((frames, order))
    err = r[:, 0].copy()
    for i in range(order):
        # A silent frame has err == 0: give it reflection 0 (a flat predictor) instead of nan.
        safe = np.where(err > 0, err, 1.0)
        k = np.where(err > 0, (r[:, i + 1] - (a[:, :i] * r[:, i:0:-1]).sum(axis=1)) / safe, 0.0)
        a[:, :i] = a[:, :i] - k[:, None] * a[:, :i][:, ::-1]
        a[:, i] = k
        err = err * (1 - k * k)
    return np.concatenate([np.ones((frames, 1)), -a], axis=1)


def _toeplitz_quadratic(a: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``a @ toeplitz(r) @ a`` per frame, ``a`` and ``r`` both ``[frames, p + 1]``."""
    p1 = r.shape[1]
    lag = np.abs(np.arange(p1)[:, None] - np.arange(p1)[None, :])
    return np.einsum("fi,fij,fj->f", a, r[:, lag], a)


def llr_frames(clean: np.ndarray, enhanced: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """Per-frame log-likelihood ratio of the enhanced LPC model under the clean one.

    LPC order 10 below 10 kHz and 16 above, as in composite.m; frame values are not capped
    (Loizou's stand-alone ``comp_llr.m`` caps them at 2, ``composite.m`` does not). Frames where
    the reference is digitally silent have no LPC model; they are ``nan`` (0/0 in composite.m)
    and are left out of :func:`llr`.

    Arguments
    ---------
    clean : numpy.ndarray
        Reference signal, 1-D.
    enhanced : numpy.ndarray
        Estimate, 1-D, same length.
    sample_rate : int
        Sample rate in Hz.

    Returns
    -------
    numpy.ndarray
        One LLR per frame (>= 0 up to rounding: the clean predictor is optimal for the clean
        autocorrelation).
    """
    clean, enhanced = _check(clean, enhanced)
    order = 10 if sample_rate < 10000 else 16
    c, e = _frames(clean, sample_rate), _frames(enhanced, sample_rate)
    r_clean = _autocorrelation(c, order)
    a_clean = _levinson(r_clean)
    a_enh = _levinson(_autocorrelation(e, order))
    numerator = _toeplitz_quadratic(a_enh, r_clean)
    denominator = _toeplitz_quadratic(a_clean, r_clean)
    valid = denominator > 0
    out = np.full(len(c), np.nan)
    out[valid] = np.log(np.maximum(numerator[valid], _EPS) / denominator[valid])
    return out


def llr(clean: np.ndarray, enhanced: np.ndarray, sample_rate: int = 16000) -> float:
    """Log-likelihood ratio (Quackenbush et al., 1988): mean of the lowest 95% of frame values.

    Arguments
    ---------
    clean : numpy.ndarray
        Reference signal, 1-D.
    enhanced : numpy.ndarray
        Estimate, 1-D, same length.
    sample_rate : int
        Sample rate in Hz.

    Returns
    -------
    float
        LLR, 0 for identical signals, lower is better; ``nan`` without a usable frame.

    Example
    -------
    >>> x = np.random.default_rng(0).standard_normal(16000)
    >>> abs(llr(x, x)) < 1e-9
    True
    """
    return _mean_of_lowest(llr_frames(clean, enhanced, sample_rate))


# Critical bands of Klatt's WSS as tabulated in composite.m: centre frequencies and bandwidths
# in Hz. They stop at 3.6 kHz at every sample rate (the measure was designed on 8 kHz speech).
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
#: Klatt's weighting constants (Klatt, 1982, p. 1280): global and local peak distances in dB.
_K_MAX, _K_LOCMAX = 20.0, 1.0


def _critical_band_filters(sample_rate: int, n_fft: int) -> np.ndarray:
    """Gaussian-shaped critical-band weights over the ``n_fft // 2`` first FFT bins."""
    half = n_fft // 2
    bins = np.arange(half)
    nyquist = sample_rate / 2
    f0 = np.floor(_CENTRES / nyquist * half)
    bw = _BANDWIDTHS / nyquist * half
    # Wider bands are attenuated so that each band integrates to a similar level.
    norm = np.log(_BANDWIDTHS[0]) - np.log(_BANDWIDTHS)
    bank = np.exp(-11 * ((bins[None, :] - f0[:, None]) / bw[:, None]) ** 2 + norm[:, None])
    # Tails below -30 dB (in composite.m's natural-log units) are cut to zero.
    return bank * (bank > np.exp(-30 / (2 * 2.303)))


def _nearest_peaks(energy: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """Level of the spectral peak each band belongs to, ``[frames, bands - 1]``.

    composite.m searches upwards along a rising slope and downwards along a falling one; its
    upward search stops one band short of the maximum, which is kept here so that WSS values
    match the reference implementation.
    """
    count = slope.shape[1]
    rising = slope > 0
    right = np.empty(slope.shape, dtype=int)  # where the upward search from band i stops
    left = np.empty(slope.shape, dtype=int)  # where the downward search from band i stops
    for i in range(count - 1, -1, -1):
        right[:, i] = i + 1 if i + 1 == count else np.where(rising[:, i + 1], right[:, i + 1],
                                                            i + 1)
    for i in range(count):
        left[:, i] = i - 1 if i == 0 else np.where(rising[:, i - 1], i - 1, left[:, i - 1])
    index = np.where(rising, right - 1, left + 1)
    return np.take_along_axis(energy, index, axis=1)


def wss_frames(clean: np.ndarray, enhanced: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """Per-frame weighted spectral slope distance (Klatt, 1982), as in composite.m.

    Arguments
    ---------
    clean : numpy.ndarray
        Reference signal, 1-D.
    enhanced : numpy.ndarray
        Estimate, 1-D, same length.
    sample_rate : int
        Sample rate in Hz.

    Returns
    -------
    numpy.ndarray
        One distance per frame, >= 0.
    """
    clean, enhanced = _check(clean, enhanced)
    length = round(0.03 * sample_rate)
    n_fft = 2 ** math.ceil(math.log2(2 * length))
    bank = _critical_band_filters(sample_rate, n_fft)

    def band_levels(frames: np.ndarray) -> np.ndarray:
        power = np.abs(np.fft.rfft(frames, n_fft, axis=1)[:, : n_fft // 2]) ** 2
        return 10 * np.log10(np.maximum(power @ bank.T, 1e-10))

    weights, slopes = [], []
    for levels in (band_levels(_frames(clean, sample_rate)),
                   band_levels(_frames(enhanced, sample_rate))):
        slope = np.diff(levels, axis=1)
        below = levels[:, :-1]
        # Slopes matter most near the frame's strongest band and near local spectral peaks.
        global_weight = _K_MAX / (_K_MAX + levels.max(axis=1, keepdims=True) - below)
        local_weight = _K_LOCMAX / (_K_LOCMAX + _nearest_peaks(levels, slope) - below)
        weights.append(global_weight * local_weight)
        slopes.append(slope)
    w = (weights[0] + weights[1]) / 2
    return (w * (slopes[0] - slopes[1]) ** 2).sum(axis=1) / w.sum(axis=1)


def wss(clean: np.ndarray, enhanced: np.ndarray, sample_rate: int = 16000) -> float:
    """Weighted spectral slope distance: mean of the lowest 95% of frame values.

    Arguments
    ---------
    clean : numpy.ndarray
        Reference signal, 1-D.
    enhanced : numpy.ndarray
        Estimate, 1-D, same length.
    sample_rate : int
        Sample rate in Hz.

    Returns
    -------
    float
        WSS, 0 for identical signals, lower is better; ``nan`` without a frame.

    Example
    -------
    >>> x = np.random.default_rng(0).standard_normal(16000)
    >>> wss(x, x)
    0.0
    """
    return _mean_of_lowest(wss_frames(clean, enhanced, sample_rate))


def composite(
    clean: np.ndarray,
    enhanced: np.ndarray,
    sample_rate: int = 16000,
    pesq_value: float | None = None,
) -> dict[str, float]:
    """CSIG, CBAK and COVL composite measures (Hu & Loizou, 2008), each clipped to [1, 5].

    CSIG = 3.093 - 1.029 LLR + 0.603 PESQ - 0.009 WSS,
    CBAK = 1.634 + 0.478 PESQ - 0.007 WSS + 0.063 segSNR,
    COVL = 1.594 + 0.805 PESQ - 0.512 LLR - 0.007 WSS.

    PESQ is wide-band PESQ (:func:`pesq_wb`), as in the Python scripts behind the published
    VoiceBank-DEMAND numbers; ``composite.m`` used a narrow-band raw P.862 score instead.

    Arguments
    ---------
    clean : numpy.ndarray
        Reference signal, 1-D.
    enhanced : numpy.ndarray
        Estimate, 1-D, same length.
    sample_rate : int
        Sample rate in Hz.
    pesq_value : float, optional
        Wide-band PESQ of the pair, when already computed (PESQ is the slow part).

    Returns
    -------
    dict
        ``{"csig": ..., "cbak": ..., "covl": ...}``; ``nan`` where an ingredient is ``nan``
        (e.g. PESQ found no utterance).

    Example
    -------
    >>> x = np.random.default_rng(0).standard_normal(16000)
    >>> composite(x, x)
    {'csig': 5.0, 'cbak': 5.0, 'covl': 5.0}
    """
    p = pesq_wb(clean, enhanced, sample_rate) if pesq_value is None else float(pesq_value)
    llr_value = llr(clean, enhanced, sample_rate)
    wss_value = wss(clean, enhanced, sample_rate)
    seg = segmental_snr(clean, enhanced, sample_rate)
    raw = {
        "csig": 3.093 - 1.029 * llr_value + 0.603 * p - 0.009 * wss_value,
        "cbak": 1.634 + 0.478 * p - 0.007 * wss_value + 0.063 * seg,
        "covl": 1.594 + 0.805 * p - 0.512 * llr_value - 0.007 * wss_value,
    }
    # np.clip keeps nan as nan, which is what a missing ingredient should give.
    return {key: float(np.clip(value, 1.0, 5.0)) for key, value in raw.items()}


#: Keys of :func:`evaluate_pair`, in order.
METRICS = ("pesq", "stoi", "estoi", "si_sdr", "segsnr")
COMPOSITE_METRICS = ("csig", "cbak", "covl")


def _guarded(
    name: str, fn: Callable[[], float], reasons: dict[str, str]
) -> float:
    """``fn()``, or ``nan`` with the reason recorded in ``reasons[name]`` when it fails."""
    try:
        value = float(fn())
    except Exception as err:  # an evaluation loop must not die on one odd utterance
        reasons[name] = f"{type(err).__name__}: {err}"
        return math.nan
    if math.isnan(value):
        reasons.setdefault(name, "undefined for this pair")
    return value


def score_pair(
    clean: np.ndarray,
    enhanced: np.ndarray,
    sample_rate: int = 16000,
    composite_measures: bool = True,
    isolated: bool = True,
) -> tuple[dict[str, float], dict[str, str]]:
    """All metrics of one pair, and why each ``nan`` one is ``nan``; never raises.

    Arguments
    ---------
    clean : numpy.ndarray
        Reference signal, 1-D.
    enhanced : numpy.ndarray
        Estimate, 1-D, same length (otherwise every metric is ``nan``, with the reason).
    sample_rate : int
        Sample rate in Hz.
    composite_measures : bool
        Also compute CSIG/CBAK/COVL.
    isolated : bool
        Run PESQ in its worker process (see :func:`pesq_wb_or_reason`).

    Returns
    -------
    scores : dict
        As :func:`evaluate_pair`.
    reasons : dict
        ``metric -> one-line reason`` for every metric that is ``nan``.

    Example
    -------
    >>> x = np.random.default_rng(0).standard_normal(16000)
    >>> scores, reasons = score_pair(x, x[:-1], composite_measures=False)
    >>> math.isnan(scores["pesq"]), reasons["pesq"]
    (True, 'lengths differ: clean has 16000 samples, enhanced 15999')
    """
    keys = METRICS + (COMPOSITE_METRICS if composite_measures else ())
    try:
        clean, enhanced = _check(clean, enhanced)
    except ValueError as err:
        return dict.fromkeys(keys, math.nan), dict.fromkeys(keys, str(err))
    if not (np.isfinite(clean).all() and np.isfinite(enhanced).all()):
        return dict.fromkeys(keys, math.nan), dict.fromkeys(keys, "non-finite samples")
    reasons: dict[str, str] = {}

    def pesq_or_reason() -> float:
        value, reason = pesq_wb_or_reason(clean, enhanced, sample_rate, isolated)
        if reason is not None:
            reasons["pesq"] = reason
        return value

    scores = {
        "pesq": _guarded("pesq", pesq_or_reason, reasons),
        "stoi": _guarded("stoi", lambda: stoi(clean, enhanced, sample_rate), reasons),
        "estoi": _guarded("estoi", lambda: estoi(clean, enhanced, sample_rate), reasons),
        "si_sdr": _guarded("si_sdr", lambda: si_sdr(clean, enhanced), reasons),
        "segsnr": _guarded("segsnr", lambda: segmental_snr(clean, enhanced, sample_rate),
                           reasons),
    }
    if composite_measures:
        try:
            scores.update(composite(clean, enhanced, sample_rate, pesq_value=scores["pesq"]))
            for key in COMPOSITE_METRICS:
                if math.isnan(scores[key]):
                    reasons[key] = (f"needs PESQ ({reasons['pesq']})" if "pesq" in reasons
                                    else "undefined for this pair")
        except Exception as err:  # same reason as _guarded
            scores.update(dict.fromkeys(COMPOSITE_METRICS, math.nan))
            reasons.update(dict.fromkeys(COMPOSITE_METRICS, f"{type(err).__name__}: {err}"))
    return scores, reasons


def evaluate_pair(
    clean: np.ndarray,
    enhanced: np.ndarray,
    sample_rate: int = 16000,
    composite_measures: bool = True,
) -> dict[str, float]:
    """All metrics of one (clean, enhanced) pair; a metric that cannot be computed is ``nan``.

    Each ``nan`` is logged with its reason; :func:`score_pair` returns the reasons instead.

    Arguments
    ---------
    clean : numpy.ndarray
        Reference signal, 1-D.
    enhanced : numpy.ndarray
        Estimate, 1-D, same length.
    sample_rate : int
        Sample rate in Hz.
    composite_measures : bool
        Also compute CSIG/CBAK/COVL (LLR and WSS per frame; about as costly as PESQ).

    Returns
    -------
    dict
        ``pesq, stoi, estoi, si_sdr, segsnr`` and, if requested, ``csig, cbak, covl``. All
        ``nan`` when a signal holds non-finite samples (e.g. a diverged model).

    Raises
    ------
    ValueError
        If a signal is not 1-D or the lengths differ.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal(16000)
    >>> scores = evaluate_pair(x, x + 0.1 * rng.standard_normal(16000), composite_measures=False)
    >>> sorted(scores)
    ['estoi', 'pesq', 'segsnr', 'si_sdr', 'stoi']
    >>> round(scores["si_sdr"])
    20
    """
    _check(clean, enhanced)
    scores, reasons = score_pair(clean, enhanced, sample_rate, composite_measures)
    for name, reason in reasons.items():
        logger.warning("%s: %s; reporting nan", name, reason)
    return scores


def _interval(
    data: tuple[np.ndarray, ...],
    statistic: Callable[..., np.ndarray],
    n_resamples: int,
    confidence: float,
    seed: int,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` through :func:`scipy.stats.bootstrap`."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    if data[0].size < 2:  # no spread to resample: no interval
        return math.nan, math.nan
    result = bootstrap(
        data, statistic, n_resamples=n_resamples, confidence_level=confidence,
        method="percentile", paired=len(data) > 1, vectorized=True, axis=-1,
        # Resample in batches so that long score lists need no n_resamples x n matrix.
        batch=max(1, 2_000_000 // data[0].size), rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean; nans are ignored.

    Computed by :func:`scipy.stats.bootstrap` (``method="percentile"``).

    Arguments
    ---------
    values : array-like
        One score per item (e.g. per utterance).
    n_resamples : int
        Number of bootstrap resamples.
    confidence : float
        Coverage of the interval, in (0, 1).
    seed : int
        Seed of the resampling, so reports are reproducible.

    Returns
    -------
    tuple of float
        ``(low, high)``; ``(nan, nan)`` when fewer than two finite values are left (one
        value has no spread to resample).

    Example
    -------
    >>> low, high = bootstrap_ci(np.arange(100.0))
    >>> bool(low < 49.5 < high)
    True
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[~np.isnan(values)]
    return _interval((values,), np.mean, n_resamples, confidence, seed)


def paired_bootstrap_ci(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap confidence interval of the mean paired difference ``a - b``.

    Items are resampled as pairs (:func:`scipy.stats.bootstrap` with ``paired=True``,
    ``method="percentile"``), which removes the between-utterance variance that both systems
    share; a pair with a nan on either side is dropped.

    Arguments
    ---------
    a : array-like
        Scores of system A, one per item.
    b : array-like
        Scores of system B on the same items, in the same order.
    n_resamples : int
        Number of bootstrap resamples.
    confidence : float
        Coverage of the interval, in (0, 1).
    seed : int
        Seed of the resampling.

    Returns
    -------
    tuple of float
        ``(low, high)`` of mean(a - b); an interval above 0 means A is better (for
        higher-is-better scores).

    Example
    -------
    >>> base = np.linspace(1.0, 3.0, 50)
    >>> low, high = paired_bootstrap_ci(base + 0.2, base)
    >>> round(low, 6), round(high, 6)
    (0.2, 0.2)
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need equal shapes, got {a.shape} and {b.shape}")
    a, b = a.ravel(), b.ravel()
    keep = ~(np.isnan(a) | np.isnan(b))

    def mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean(x - y, axis=axis)

    return _interval((a[keep], b[keep]), mean_difference, n_resamples, confidence, seed)
