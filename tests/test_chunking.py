"""Chunked enhancement of long recordings: exactness, seams, lengths, streaming, bounded memory."""

import inspect
import resource
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from speechbrain_mpol.chunking import (
    adaptation_crop,
    chunk_starts,
    enhance_chunked,
    enhance_file_chunked,
    iter_chunks,
)
from speechbrain_mpol.inference import run_enhancer
from tests.conftest import REPO, SHARED, build_metricgan_enhancer, real_mixture

SR = 16000
TAPS = 65  # odd: the "same"-padded filter is centred, HALF samples of context on each side
HALF = TAPS // 2


def fir_enhancer(wavs: torch.Tensor) -> torch.Tensor:
    """A fixed linear, time-invariant "enhancer": a 65-tap windowed-sinc low-pass at 4 kHz."""
    n = torch.arange(TAPS, dtype=torch.float64) - HALF
    taps = (0.5 * torch.sinc(0.5 * n) * torch.hann_window(TAPS, periodic=False,
                                                          dtype=torch.float64)).float()
    out = torch.nn.functional.conv1d(wavs[:, None], taps.view(1, 1, -1), padding=HALF)
    return out[:, 0]


def metricgan_fn(enhancer):
    def enhance(wavs):
        with torch.no_grad():
            return run_enhancer(enhancer, wavs, torch.ones(wavs.shape[0]), SR)
    return enhance


def noisy_3s() -> torch.Tensor:
    if (SHARED / "audio" / "speech").is_dir():
        return real_mixture(SHARED / "audio", seconds=3.0)[0]
    return 0.1 * torch.randn(3 * SR, generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------ (a) shorter than one chunk
def test_short_recording_equals_unchunked_exactly(tmp_path):
    torch.manual_seed(0)
    wav = noisy_3s()
    enhance = metricgan_fn(build_metricgan_enhancer())
    whole = enhance(wav[None])[0]
    for rescale in ("noisy", None):
        assert torch.equal(enhance_chunked(enhance, wav, 10.0, 1.0, SR, rescale=rescale), whole)
    # The streaming version too: a FLOAT file holds the samples exactly.
    sf.write(tmp_path / "short.wav", wav.numpy(), SR, subtype="FLOAT")
    out = enhance_file_chunked(enhance, tmp_path / "short.wav", tmp_path / "out.wav",
                               subtype="FLOAT")
    assert np.array_equal(sf.read(out, dtype="float32")[0], whole.numpy())


# ------------------------------------------------------------------ (b) seams
def edge_distance(total: int, chunk: int, overlap: int) -> np.ndarray:
    """Distance of every sample from the nearest chunk start or end."""
    edges = []
    for start in chunk_starts(total, chunk, overlap):
        edges += [start, start + chunk]
    pos = np.arange(total)[:, None]
    return np.abs(pos - np.array(edges)[None]).min(axis=1)


def test_fir_chunked_equals_unchunked_away_from_edges():
    """Tolerance: 1e-6 absolute farther than the filter's half-length (32 samples) from any
    chunk edge; within it the cross-fade weight of the wrong chunk is below 1e-4, so the
    whole output stays within 60 dB of the unchunked one."""
    wav = torch.randn(int(37.3 * SR), generator=torch.Generator().manual_seed(1)) * 0.1
    whole = fir_enhancer(wav[None])[0]
    chunked = enhance_chunked(fir_enhancer, wav, 10.0, 1.0, SR, rescale=None)
    assert chunked.shape == wav.shape
    far = torch.from_numpy(edge_distance(len(wav), 10 * SR, SR) > HALF)
    assert (chunked - whole)[far].abs().max() < 1e-6
    error = float((chunked - whole).norm() / whole.norm())
    assert error < 1e-3  # 60 dB


def test_metricgan_chunked_level_is_consistent():
    """The random-generator MetricGAN+ peak-normalizes each chunk; with ``rescale="noisy"``
    the chunked output stays close to the unchunked one (SI-SDR > 10 dB measured ~20+), and
    without rescaling it is clearly worse."""
    wav = torch.cat([noisy_3s()] * 8)  # 24 s: three chunks of 10 s
    enhance = metricgan_fn(build_metricgan_enhancer())
    whole = enhance(wav[None])[0]

    def si_sdr(est):
        ref = whole - whole.mean()
        est = est - est.mean()
        target = (est @ ref) / (ref @ ref) * ref
        return float(10 * torch.log10((target @ target) / ((est - target) @ (est - target))))

    scores = {m: si_sdr(enhance_chunked(enhance, wav, 10.0, 1.0, SR, rescale=m))
              for m in ("noisy", None)}
    assert scores["noisy"] > 10.0, scores
    assert scores["noisy"] >= scores[None] - 0.5, scores


# ------------------------------------------------------------------ (c) lengths
@pytest.mark.parametrize("total", [999, 1000, 1001, 1899, 1900, 1901, 2799, 2800, 2801, 3000,
                                   10_007])
def test_output_length_and_weights_sum_to_one(total, tmp_path):
    """Sample rate 1 kHz, 1 s chunks, 0.1 s overlap: identity in, identity out, any length."""
    wav = torch.randn(total, generator=torch.Generator().manual_seed(total))
    out = enhance_chunked(lambda w: w.clone(), wav, 1.0, 0.1, 1000, rescale=None)
    assert out.shape == wav.shape
    assert torch.allclose(out, wav, atol=1e-6)
    sf.write(tmp_path / "in.wav", wav.numpy(), 1000, subtype="FLOAT")
    streamed = enhance_file_chunked(lambda w: w.clone(), tmp_path / "in.wav", tmp_path / "o.wav",
                                    1.0, 0.1, 1000, rescale=None, subtype="FLOAT")
    data = sf.read(streamed, dtype="float32")[0]
    assert data.shape == (total,) and np.allclose(data, wav.numpy(), atol=1e-6)


def test_bad_sizes_and_rates(tmp_path):
    with pytest.raises(ValueError, match="at most half"):
        enhance_chunked(lambda w: w, torch.zeros(100), 1.0, 0.6, 10)
    sf.write(tmp_path / "8k.wav", np.zeros(800, dtype=np.float32), 8000)
    with pytest.raises(ValueError, match="8000 Hz"):
        list(iter_chunks(tmp_path / "8k.wav", 10.0, 1.0, SR))
    with pytest.raises(ValueError, match="keep the length"):
        enhance_chunked(lambda w: w[:, :-1], torch.zeros(3000), 1.0, 0.1, 1000)


def test_adaptation_crop():
    wav = torch.arange(100.0)
    assert torch.equal(adaptation_crop(wav, 0.25, 100), wav[:25])
    crop = adaptation_crop(wav, 0.25, 100, np.random.default_rng(3))
    assert crop.shape == (25,) and torch.equal(crop, wav[int(crop[0]):int(crop[0]) + 25])
    assert adaptation_crop(wav[None], 4.0, 100).shape == (1, 100)  # shorter: all of it


# ------------------------------------------------------------------ (d) streaming a file
def write_noise_file(path, seconds: float, seed: int = 0, block_seconds: float = 30.0) -> None:
    """A long PCM-16 noise file written block by block (the test never holds all of it)."""
    rng = np.random.default_rng(seed)
    left = int(seconds * SR)
    with sf.SoundFile(path, "w", samplerate=SR, channels=1, subtype="PCM_16") as sink:
        while left > 0:
            n = min(left, int(block_seconds * SR))
            sink.write((0.1 * rng.standard_normal(n)).astype(np.float32))
            left -= n


def test_file_60s_same_length_no_temporary_left(tmp_path):
    write_noise_file(tmp_path / "long.wav", 60.0)
    out = enhance_file_chunked(fir_enhancer, tmp_path / "long.wav", tmp_path / "out" / "e.wav")
    assert sf.info(out).frames == 60 * SR
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["e.wav"]
    # Same samples as the in-memory version, up to 16-bit quantization.
    noisy = torch.from_numpy(sf.read(tmp_path / "long.wav", dtype="float32")[0])
    expected = enhance_chunked(fir_enhancer, noisy).numpy()
    assert np.abs(sf.read(out, dtype="float32")[0] - expected).max() < 2.0 / 32768


def test_failed_enhancement_leaves_no_file(tmp_path):
    write_noise_file(tmp_path / "in.wav", 25.0)

    def broken(wavs):
        if broken.calls == 1:
            raise RuntimeError("boom")
        broken.calls += 1
        return wavs
    broken.calls = 0
    with pytest.raises(RuntimeError, match="boom"):
        enhance_file_chunked(broken, tmp_path / "in.wav", tmp_path / "out.wav")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


# ------------------------------------------------------------------ (e) bounded memory
# The child imports only torch, soundfile and speechbrain_mpol.chunking (not this module, which
# pulls in SpeechBrain): a smaller baseline makes any growth with length easier to see.
PEAK_SCRIPT = """
import sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, {repo!r})
from speechbrain_mpol.chunking import enhance_file_chunked
TAPS, HALF = {taps}, {half}
{fir}
{peak}
enhance_file_chunked(fir_enhancer, sys.argv[1], sys.argv[2])
print(peak_rss_kib())
"""


def peak_rss_kib() -> int:
    """This process's peak resident set, KiB: ``VmHWM`` where Linux has it, else ru_maxrss.

    ``ru_maxrss`` of a fresh subprocess starts at the peak of the process that forked it
    (Linux keeps the pre-exec high-water mark), so a big pytest parent would hide the child's
    own peak; ``VmHWM`` belongs to the exec'd image only.
    """
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child_peak_rss_kib(in_path, out_path) -> int:
    """Peak RSS (KiB) of a fresh interpreter streaming ``in_path`` through the FIR filter."""
    script = PEAK_SCRIPT.format(repo=str(REPO), taps=TAPS, half=HALF,
                                fir=inspect.getsource(fir_enhancer),
                                peak="import resource\n" + inspect.getsource(peak_rss_kib))
    result = subprocess.run(
        [sys.executable, "-c", script, str(in_path), str(out_path)],
        capture_output=True, text=True, timeout=120, check=True,
    )
    return int(result.stdout.strip().splitlines()[-1])


def test_peak_memory_does_not_grow_with_length(tmp_path):
    """Peak RSS of a 10-minute file within 15% of a 1-minute file's (19 MB of PCM-16 in,
    38 MB as float32: an unchunked pass of the same filter adds ~100 MB, measured)."""
    write_noise_file(tmp_path / "1min.wav", 60.0)
    write_noise_file(tmp_path / "10min.wav", 600.0)
    short = child_peak_rss_kib(tmp_path / "1min.wav", tmp_path / "e1.wav")
    long = child_peak_rss_kib(tmp_path / "10min.wav", tmp_path / "e10.wav")
    assert sf.info(tmp_path / "e10.wav").frames == 600 * SR
    assert long <= 1.15 * short, (short, long)
