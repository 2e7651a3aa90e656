"""Mixers of speechbrain_mpol.mixing, on real audio of the committed example set."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechbrain_mpol.mixing import (
    apply_rir,
    band_limit,
    level_dbfs,
    mix_at_snr,
    noise_segment,
    peak_normalize,
    rms,
    set_level,
    snr_db,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RATE = 16000


def read(path) -> np.ndarray:
    data, rate = sf.read(str(path), dtype="float64")
    assert rate == RATE and data.ndim == 1
    return data


def example_speech_and_noise(pair: str) -> tuple[np.ndarray, np.ndarray]:
    """The clean speech of one example pair and its real noise (noisy minus clean)."""
    clean = read(EXAMPLES / "clean" / f"{pair}.flac")
    return clean, read(EXAMPLES / "noisy" / f"{pair}.flac") - clean


PAIRS = sorted(p.stem for p in (EXAMPLES / "clean").glob("*.flac"))


# --------------------------------------------------------------------------- mixers


@pytest.mark.parametrize("snr", [-5.0, 0.0, 5.0, 15.0])
@pytest.mark.parametrize("looped", [False, True])  # True: 4 s of speech, 1.5 s of noise
def test_mix_at_snr_hits_target(snr, looped):
    speech, _ = example_speech_and_noise(PAIRS[0])
    noise = example_speech_and_noise(PAIRS[1])[1][: 24000 if looped else None]
    noisy, scaled = mix_at_snr(speech, noise, snr, np.random.default_rng(0))
    assert len(noisy) == len(scaled) == len(speech)
    assert abs(snr_db(speech, scaled) - snr) < 0.1
    assert abs(snr_db(speech, noisy - speech) - snr) < 0.1


def test_mix_at_snr_keeps_float32_and_refuses_silent_noise():
    rng = np.random.default_rng(4)
    speech, noise = rng.standard_normal(4000).astype(np.float32), rng.standard_normal(900)
    noisy, scaled = mix_at_snr(speech, noise.astype(np.float32), 3.0, rng)
    assert noisy.dtype == scaled.dtype == np.float32
    assert abs(snr_db(speech, scaled) - 3.0) < 1e-4
    with pytest.raises(ValueError, match="all zeros"):
        mix_at_snr(speech, np.zeros(900), 3.0, rng)


@pytest.mark.parametrize("length", [300, 2500])  # a crop, and a loop of the 1000 samples
def test_noise_segment_starts_at_its_offset(length):
    noise = np.random.default_rng(5).standard_normal(1000)
    for seed in range(5):
        segment, offset = noise_segment(noise, length, np.random.default_rng(seed))
        assert len(segment) == length and 0 <= offset < len(noise)
        np.testing.assert_array_equal(segment, noise[(offset + np.arange(length)) % len(noise)])


def test_apply_rir_delta_and_delayed_delta_return_input():
    x = np.random.default_rng(0).standard_normal(4000)
    delta = np.zeros(800)
    delta[0] = 1.0
    np.testing.assert_allclose(apply_rir(x, delta), x, atol=1e-9)
    delayed = np.zeros(800)
    delayed[123] = 1.0  # a pure propagation delay: the direct path is realigned
    out = apply_rir(x, delayed)
    assert len(out) == len(x)
    np.testing.assert_allclose(out, x, atol=1e-9)


def test_apply_rir_keeps_length_and_direct_path_alignment():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(3000)
    rir = np.zeros(1000)
    rir[200] = 1.0
    rir[201:] = 0.05 * rng.standard_normal(799) * np.exp(-np.arange(799) / 100)
    out = apply_rir(x, rir)
    assert len(out) == len(x)
    lags = np.arange(-50, 51)
    xcorr = [np.dot(np.roll(out, -lag), x) for lag in lags]
    assert lags[int(np.argmax(xcorr))] == 0


@pytest.mark.parametrize("dbfs", [-40.0, -26.0, -6.0])
def test_set_level_exact(dbfs):
    x = 0.3 * np.random.default_rng(2).standard_normal(16000)
    assert abs(level_dbfs(set_level(x, dbfs)) - dbfs) < 0.01


def _tone_gain_db(freq: float) -> float:
    t = np.arange(2 * RATE) / RATE
    x = np.sin(2 * np.pi * freq * t)
    y = band_limit(x, RATE)
    mid = slice(RATE // 2, 3 * RATE // 2)  # away from the filter's edge transients
    return 20 * np.log10(rms(y[mid]) / rms(x[mid]))  # y is a reversed view: rms must cope


def test_band_limit_stops_outside_and_passes_inside():
    assert _tone_gain_db(100.0) < -30.0
    assert _tone_gain_db(6000.0) < -30.0
    assert abs(_tone_gain_db(1000.0)) < 0.5


def test_peak_normalize_keeps_ratio():
    rng = np.random.default_rng(3)
    a, b = 3.0 * rng.standard_normal(1000), rng.standard_normal(1000)
    a2, b2 = peak_normalize(a, b, peak=0.95)
    assert np.isclose(np.max(np.abs(a2)), 0.95)
    np.testing.assert_allclose(a2 / a, b2 / b)
    # A quiet pair is left alone (only scaled down, never up).
    q2, r2 = peak_normalize(0.01 * a, b)
    np.testing.assert_array_equal(q2, 0.01 * a)
    np.testing.assert_array_equal(r2, b)
