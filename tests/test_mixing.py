"""Mixers of speechbrain_mpol.mixing and the shifted-set builders of recipes/prepare_shifts.py."""

import csv
import sys
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
from speechbrain_mpol.shared import find_shared_folder

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(find_shared_folder())
AUDIO = SHARED / "audio"
RATE = 16000

sys.path.insert(0, str(REPO / "recipes"))

needs_audio = pytest.mark.skipif(not (AUDIO / "speech").is_dir(),
                                 reason=f"real audio not found at {AUDIO}")


def read(path) -> np.ndarray:
    data, rate = sf.read(str(path), dtype="float64")
    assert rate == RATE and data.ndim == 1
    return data


def rows(manifest) -> list[dict]:
    with open(manifest, newline="") as handle:
        return list(csv.DictReader(handle))


# --------------------------------------------------------------------------- mixers


@needs_audio
@pytest.mark.parametrize("snr", [-5.0, 0.0, 5.0, 15.0])
@pytest.mark.parametrize("speech_file, noise_file", [
    ("timit_spk1_snt1", "noise1"),
    ("multimic_speech_a_ch0", "noise2"),  # 10 s of speech, 5 s of noise: the noise is looped
])
def test_mix_at_snr_hits_target(snr, speech_file, noise_file):
    speech = read(AUDIO / "speech" / f"{speech_file}.wav")
    noise = read(AUDIO / "noise" / f"{noise_file}.wav")
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


# --------------------------------------------------------------------------- builders


def test_split_material_is_disjoint():
    from prepare_shifts import SPLITS

    dev, test = SPLITS["dev"], SPLITS["test"]
    for kind in ("speech", "noise", "rir"):
        assert not set(dev[kind]) & set(test[kind]), kind
    # TIMIT files share a speaker per prefix; every other file is its own speaker.
    speakers = {split: {n.rsplit("_snt", 1)[0] for n in SPLITS[split]["speech"]}
                for split in SPLITS}
    assert speakers["dev"] == {"timit_spk2", "single_mic_example5", "single_mic_example6"}
    assert not speakers["dev"] & speakers["test"]


def test_missing_shared_folder_names_it(tmp_path):
    from prepare_shifts import prepare_example, prepare_shifts

    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prepare_shifts(missing, tmp_path / "out", shifts=("noise",))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prepare_example(missing, tmp_path / "out")


@needs_audio
def test_prepare_example(tmp_path):
    from prepare_shifts import SPLITS, prepare_example

    manifest = prepare_example(SHARED, tmp_path)
    assert manifest == tmp_path / "example" / "example.csv"
    assert len(list((tmp_path / "example" / "noisy").glob("*.wav"))) == 12
    assert len(list((tmp_path / "example" / "clean").glob("*.wav"))) == 12
    with open(manifest, newline="") as handle:
        assert next(csv.reader(handle))[:4] == ["ID", "duration", "noisy_wav", "clean_wav"]
    table = rows(manifest)
    assert len(table) == 12 and len({r["ID"] for r in table}) == 12
    assert sorted({float(r["snr_db"]) for r in table}) == [0.0, 5.0, 10.0]
    for row in table:
        assert Path(row["noisy_wav"]).is_absolute()
        assert Path(row["speech"]).stem in SPLITS["test"]["speech"]
        noisy, clean = read(row["noisy_wav"]), read(row["clean_wav"])
        assert len(noisy) == len(clean) <= 4 * RATE
        assert abs(len(noisy) / RATE - float(row["duration"])) < 1e-3
        assert np.max(np.abs(noisy)) <= 0.951
        # peak_normalize scales both by one factor, so the SNR survives it (and 16 bits).
        assert abs(snr_db(clean, noisy - clean) - float(row["snr_db"])) < 0.1


@pytest.fixture(scope="module")
def small_shifts(tmp_path_factory):
    if not (AUDIO / "speech").is_dir():
        pytest.skip(f"real audio not found at {AUDIO}")
    from prepare_shifts import prepare_shifts

    folder = tmp_path_factory.mktemp("shifts")
    manifests = prepare_shifts(SHARED, folder, shifts=("noise", "level"), per_shift=2)
    return folder, manifests


def test_prepare_shifts_layout_and_disjoint_splits(small_shifts):
    folder, manifests = small_shifts
    assert sorted(manifests) == [("dev", "level"), ("dev", "noise"),
                                 ("test", "level"), ("test", "noise")]
    used = {"dev": set(), "test": set()}
    for (split, shift), manifest in manifests.items():
        assert manifest == folder / split / shift / f"{split}_{shift}.csv"
        table = rows(manifest)
        assert len(table) == 2
        assert list(table[0])[:4] == ["ID", "duration", "noisy_wav", "clean_wav"]
        for row in table:
            assert len(read(row["noisy_wav"])) == len(read(row["clean_wav"]))
            assert -0.01 <= float(row["snr_db"]) <= 15.01
            used[split] |= {row["speech"], row["noise"]}
    assert used["dev"] and used["test"]
    assert not used["dev"] & used["test"]


def test_prepare_shifts_level_is_minus_40_dbfs(small_shifts):
    _, manifests = small_shifts
    for split in ("dev", "test"):
        level_rows = rows(manifests[(split, "level")])
        noise_rows = rows(manifests[(split, "noise")])
        for lrow, nrow in zip(level_rows, noise_rows, strict=True):
            noisy, clean = read(lrow["noisy_wav"]), read(lrow["clean_wav"])
            assert abs(level_dbfs(noisy) + 40.0) < 0.01
            # Same draws as the noise set: only the common scale differs.
            assert (lrow["speech"], lrow["noise"], lrow["snr_db"]) == \
                (nrow["speech"], nrow["noise"], nrow["snr_db"])
            assert abs(snr_db(clean, noisy - clean) - float(lrow["snr_db"])) < 0.1


def test_prepare_shifts_is_idempotent(small_shifts):
    from prepare_shifts import prepare_shifts

    folder, manifests = small_shifts
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    before = {p: p.stat().st_mtime_ns for p in files}
    again = prepare_shifts(SHARED, folder, shifts=("noise", "level"), per_shift=2)
    assert again == manifests
    assert sorted(p for p in folder.rglob("*") if p.is_file()) == files
    assert {p: p.stat().st_mtime_ns for p in files} == before
