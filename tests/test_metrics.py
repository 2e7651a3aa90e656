"""Metrics: known values, invariances, ordering with noise, clear errors."""

import numpy as np
import pytest

from speechbrain_mpol.metrics import (
    bootstrap_ci,
    evaluate_pair,
    paired_bootstrap_ci,
    segmental_snr,
    si_sdr,
)
from speechbrain_mpol.mixing import mix_at_snr

from .conftest import real_mixture


@pytest.fixture
def clean(shared_audio):
    return real_mixture(shared_audio, seconds=3.0)[1].numpy().astype(np.float64)


def test_si_sdr_scale_invariant_and_known_value(clean):
    rng = np.random.default_rng(0)
    noisy, _ = mix_at_snr(clean - clean.mean(), rng.standard_normal(len(clean)), 10.0, rng)
    assert si_sdr(clean, noisy) == pytest.approx(10.0, abs=0.2)
    assert si_sdr(clean, 3.0 * noisy) == pytest.approx(si_sdr(clean, noisy), abs=1e-9)


def test_scores_order_with_noise(clean):
    rng = np.random.default_rng(1)
    perfect = evaluate_pair(clean, clean)
    assert perfect["pesq"] > 4.4 and perfect["stoi"] > 0.99
    assert perfect["csig"] == perfect["cbak"] == perfect["covl"] == 5.0
    scores = []
    for snr in (20.0, 5.0, -5.0):
        noisy, _ = mix_at_snr(clean, rng.standard_normal(len(clean)), snr, rng)
        scores.append(evaluate_pair(clean, noisy))
    for key in ("pesq", "stoi", "estoi", "si_sdr", "segsnr", "csig", "cbak", "covl"):
        values = [s[key] for s in scores]
        assert values[0] >= values[1] >= values[2], (key, values)
    for s in scores:
        assert 0.0 <= s["stoi"] <= 1.0 and 1.0 <= s["csig"] <= 5.0
        assert -10.0 <= s["segsnr"] <= 35.0


def test_segsnr_is_clipped(clean):
    assert segmental_snr(clean, clean) == 35.0
    assert segmental_snr(clean, -100 * clean) == -10.0


def test_mismatched_signals_are_errors(clean):
    with pytest.raises(ValueError, match="lengths differ"):
        evaluate_pair(clean, clean[:-1])
    with pytest.raises(ValueError, match="1-D"):
        evaluate_pair(clean[None], clean[None])


def test_pesq_failure_is_nan_not_crash():
    silent = np.zeros(16000)
    tone = np.sin(np.arange(16000) / 10.0)
    assert np.isnan(evaluate_pair(silent, tone, composite_measures=False)["pesq"])


def test_bootstrap_interval_contains_mean_and_narrows():
    rng = np.random.default_rng(2)
    small, large = rng.normal(1.0, 1.0, 30), rng.normal(1.0, 1.0, 3000)
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 4
    lo, hi = paired_bootstrap_ci(large + 0.5, large)
    assert lo == pytest.approx(0.5) and hi == pytest.approx(0.5)
