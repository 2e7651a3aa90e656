"""Audio in/out: every bad input gives an AudioError naming the file; writes are atomic."""

import os

import numpy as np
import pytest
import soundfile as sf
import torch

from speechbrain_mpol.audio import AudioError, read_audio, write_audio

from .conftest import FillsTheDisk, real_mixture


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


@pytest.mark.parametrize("subtype", ["FLOAT", "PCM_24", "PCM_16"])
def test_subtypes_round_trip_within_their_precision(tmp_path, subtype):
    wav = tone(amp=0.9)
    path = tmp_path / f"{subtype}.wav"
    write_audio(path, wav, 16000, subtype=subtype)
    info = sf.info(path)
    assert info.subtype == subtype and info.format == "WAV"
    back = read_audio(path, 16000).numpy()
    step = {"FLOAT": 0.0, "PCM_24": 2.0**-23, "PCM_16": 2.0**-15}[subtype]
    assert np.abs(back - wav).max() <= step


def test_default_is_float_and_integer_subtypes_clip(tmp_path):
    loud = np.array([1.5, -1.5, 0.25], np.float32)
    write_audio(tmp_path / "f.wav", loud, 16000)
    assert sf.info(tmp_path / "f.wav").subtype == "FLOAT"
    assert sf.read(tmp_path / "f.wav", dtype="float32")[0].tolist() == [1.5, -1.5, 0.25]
    write_audio(tmp_path / "i.wav", loud, 16000, subtype="PCM_24")
    back = sf.read(tmp_path / "i.wav", dtype="float64")[0]
    assert back[0] == 1.0 - 2.0**-23 and back[1] == -1.0  # clipped, not wrapped around
    with pytest.raises(ValueError, match="subtype must be one of"):
        write_audio(tmp_path / "x.wav", loud, 16000, subtype="MP3")


def test_the_written_file_scores_as_the_scored_waveform(tmp_path, real_metricgan, example_audio):
    """#16 item 7: a quiet enhanced output (-50 dBFS) keeps its PESQ once written and read.

    Real MetricGAN+ on real speech in real noise; its output brought to -50 dBFS as a model
    that over-suppresses would leave it. The default (float) file is the scored waveform bit
    for bit; 24-bit PCM scores the same to 3 decimals; 16-bit PCM does not, and scoring the
    samples ``write_audio`` returns is scoring the file, whatever the subtype.
    """
    from speechbrain_mpol.metrics import pesq_wb

    noisy, clean = real_mixture(example_audio, snr=5.0, seconds=3.0, speech="timit_spk2_snt2.wav",
                                noise="noise3.wav")
    with torch.no_grad():
        out = real_metricgan.enhance_batch(noisy[None], torch.ones(1))[0].numpy()
    quiet = (out * 10 ** (-50 / 20) / np.sqrt(np.mean(out**2))).astype(np.float32)
    scored = pesq_wb(clean.numpy(), quiet)
    delivered = {}
    for subtype in ("FLOAT", "PCM_24", "PCM_16"):
        path = tmp_path / f"{subtype}.wav"
        stored = write_audio(path, quiet, 16000,
                             **({} if subtype == "FLOAT" else {"subtype": subtype}))
        back = read_audio(path, 16000).numpy()
        assert np.array_equal(stored, back)  # what write_audio returns is what was written
        delivered[subtype] = pesq_wb(clean.numpy(), back)
    assert np.array_equal(read_audio(tmp_path / "FLOAT.wav", 16000).numpy(), quiet)
    assert delivered["FLOAT"] == scored
    assert abs(delivered["PCM_24"] - scored) < 5e-4
    # Measured with pretrained/metricgan_libri: 1.5205 scored, +0.0000 as 24-bit PCM, +0.0044
    # as 16-bit PCM (at -40 dBFS 16-bit PCM moved it by only +0.0007).
    assert abs(delivered["PCM_16"] - scored) > 1e-3


def test_a_full_disk_is_one_oserror_naming_the_file(tmp_path, monkeypatch):
    import errno

    import speechbrain_mpol.atomic

    target = tmp_path / "d.wav"
    write_audio(target, tone(), 16000)
    before = target.read_bytes()

    monkeypatch.setattr(speechbrain_mpol.atomic, "open", FillsTheDisk, raising=False)
    with pytest.raises(OSError) as err:
        write_audio(target, tone(amp=0.1), 16000)
    assert err.value.errno == errno.ENOSPC and str(target) in str(err.value)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.wav"]
