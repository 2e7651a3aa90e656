"""The synthetic source domain: noises, sentences, TTS voices, and isolation from ../shared."""

import builtins
import csv
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from speechbrain_mpol import synthetic
from speechbrain_mpol.synthetic import (
    NOISE_KINDS,
    VOICES,
    compose_sentence,
    synth_noise,
    synth_speech,
)

REPO = Path(__file__).resolve().parents[1]
HAVE_TTS = shutil.which("flite") is not None and shutil.which("text2wave") is not None
needs_tts = pytest.mark.skipif(not HAVE_TTS, reason="flite/festival (text2wave) not installed")


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_noise_shape_finite_seeded(kind):
    a = synth_noise(kind, 12345, 16000, np.random.default_rng(7))
    b = synth_noise(kind, 12345, 16000, np.random.default_rng(7))
    c = synth_noise(kind, 12345, 16000, np.random.default_rng(8))
    assert a.shape == (12345,) and a.dtype == np.float32
    assert np.isfinite(a).all()
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.sqrt(np.mean(a.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-3)


def test_noise_spectra_differ():
    # Pink and brown noise put more energy in low frequencies than white noise.
    def low_ratio(x):
        power = np.abs(np.fft.rfft(x)) ** 2
        return power[: len(power) // 16].sum() / power.sum()

    rng = np.random.default_rng(0)
    white, pink, brown = (low_ratio(synth_noise(k, 32000, 16000, rng))
                          for k in ("white", "pink", "brown"))
    assert white < pink < brown


def test_unknown_noise_kind():
    with pytest.raises(ValueError, match="unknown noise kind"):
        synth_noise("violet", 100, 16000, np.random.default_rng(0))


def test_compose_sentence_varies():
    rng = np.random.default_rng(0)
    sentences = [compose_sentence(rng) for _ in range(50)]
    assert all(isinstance(s, str) and len(s.split()) >= 4 for s in sentences)
    assert len(set(sentences)) > 40
    assert compose_sentence(np.random.default_rng(5)) == compose_sentence(np.random.default_rng(5))


def test_voices_cover_several_speakers():
    assert len({v.voice_id for v in VOICES}) >= 4
    assert {v.engine for v in VOICES} == {"flite", "festival"}


@needs_tts
@pytest.mark.parametrize("name", ["flite_slt", "flite_rms", "fest_kal"])
def test_synth_speech(name):
    voice = next(v for v in VOICES if v.name == name)
    wav = synth_speech("The red box is near the river.", voice, 16000, np.random.default_rng(1))
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert np.isfinite(wav).all()
    assert 0.8 * 16000 < len(wav) < 6 * 16000
    assert np.sqrt(np.mean(wav ** 2)) > 1e-3


def test_missing_program_is_reported(monkeypatch):
    monkeypatch.setattr(synthetic.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="flite"):
        synth_speech("hello", VOICES[0], 16000, np.random.default_rng(0))


def test_sources_never_reference_shared():
    for rel in ("speechbrain_mpol/synthetic.py", "recipes/prepare_source.py"):
        text = (REPO / rel).read_text()
        assert "../shared" not in text and "shared/audio" not in text, rel


@needs_tts
def test_prepare_source_opens_nothing_shared(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO / "recipes"))
    try:
        from prepare_source import prepare_source
    finally:
        sys.path.remove(str(REPO / "recipes"))

    opened = []
    real_open, real_read = builtins.open, soundfile.read

    def spy_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    def spy_read(file, *args, **kwargs):
        opened.append(str(file))
        return real_read(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(soundfile, "read", spy_read)
    prepare_source(tmp_path / "src", n_train=3, n_valid=1, n_test=1, seed=11, num_workers=0)
    monkeypatch.undo()

    assert not [p for p in opened if "shared" in p]
    with open(tmp_path / "src" / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    assert list(rows[0]) == ["ID", "duration", "noisy_wav", "clean_wav"]
    noisy, rate = soundfile.read(rows[0]["noisy_wav"])
    clean, _ = soundfile.read(rows[0]["clean_wav"])
    assert rate == 16000 and noisy.shape == clean.shape
    assert np.abs(noisy).max() <= 0.951
    assert Path(rows[0]["noisy_wav"]).is_absolute()
