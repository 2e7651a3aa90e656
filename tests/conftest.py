"""Shared fixtures: paths to the real material in ../shared and small SpeechBrain enhancers."""

from functools import partial
from pathlib import Path

import pytest
import torch

from speechbrain_mpol.shared import find_shared_folder

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(find_shared_folder())


@pytest.fixture(scope="session")
def shared_audio() -> Path:
    folder = SHARED / "audio"
    if not folder.is_dir():
        pytest.skip(f"real audio not found at {folder}")
    return folder


def build_metricgan_enhancer(seed: int = 0):
    """The real ``SpectralMaskEnhancement`` class around a randomly initialised generator.

    Same STFT and features as the hub model; for plumbing tests only.
    """
    from speechbrain.inference.enhancement import SpectralMaskEnhancement
    from speechbrain.lobes.models.MetricGAN import EnhancementGenerator
    from speechbrain.processing.features import ISTFT, STFT, spectral_magnitude
    from speechbrain.processing.signal_processing import resynthesize

    torch.manual_seed(seed)
    stft = STFT(sample_rate=16000, win_length=32, hop_length=16, n_fft=512,
                window_fn=torch.hamming_window)
    istft = ISTFT(sample_rate=16000, win_length=32, hop_length=16, n_fft=512,
                  window_fn=torch.hamming_window)
    hparams = {
        "compute_stft": stft,
        "spectral_magnitude": partial(spectral_magnitude, power=0.5),
        "resynth": partial(resynthesize, stft=stft, istft=istft),
    }
    return SpectralMaskEnhancement(modules={"enhance_model": EnhancementGenerator()},
                                   hparams=hparams)


@pytest.fixture
def metricgan_enhancer():
    return build_metricgan_enhancer()


def metricgan_folder() -> Path:
    """SpeechBrain's real MetricGAN+ weights when present in ../shared, else the project's own."""
    for folder in (SHARED / "models" / "metricgan-plus-voicebank",
                   REPO / "pretrained" / "metricgan_source"):
        if (folder / "hyperparams.yaml").is_file():
            return folder
    raise FileNotFoundError("no MetricGAN+ weights: neither ../shared/models/"
                            "metricgan-plus-voicebank nor pretrained/metricgan_source")


@pytest.fixture
def real_metricgan(tmp_path):
    """The real SpectralMaskEnhancement with real trained weights, loaded by from_hparams."""
    from speechbrain.inference.enhancement import SpectralMaskEnhancement

    folder = metricgan_folder()
    return SpectralMaskEnhancement.from_hparams(source=str(folder), savedir=str(tmp_path / "mg"))


def sepformer_folder() -> Path:
    """SpeechBrain's SepFormer enhancement weights when in ../shared, else the project's own."""
    for folder in (SHARED / "models" / "sepformer-wham16k-enhancement",
                   REPO / "pretrained" / "sepformer_source"):
        if (folder / "hyperparams.yaml").is_file():
            return folder
    raise FileNotFoundError("no SepFormer weights: neither ../shared/models/"
                            "sepformer-wham16k-enhancement nor pretrained/sepformer_source")


@pytest.fixture
def real_sepformer(tmp_path):
    """The real SepformerSeparation with real trained weights, loaded by from_hparams."""
    from speechbrain.inference.separation import SepformerSeparation

    return SepformerSeparation.from_hparams(source=str(sepformer_folder()),
                                            savedir=str(tmp_path / "sepformer"))


@pytest.fixture(scope="session")
def gtcrn_folders(tmp_path_factory):
    """pretrained folders gtcrn-vctk / gtcrn-dns3 built from ../shared/models/gtcrn."""
    import sys

    shared = SHARED / "models" / "gtcrn"
    if not (shared / "model_trained_on_vctk.tar").is_file():
        pytest.skip(f"GTCRN checkpoints not found in {shared}")
    sys.path.insert(0, str(REPO / "recipes"))
    from prepare_gtcrn import prepare_gtcrn

    return prepare_gtcrn(shared, tmp_path_factory.mktemp("gtcrn"))


@pytest.fixture
def real_gtcrn(gtcrn_folders):
    from speechbrain_mpol.models.interfaces import GTCRNEnhancement

    return GTCRNEnhancement.from_hparams(source=str(gtcrn_folders["gtcrn-vctk"]))


def real_mixture(shared_audio: Path, snr: float = 5.0, seconds: float = 3.0, seed: int = 0,
                 speech: str = "timit_spk1_snt1.wav", noise: str = "noise1.wav"):
    """A real speech + real noise mixture: (noisy, clean) float32 tensors at 16 kHz."""
    import numpy as np

    from speechbrain_mpol.audio import read_audio
    from speechbrain_mpol.mixing import mix_at_snr, peak_normalize

    rng = np.random.default_rng(seed)
    clean = read_audio(shared_audio / "speech" / speech, 16000).numpy()[: int(seconds * 16000)]
    clean = 0.5 * clean / np.abs(clean).max()
    noise_wav = read_audio(shared_audio / "noise" / noise, 16000).numpy()
    noisy, _ = mix_at_snr(clean, noise_wav, snr, rng)
    noisy, clean = peak_normalize(noisy, clean)
    return torch.from_numpy(noisy).float(), torch.from_numpy(clean).float()
