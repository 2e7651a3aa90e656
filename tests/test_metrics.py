"""Metrics: known values, invariances, ordering with noise, clipping, nan handling, errors."""

import logging

import numpy as np
import pytest
import soundfile as sf

from speechbrain_mpol.metrics import (
    PesqWorker,
    bootstrap_ci,
    composite,
    estoi,
    evaluate_pair,
    llr,
    paired_bootstrap_ci,
    pesq_wb,
    pesq_wb_or_reason,
    score_pair,
    segmental_snr,
    si_sdr,
    stoi,
    wss,
)

from .conftest import EXAMPLES

RATE = 16000
SNRS = (20.0, 5.0, 0.0, -5.0)  # descending: every score must not increase along it


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """3 s of real read speech (LibriSpeech, the committed example set), float64 at 16 kHz."""
    path = EXAMPLES / "clean" / "ex01_1355-39947-0000_laughing_0dB.flac"
    x, rate = sf.read(path, dtype="float64")
    assert rate == RATE
    x = x if x.ndim == 1 else x[:, 0]
    return 0.5 * x[: 3 * RATE] / np.abs(x[: 3 * RATE]).max()


def add_white_noise(clean: np.ndarray, snr: float, seed: int = 0) -> np.ndarray:
    """``clean`` plus white Gaussian noise at ``snr`` dB (whole-signal power)."""
    noise = np.random.default_rng(seed).standard_normal(len(clean))
    noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2) * 10 ** (-snr / 10))
    return clean + noise


@pytest.fixture(scope="module")
def scores(speech) -> dict:
    """evaluate_pair for clean vs itself and vs white-noise mixtures at SNRS, computed once."""
    out = {"clean": evaluate_pair(speech, speech)}
    for snr in SNRS:
        out[snr] = evaluate_pair(speech, add_white_noise(speech, snr))
    return out


@pytest.mark.parametrize("snr", [0.0, 10.0, 20.0])
def test_si_sdr_known_value_for_white_noise(speech, snr):
    clean = speech - speech.mean()
    # White noise is almost orthogonal to speech, so SI-SDR is the mixing SNR.
    assert si_sdr(clean, add_white_noise(clean, snr, seed=3)) == pytest.approx(snr, abs=0.2)


def test_si_sdr_scale_invariant(speech):
    noisy = add_white_noise(speech, 10.0)
    reference = si_sdr(speech, noisy)
    for gain in (3.0, 0.01, -2.0):
        assert si_sdr(speech, gain * noisy) == pytest.approx(reference, abs=1e-9)
    # Also invariant to an added DC offset (both signals are made zero-mean).
    assert si_sdr(speech, noisy + 0.3) == pytest.approx(reference, abs=1e-9)
    assert si_sdr(speech, 0.5 * speech) > 100


def test_pesq_high_for_clean_and_drops_with_noise(scores):
    assert scores["clean"]["pesq"] > 4.4
    values = [scores[snr]["pesq"] for snr in SNRS]
    assert all(a > b for a, b in zip(values, values[1:], strict=False)), values
    assert values[0] < 4.4 and values[-1] < 1.5


def test_stoi_in_unit_range_and_decreasing(scores):
    assert scores["clean"]["stoi"] == pytest.approx(1.0, abs=1e-6)
    assert scores["clean"]["estoi"] == pytest.approx(1.0, abs=1e-6)
    for key in ("stoi", "estoi"):
        values = [scores[snr][key] for snr in SNRS]
        assert all(0.0 <= v <= 1.0 for v in values), (key, values)
        assert all(a > b for a, b in zip(values, values[1:], strict=False)), (key, values)


def test_every_score_orders_with_noise(scores):
    for key in ("pesq", "stoi", "estoi", "si_sdr", "segsnr", "csig", "cbak", "covl"):
        values = [scores["clean"][key]] + [scores[snr][key] for snr in SNRS]
        assert all(np.isfinite(values)), (key, values)
        assert all(a >= b for a, b in zip(values, values[1:], strict=False)), (key, values)


def test_segsnr_is_clipped(speech):
    assert segmental_snr(speech, speech) == 35.0
    assert segmental_snr(speech, -100 * speech) == -10.0
    # Removing everything gives 0 dB in every frame with speech energy.
    assert -10.0 <= segmental_snr(speech, np.zeros_like(speech)) <= 0.0
    for snr in (30.0, 0.0, -20.0):
        assert -10.0 <= segmental_snr(speech, add_white_noise(speech, snr)) <= 35.0


def test_composite_in_range_and_ordered(scores, speech):
    perfect = scores["clean"]
    assert perfect["csig"] == perfect["cbak"] == perfect["covl"] == 5.0
    for snr in SNRS:
        assert all(1.0 <= scores[snr][k] <= 5.0 for k in ("csig", "cbak", "covl")), scores[snr]
    for key in ("csig", "cbak", "covl"):
        assert perfect[key] > scores[0.0][key], key
    # Passing PESQ in gives the same result as computing it inside.
    noisy = add_white_noise(speech, 0.0)
    assert composite(speech, noisy, pesq_value=scores[0.0]["pesq"]) == pytest.approx(
        {k: scores[0.0][k] for k in ("csig", "cbak", "covl")})


def test_llr_and_wss_are_zero_for_identical_signals_and_grow_with_noise(speech):
    assert llr(speech, speech) == pytest.approx(0.0, abs=1e-9)
    assert wss(speech, speech) == 0.0
    mild, strong = add_white_noise(speech, 20.0), add_white_noise(speech, 0.0)
    assert 0.0 < llr(speech, mild) < llr(speech, strong)
    assert 0.0 < wss(speech, mild) < wss(speech, strong)


def test_mismatched_signals_are_errors():
    x = np.random.default_rng(0).standard_normal(RATE)
    with pytest.raises(ValueError, match="lengths differ"):
        evaluate_pair(x, x[:-1])
    with pytest.raises(ValueError, match="1-D"):
        evaluate_pair(x[None], x[None])
    for fn in (pesq_wb, stoi, estoi, si_sdr, segmental_snr, llr, wss, composite):
        with pytest.raises(ValueError, match="lengths differ"):
            fn(x, x[:-1])


@pytest.mark.filterwarnings("ignore:Not enough STFT frames")  # pystoi on the 0.2 s input
def test_pesq_failures_are_nan_with_a_warning(caplog):
    rng = np.random.default_rng(0)
    short = rng.standard_normal(RATE // 5)  # 0.2 s: under PESQ's 1/4 s minimum
    with caplog.at_level(logging.WARNING, logger="speechbrain_mpol.metrics"):
        assert np.isnan(pesq_wb(short, short))
        assert np.isnan(pesq_wb(np.zeros(RATE), rng.standard_normal(RATE)))
    assert "PESQ" in caplog.text
    scores = evaluate_pair(short, short)
    assert np.isnan(scores["pesq"]) and np.isnan(scores["csig"])
    assert scores["si_sdr"] > 100  # what can be computed still is


def test_non_finite_estimate_gives_nan_not_an_exception():
    x = np.random.default_rng(0).standard_normal(RATE)
    broken = x.copy()
    broken[100] = np.nan
    scores = evaluate_pair(x, broken)
    assert set(scores) == {"pesq", "stoi", "estoi", "si_sdr", "segsnr", "csig", "cbak", "covl"}
    assert all(np.isnan(v) for v in scores.values())
    assert set(evaluate_pair(x, x, composite_measures=False)) == {
        "pesq", "stoi", "estoi", "si_sdr", "segsnr"}


def test_bootstrap_interval_contains_mean_and_narrows():
    rng = np.random.default_rng(2)
    small, large = rng.normal(1.0, 1.0, 30), rng.normal(1.0, 1.0, 3000)
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    # The width shrinks like 1/sqrt(n): 10x here, so 4x is a safe bound.
    assert hi_l - lo_l < (hi_s - lo_s) / 4
    # A wider confidence gives a wider interval; the same seed the same interval.
    lo_99, hi_99 = bootstrap_ci(small, confidence=0.99)
    assert lo_99 < lo_s and hi_99 > hi_s
    assert bootstrap_ci(small, seed=5) == bootstrap_ci(small, seed=5)
    # nans are ignored.
    assert bootstrap_ci(np.append(small, np.nan)) == (lo_s, hi_s)
    assert np.isnan(bootstrap_ci([np.nan, np.nan])).all()
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(small, confidence=1.5)


def test_paired_bootstrap_of_the_difference():
    rng = np.random.default_rng(3)
    base = rng.normal(3.0, 1.0, 200)
    lo, hi = paired_bootstrap_ci(base + 0.5, base)
    assert lo == pytest.approx(0.5) and hi == pytest.approx(0.5)
    # Pairing removes the shared per-item variance: the paired interval is far narrower.
    better = base + 0.1 + rng.normal(0.0, 0.05, 200)
    lo_p, hi_p = paired_bootstrap_ci(better, base)
    lo_a, hi_a = bootstrap_ci(better)
    assert 0.0 < lo_p < 0.1 < hi_p and hi_p - lo_p < (hi_a - lo_a) / 5
    # A pair with a nan on either side is dropped.
    a, b = base.copy(), base.copy() - 0.5
    a[0], b[1] = np.nan, np.nan
    assert paired_bootstrap_ci(a, b) == pytest.approx((0.5, 0.5))
    with pytest.raises(ValueError, match="equal shapes"):
        paired_bootstrap_ci(base, base[:-1])


def test_a_single_item_has_no_interval():
    assert np.isnan(bootstrap_ci([2.0])).all()
    assert np.isnan(paired_bootstrap_ci([2.0, np.nan], [1.0, 1.0])).all()


def test_score_pair_never_raises_and_says_why(speech):
    scores, reasons = score_pair(speech, speech[:-5], composite_measures=False)
    assert all(np.isnan(v) for v in scores.values())
    n = len(speech)
    assert reasons["stoi"] == f"lengths differ: clean has {n} samples, enhanced {n - 5}"
    scores, reasons = score_pair(np.zeros_like(speech), speech)
    assert reasons["pesq"] == "PESQ is undefined for an all-zero signal"
    assert reasons["csig"] == "needs PESQ (PESQ is undefined for an all-zero signal)"
    assert not np.isnan(scores["segsnr"]) and "segsnr" not in reasons
    scores, reasons = score_pair(speech, add_white_noise(speech, 10.0))
    assert reasons == {} and 1.0 < scores["pesq"] < 4.6


def test_isolated_pesq_equals_in_process_pesq(speech):
    noisy = add_white_noise(speech, 5.0)
    assert pesq_wb(speech, noisy) == pesq_wb(speech, noisy, isolated=False)


def test_a_stuck_pesq_worker_is_stopped_and_replaced(speech):
    worker = PesqWorker(timeout=0.0, timeout_per_second=0.0)
    score, reason = worker.score(speech, speech)
    assert np.isnan(score) and reason.startswith("PESQ took longer than 0 s")
    worker.timeout = 60.0
    assert worker.score(speech, speech)[0] > 4.4
    worker.close()


@pytest.fixture(scope="module")
def long_reference() -> np.ndarray:
    """120 s of real read speech (the example set's ex01, tiled): crashes ``pesq`` 0.0.4.

    The package keeps the speech segments it finds in tables of 50 and writes past them; with
    this recording tiled to 120 s it dies with SIGSEGV (measured; ex03 tiled to 120 s does
    not, other recordings crash from 91 s, 110 s, 111 s, 169 s).
    """
    x, rate = sf.read(EXAMPLES / "clean" / "ex01_1355-39947-0000_laughing_0dB.flac",
                      dtype="float64")
    assert rate == RATE
    x = 0.5 * x / np.abs(x).max()
    return np.tile(x, 120 * RATE // len(x) + 1)[: 120 * RATE]


def test_a_reference_that_crashes_pesq_costs_one_score_not_the_process(long_reference):
    """#16 item 2a: the poison file. In-process ``pesq`` dies; the isolated call returns."""
    import io
    import subprocess
    import sys

    noisy = add_white_noise(long_reference, 10.0)
    probe = ("import io, sys, numpy as np, pesq; "
             "x = np.load(io.BytesIO(sys.stdin.buffer.read())); "
             "print(pesq.pesq(16000, x[0], x[1], 'wb'))")

    payload = io.BytesIO()
    np.save(payload, np.stack([long_reference, noisy]))
    direct = subprocess.run([sys.executable, "-c", probe], input=payload.getvalue(),
                            capture_output=True, timeout=600)
    score, reason = pesq_wb_or_reason(long_reference, noisy)  # in this very process
    if direct.returncode < 0:  # the library crashed: the isolated call must say so
        assert np.isnan(score)
        assert reason.startswith("PESQ crashed its worker process (SIG")
    else:  # the library coped: the same number
        assert direct.returncode == 0 and reason is None
        assert score == pytest.approx(float(direct.stdout))
    # The worker is replaced: the next pair is scored as usual.
    short = long_reference[: 3 * RATE]
    assert pesq_wb(short, short) > 4.4
