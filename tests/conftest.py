"""Shared fixtures: real audio and real weights, from the repository first, ../shared if needed.

Real audio comes from the committed example set ``examples/`` and real weights from the
committed ``pretrained/`` folders, so the suite runs on any fresh clone. Tests that need the
larger material of the shared folder use ``shared_audio`` (or their own check) and skip,
naming what is missing, when it is absent.

Where the shared folder IS present (the CI run), a skipped test fails the run
(:func:`pytest_sessionfinish`): every test must run there, unless a reason fragment is listed
in ``$MPOL_ALLOWED_SKIPS`` (for a machine that knowingly cannot run some test).
"""

from __future__ import annotations

import os
import re
from functools import partial
from pathlib import Path

import pytest
import torch

from speechbrain_mpol.shared import find_shared_folder

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(find_shared_folder())
#: The committed example set (noisy/, clean/, examples.tsv).
EXAMPLES = REPO / "examples"
#: The committed GTCRN folders.
GTCRN_FOLDERS = {"gtcrn_vctk": REPO / "pretrained" / "gtcrn_vctk",
                 "gtcrn_dns3": REPO / "pretrained" / "gtcrn_dns3"}
#: Comma-separated fragments of skip reasons that do not fail a run with the shared folder.
ALLOWED_SKIPS_VAR = "MPOL_ALLOWED_SKIPS"


# ----------------------------------------------------------------------------- skips in CI
def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def pytest_sessionfinish(session, exitstatus):
    """With the shared folder present, any skip not allowed by run.sh fails the run."""
    if not SHARED.is_dir():
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    allowed = [a.strip() for a in os.environ.get(ALLOWED_SKIPS_VAR, "").split(",") if a.strip()]
    refused = [r for r in reporter.stats.get("skipped", [])
               if not any(a in _skip_reason(r) for a in allowed)]
    if not refused:
        return
    reporter.ensure_newline()
    reporter.write_sep("=", f"{len(refused)} skipped test(s) with the shared folder present "
                            f"({SHARED}): every test must run here", red=True)
    for report in refused:
        reporter.write_line(f"SKIPPED {report.nodeid}: {_skip_reason(report)}")
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# ----------------------------------------------------------------------------- real audio
@pytest.fixture(scope="session")
def example_audio() -> Path:
    """The committed example set: 12 real noisy/clean pairs (``noisy/``, ``clean/``)."""
    if not (EXAMPLES / "noisy").is_dir():
        pytest.fail(f"the committed example set is missing: {EXAMPLES / 'noisy'}")
    return EXAMPLES


@pytest.fixture(scope="session")
def shared_audio() -> Path:
    """The shared folder's audio (``speech/``, ``noise/``); skips when it is absent."""
    folder = SHARED / "audio"
    if not folder.is_dir():
        pytest.skip(f"needs the shared folder's real audio: {folder} not found")
    return folder


def _pair_index(name: str, count: int) -> int:
    """Pair picked by a name: an example ID prefix (``ex05``) or the first number in it."""
    found = re.search(r"\d+", name)
    return (int(found.group()) - 1) % count if found else 0


def real_mixture(audio: Path, snr: float = 5.0, seconds: float = 3.0, seed: int = 0,
                 speech: str = "timit_spk1_snt1.wav", noise: str = "noise1.wav"):
    """A real speech + real noise mixture: (noisy, clean) float32 tensors at 16 kHz.

    ``audio`` is the example set (``example_audio``) or a folder with ``speech/`` and
    ``noise/`` (``shared_audio``). In the example set the speech is the clean reference of one
    pair and the noise the noise of another (its noisy minus clean); ``speech`` and ``noise``
    pick the pairs by their first number (``ex05`` is pair 5; the shared file names keep
    working: ``timit_spk1_snt1.wav`` is pair 1's speech, ``noise3.wav`` pair 3's noise).
    The speech is cut to ``seconds``, scaled to a 0.5 peak, and the noise, cut at a seeded
    offset, added at ``snr`` dB; then both are scaled so the mixture peaks at most at 0.95.
    """
    import numpy as np

    from speechbrain_mpol.audio import read_audio
    from speechbrain_mpol.mixing import mix_at_snr, peak_normalize

    rng = np.random.default_rng(seed)
    audio = Path(audio)
    if (audio / "clean").is_dir():
        ids = sorted(p.stem for p in (audio / "clean").glob("*.flac"))
        speech_id = ids[_pair_index(speech, len(ids))]
        noise_id = ids[_pair_index(noise, len(ids))]
        clean = read_audio(audio / "clean" / f"{speech_id}.flac", 16000).numpy()
        noise_wav = (read_audio(audio / "noisy" / f"{noise_id}.flac", 16000)
                     - read_audio(audio / "clean" / f"{noise_id}.flac", 16000)).numpy()
    else:
        clean = read_audio(audio / "speech" / speech, 16000).numpy()
        noise_wav = read_audio(audio / "noise" / noise, 16000).numpy()
    clean = clean[: int(seconds * 16000)]
    clean = 0.5 * clean / np.abs(clean).max()
    noisy, _ = mix_at_snr(clean, noise_wav, snr, rng)
    noisy, clean = peak_normalize(noisy, clean)
    return torch.from_numpy(noisy).float(), torch.from_numpy(clean).float()


# ----------------------------------------------------------------------------- real models
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
                   REPO / "pretrained" / "metricgan_libri"):
        if (folder / "hyperparams.yaml").is_file():
            return folder
    raise FileNotFoundError("no MetricGAN+ weights: neither ../shared/models/"
                            "metricgan-plus-voicebank nor pretrained/metricgan_libri")


@pytest.fixture
def real_metricgan(tmp_path):
    """The real SpectralMaskEnhancement with real trained weights, loaded by from_hparams."""
    from speechbrain.inference.enhancement import SpectralMaskEnhancement

    folder = metricgan_folder()
    return SpectralMaskEnhancement.from_hparams(source=str(folder), savedir=str(tmp_path / "mg"))


def sepformer_folder() -> Path:
    """SpeechBrain's SepFormer enhancement weights when in ../shared, else the project's own."""
    for folder in (SHARED / "models" / "sepformer-wham16k-enhancement",
                   REPO / "pretrained" / "sepformer_libri"):
        if (folder / "hyperparams.yaml").is_file():
            return folder
    raise FileNotFoundError("no SepFormer weights: neither ../shared/models/"
                            "sepformer-wham16k-enhancement nor pretrained/sepformer_libri")


@pytest.fixture
def real_sepformer(tmp_path):
    """The real SepformerSeparation with real trained weights, loaded by from_hparams."""
    from speechbrain.inference.separation import SepformerSeparation

    return SepformerSeparation.from_hparams(source=str(sepformer_folder()),
                                            savedir=str(tmp_path / "sepformer"))


@pytest.fixture(scope="session")
def gtcrn_folders() -> dict[str, Path]:
    """The committed GTCRN pretrained folders (published MIT weights, see their README)."""
    for folder in GTCRN_FOLDERS.values():
        if not (folder / "enhance_model.ckpt").is_file():
            pytest.fail(f"committed GTCRN weights missing: {folder / 'enhance_model.ckpt'}")
    return GTCRN_FOLDERS


@pytest.fixture
def real_gtcrn(gtcrn_folders):
    from speechbrain_mpol.models.interfaces import GTCRNEnhancement

    return GTCRNEnhancement.from_hparams(source=str(gtcrn_folders["gtcrn_vctk"]))


def schedule_counts(model: str, n: int, method: str = "mpol_default") -> dict[str, int]:
    """The adaptation passes and updates a method's schedule implies for n utterances.

    Read from the presets, so the tests follow a change of a dev-chosen default.
    In continual mode an accumulated step may be refused by the rollback guard: the updates
    and rollbacks together are then what the schedule implies.
    """
    from speechbrain_mpol.presets import load_method, load_model_preset

    options = load_method(method, load_model_preset(model))
    if options["mode"] == "episodic":
        return {"backward": options["steps"] * n, "steps": options["steps"] * n}
    return {"backward": n, "steps": n // options["accumulation"]}


class FillsTheDisk:
    """A file whose writes stop after 100 bytes with ENOSPC, as on a full disk: monkeypatch it
    over ``open`` in :mod:`speechbrain_mpol.atomic`."""

    def __init__(self, *args, **kwargs):
        self.file = open(*args, **kwargs)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()

    def write(self, data):
        import errno

        self.file.write(data[:100])
        self.file.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
