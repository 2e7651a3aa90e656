"""Shared fixtures: paths to the real material in ../shared and small SpeechBrain enhancers."""

from functools import partial
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


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
