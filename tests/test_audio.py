"""Audio in/out: every bad input gives an AudioError naming the file; writes are atomic."""

import os

import numpy as np
import pytest
import soundfile as sf
import torch

from speechbrain_mpol.audio import AudioError, read_audio, write_audio


def tone(seconds=0.5, rate=16000, amp=0.3):
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_roundtrip_and_atomic_write(tmp_path):
    path = tmp_path / "out" / "a.wav"
    write_audio(path, torch.from_numpy(tone()), 16000)
    assert read_audio(path, 16000).shape == (8000,)
    assert [p.name for p in path.parent.iterdir()] == ["a.wav"]  # no temporary left


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(AudioError, match="non-finite"):
        write_audio(tmp_path / "b.wav", np.array([0.0, np.nan]), 16000)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(b"RIFF\x00\x00garbage" * 10), "unreadable"),
        (lambda p: p.write_text("not audio at all\n" * 50), "unreadable"),
        (lambda p: sf.write(p, np.zeros(16000, np.float32), 16000), "all-silent"),
        (lambda p: sf.write(p, np.zeros(0, np.float32), 16000), "zero-length"),
        (lambda p: sf.write(p, np.r_[tone(), np.nan].astype(np.float32), 16000, subtype="FLOAT"),
         "NaN or Inf"),
    ],
)
def test_bad_inputs_name_file_and_problem(tmp_path, make, problem):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError, match=problem) as err:
        read_audio(path, 16000)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="file not found"):
        read_audio(tmp_path / "nope.wav", 16000)


def test_too_long_is_refused(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, tone(3.0), 16000)
    with pytest.raises(AudioError, match="too long"):
        read_audio(path, 16000, max_seconds=2.0)


def test_multichannel_downmix_or_refuse(tmp_path):
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([tone(), -0.5 * tone()], axis=1), 16000)
    mono = read_audio(path, 16000)
    assert np.allclose(mono.numpy(), 0.25 * tone(), atol=1e-4)
    with pytest.raises(AudioError, match="2 channels"):
        read_audio(path, 16000, downmix=False)


def test_other_rate_is_resampled(tmp_path):
    path = tmp_path / "44k.wav"
    sf.write(path, tone(1.0, 44100), 44100)
    assert read_audio(path, 16000).shape == (16000,)


def test_clipped_is_processed_with_warning(tmp_path, caplog):
    path = tmp_path / "clip.wav"
    sf.write(path, np.clip(tone(amp=2.0), -1, 1), 16000)
    assert read_audio(path, 16000).shape == (8000,)
    assert "clipped" in caplog.text


def test_write_never_leaves_partial_on_interrupt(tmp_path, monkeypatch):
    target = tmp_path / "c.wav"
    write_audio(target, tone(), 16000)
    original = target.read_bytes()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        write_audio(target, tone(amp=0.1), 16000)
    assert target.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.wav"]
