"""GTCRN: strict checkpoint loading, real-audio regression figures, and the mask hook point.

The checkpoints come from ``../shared/models/gtcrn`` and the audio from ``../shared/audio``;
the tests that need them skip when they are absent. Reference figures are those of
``docs/models/gtcrn.md`` (fixed test mixture).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from speechbrain_mpol.models.gtcrn import GTCRN, gtcrn_stft
from speechbrain_mpol.shared import find_shared_folder

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(find_shared_folder())
GTCRN_DIR = SHARED / "models" / "gtcrn"
AUDIO_DIR = SHARED / "audio"
sys.path.insert(0, str(REPO / "recipes"))

from prepare_gtcrn import (  # noqa: E402
    CHECKPOINTS,
    make_mixture,
    prepare_gtcrn,
    score,
)

# The fixed test mixture of docs/models/gtcrn.md: speech + noise at 5 dB, seeded noise offset.
SPEECH, NOISE, SNR, SEED = "single_mic_example1", "noise1", 5.0, 1234
# Measured once (docs/models/gtcrn.md): PESQ-WB and SI-SDR of the VCTK model's output.
VCTK_PESQ, VCTK_SI_SDR = 1.055, 0.65
PESQ_TOL, SI_SDR_TOL = 0.05, 0.5

needs_checkpoints = pytest.mark.skipif(
    not all((GTCRN_DIR / f).is_file() for f in CHECKPOINTS.values()),
    reason=f"GTCRN checkpoints not found in {GTCRN_DIR} (third-party weights, not in git)",
)
needs_audio = pytest.mark.skipif(
    not (AUDIO_DIR / "speech" / f"{SPEECH}.wav").is_file(),
    reason=f"real audio not found in {AUDIO_DIR}",
)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    return prepare_gtcrn(GTCRN_DIR, tmp_path_factory.mktemp("pretrained_models"))


@pytest.fixture(scope="module")
def enhancers(folders):
    from speechbrain_mpol.models.interfaces import GTCRNEnhancement

    return {
        name: GTCRNEnhancement.from_hparams(source=str(folder), savedir=str(folder))
        for name, folder in folders.items()
    }


@pytest.fixture(scope="module")
def mixture() -> tuple[np.ndarray, np.ndarray]:
    return make_mixture(
        AUDIO_DIR / "speech" / f"{SPEECH}.wav",
        AUDIO_DIR / "noise" / f"{NOISE}.wav",
        SNR,
        np.random.default_rng(SEED),
    )


def _enhance(enhancer, noisy: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return enhancer.enhance_batch(torch.from_numpy(noisy)[None])[0].numpy()


@needs_checkpoints
@pytest.mark.parametrize("filename", sorted(CHECKPOINTS.values()))
def test_checkpoint_loads_strictly(filename):
    ckpt = torch.load(GTCRN_DIR / filename, map_location="cpu", weights_only=True)
    state = ckpt["model"]
    model = GTCRN()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    model.load_state_dict(state, strict=True)
    keys_file = GTCRN_DIR / "KEYS_vctk.tsv"
    if keys_file.is_file():  # the published key list is the ground truth for names/shapes
        with open(keys_file) as fin:
            listed = {r["key"]: r["shape"] for r in csv.DictReader(fin, delimiter="\t")}
        assert listed == {k: str(shape) for k, shape in expected.items()}
    # The ERB filter banks are fixed: adaptation must not touch them by default.
    assert not model.erb.erb_fc.weight.requires_grad
    assert not model.erb.ierb_fc.weight.requires_grad


@needs_checkpoints
def test_prepare_skips_done_work_and_reports_missing(folders, tmp_path):
    stamps = {name: (f / "source.json").stat().st_mtime_ns for name, f in folders.items()}
    again = prepare_gtcrn(GTCRN_DIR, next(iter(folders.values())).parent)
    assert {name: (f / "source.json").stat().st_mtime_ns for name, f in again.items()} == stamps
    with pytest.raises(FileNotFoundError, match="GTCRN checkpoints missing"):
        prepare_gtcrn(tmp_path / "nowhere", tmp_path / "out")


@needs_checkpoints
@needs_audio
def test_vctk_model_regression(enhancers, mixture):
    noisy, clean = mixture
    out = _enhance(enhancers["gtcrn-vctk"], noisy)
    assert out.shape == noisy.shape
    assert np.isfinite(out).all()
    metrics = score(clean, out)
    assert metrics["pesq"] == pytest.approx(VCTK_PESQ, abs=PESQ_TOL)
    assert metrics["si_sdr"] == pytest.approx(VCTK_SI_SDR, abs=SI_SDR_TOL)


@needs_checkpoints
@needs_audio
def test_dns3_model_beats_vctk_model(enhancers, mixture):
    # A wrong re-implementation leaves neither checkpoint able to enhance real noisy speech.
    noisy, clean = mixture
    pesq = {name: score(clean, _enhance(e, noisy))["pesq"] for name, e in enhancers.items()}
    assert pesq["gtcrn-dns3"] > pesq["gtcrn-vctk"] + 0.2
    assert pesq["gtcrn-dns3"] > score(clean, noisy)["pesq"] + 0.2


@needs_checkpoints
@needs_audio
def test_mask_hook_sees_mask_and_spectrum(enhancers, mixture):
    enhancer = enhancers["gtcrn-dns3"]
    noisy = torch.from_numpy(mixture[0][:16000])
    batch = torch.stack([noisy, 0.5 * noisy])
    lengths = torch.tensor([1.0, 0.75])
    captured = {}

    def hook(module, args, kwargs, output):
        captured.update(mask=args[0], spec=args[1], lengths=kwargs.get("lengths"), out=output)

    handle = enhancer.mods.enhance_model.mask.register_forward_hook(hook, with_kwargs=True)
    try:
        out = enhancer.enhance_batch(batch, lengths)
    finally:
        handle.remove()
    frames = 16000 // 256 + 1
    assert captured["mask"].shape == (2, 2, frames, 257)
    assert torch.allclose(captured["spec"], gtcrn_stft(batch))
    assert captured["out"].shape == (2, 257, frames, 2)
    assert torch.equal(captured["lengths"], lengths)
    assert out.shape == batch.shape
    assert torch.all(out[1, 12000:] == 0)  # beyond the relative length


@needs_checkpoints
def test_enhance_batch_keeps_gradients(enhancers):
    # The adaptation code calls enhance_batch with gradients on: it must not disable them.
    enhancer = enhancers["gtcrn-vctk"]
    model = enhancer.mods.enhance_model
    assert not model.training  # BatchNorm uses the running statistics
    weight = model.dpgrnn1.intra_fc.weight
    weight.requires_grad_(True)
    try:
        out = enhancer.enhance_batch(0.1 * torch.randn(1, 4000))
        out.pow(2).sum().backward()
        assert weight.grad is not None and torch.isfinite(weight.grad).all()
    finally:
        weight.requires_grad_(False)
        weight.grad = None


@needs_checkpoints
@needs_audio
def test_enhance_file_writes_same_length(enhancers, mixture, tmp_path):
    from speechbrain_mpol.audio import write_audio

    write_audio(tmp_path / "noisy.wav", mixture[0], 16000)
    out = enhancers["gtcrn-dns3"].enhance_file(tmp_path / "noisy.wav", tmp_path / "enh.wav")
    assert out.shape == (len(mixture[0]),)
    assert (tmp_path / "enh.wav").stat().st_size > 0
