"""GTCRN: the committed pretrained folders, real-audio regression figures, the mask hook point.

The weights are the committed ``pretrained/gtcrn_vctk`` and ``pretrained/gtcrn_dns3`` and the
audio is a pair of the committed example set, so these tests run on any clone. Only the checks
against the published checkpoints in ``../shared/models/gtcrn`` need the shared folder.
Reference figures are those of ``docs/models/gtcrn.md`` (fixed test pair).
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from speechbrain_mpol.metrics import evaluate_pair
from speechbrain_mpol.models.gtcrn import GTCRN, gtcrn_stft
from speechbrain_mpol.models.interfaces import GTCRNEnhancement

from .conftest import EXAMPLES, REPO, SHARED

PRETRAINED = {"gtcrn_vctk": REPO / "pretrained" / "gtcrn_vctk",
              "gtcrn_dns3": REPO / "pretrained" / "gtcrn_dns3"}
CHECKPOINTS = {"gtcrn_vctk": "model_trained_on_vctk.tar",
               "gtcrn_dns3": "model_trained_on_dns3.tar"}
GTCRN_DIR = SHARED / "models" / "gtcrn"
# The fixed test pair of docs/models/gtcrn.md: LibriSpeech speech + ESC-50 snoring at 5 dB.
PAIR = "ex02_2817-142371-0000_s1_snoring_5dB"
# Measured once (docs/models/gtcrn.md): PESQ-WB and SI-SDR of the VCTK model's output.
VCTK_PESQ, VCTK_SI_SDR = 1.129, 3.09
PESQ_TOL, SI_SDR_TOL = 0.05, 0.5

needs_checkpoints = pytest.mark.skipif(
    not all((GTCRN_DIR / f).is_file() for f in CHECKPOINTS.values()),
    reason=f"published GTCRN checkpoints not found in {GTCRN_DIR} (shared folder absent)",
)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def enhancers():
    return {name: GTCRNEnhancement.from_hparams(source=str(folder))
            for name, folder in PRETRAINED.items()}


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    noisy, rate = sf.read(EXAMPLES / "noisy" / f"{PAIR}.flac", dtype="float32")
    clean, _ = sf.read(EXAMPLES / "clean" / f"{PAIR}.flac", dtype="float32")
    assert rate == 16000
    return noisy, clean


def _enhance(enhancer, noisy: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return enhancer.enhance_batch(torch.from_numpy(noisy)[None])[0].numpy()


def _score(clean: np.ndarray, estimate: np.ndarray) -> dict[str, float]:
    return evaluate_pair(clean, estimate, 16000, composite_measures=False)


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_committed_folder_is_a_weights_only_state_dict(name):
    folder = PRETRAINED[name]
    assert sorted(p.name for p in folder.iterdir()) == [
        "LICENSE", "README.md", "enhance_model.ckpt", "hyperparams.yaml"]
    state = torch.load(folder / "enhance_model.ckpt", map_location="cpu", weights_only=True)
    model = GTCRN()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in state.items()} == expected  # no optimizer, no epoch
    model.load_state_dict(state, strict=True)
    assert (folder / "hyperparams.yaml").read_bytes() == \
        (REPO / "hparams" / "export" / "gtcrn.yaml").read_bytes()
    assert (folder / "LICENSE").read_text().startswith("MIT License")
    # The model card names the bytes it describes.
    assert _sha256(folder / "enhance_model.ckpt") in (folder / "README.md").read_text()
    # The ERB filter banks are fixed: adaptation must not touch them by default.
    assert not model.erb.erb_fc.weight.requires_grad
    assert not model.erb.ierb_fc.weight.requires_grad


def test_committed_folders_load_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = {p: p.stat().st_mtime_ns for f in PRETRAINED.values() for p in f.iterdir()}
    enhancer = GTCRNEnhancement.from_hparams(source=str(PRETRAINED["gtcrn_vctk"]))
    assert not enhancer.mods.enhance_model.training
    assert list(tmp_path.iterdir()) == []  # nothing written where it was run from
    after = {p: p.stat().st_mtime_ns for f in PRETRAINED.values() for p in f.iterdir()}
    assert after == before  # nor into the committed folder


@needs_checkpoints
@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_committed_weights_are_the_published_checkpoint(name):
    published = torch.load(GTCRN_DIR / CHECKPOINTS[name], map_location="cpu", weights_only=True)
    committed = torch.load(PRETRAINED[name] / "enhance_model.ckpt", weights_only=True)
    assert committed.keys() == published["model"].keys()
    assert all(torch.equal(committed[k], v) for k, v in published["model"].items())
    assert (PRETRAINED[name] / "LICENSE").read_bytes() == (GTCRN_DIR / "LICENSE").read_bytes()
    keys_file = GTCRN_DIR / "KEYS_vctk.tsv"  # the published key list: ground truth for names
    with open(keys_file) as fin:
        listed = {r["key"]: r["shape"] for r in csv.DictReader(fin, delimiter="\t")}
    assert listed == {k: str(tuple(v.shape)) for k, v in committed.items()}
    # The model card quotes the published file's sha256, as PROVENANCE.tsv records it.
    with open(SHARED / "models" / "PROVENANCE.tsv") as fin:
        provenance = {r["file"]: r for r in csv.DictReader(fin, delimiter="\t")}
    row = provenance[CHECKPOINTS[name]]
    assert _sha256(GTCRN_DIR / CHECKPOINTS[name]) == row["sha256"]
    card = (PRETRAINED[name] / "README.md").read_text()
    assert row["sha256"] in card and row["commit"] in card


@needs_checkpoints
def test_prepare_gtcrn_reproduces_the_committed_folders(tmp_path):
    """The recipe that produced pretrained/: same bytes, and a current folder is untouched."""
    save_root = tmp_path / "pretrained"
    for name, folder in PRETRAINED.items():
        shutil.copytree(folder, save_root / name)
    (save_root / "gtcrn_dns3" / "enhance_model.ckpt").unlink()  # one file to rebuild
    stamps = {p: p.stat().st_mtime_ns for p in (save_root / "gtcrn_vctk").iterdir()}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(REPO / "recipes" / "prepare_gtcrn.py"),
         f"--shared_models_dir={GTCRN_DIR}", f"--save_root={save_root}"],
        capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "gtcrn_dns3: wrote enhance_model.ckpt" in done.stderr
    assert {p: p.stat().st_mtime_ns for p in (save_root / "gtcrn_vctk").iterdir()} == stamps
    for name, folder in PRETRAINED.items():
        for path in folder.iterdir():
            assert (save_root / name / path.name).read_bytes() == path.read_bytes(), path


def test_prepare_gtcrn_names_what_is_missing(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "recipes" / "prepare_gtcrn.py"),
         f"--shared_models_dir={tmp_path / 'nowhere'}", f"--save_root={tmp_path / 'out'}"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "GTCRN checkpoints missing in" in done.stderr and "nowhere" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_vctk_model_regression(enhancers, pair):
    noisy, clean = pair
    out = _enhance(enhancers["gtcrn_vctk"], noisy)
    assert out.shape == noisy.shape
    assert np.isfinite(out).all()
    metrics = _score(clean, out)
    assert metrics["pesq"] == pytest.approx(VCTK_PESQ, abs=PESQ_TOL)
    assert metrics["si_sdr"] == pytest.approx(VCTK_SI_SDR, abs=SI_SDR_TOL)


def test_dns3_model_beats_vctk_model(enhancers, pair):
    # A wrong re-implementation leaves neither checkpoint able to enhance real noisy speech.
    noisy, clean = pair
    pesq = {name: _score(clean, _enhance(e, noisy))["pesq"] for name, e in enhancers.items()}
    assert pesq["gtcrn_dns3"] > pesq["gtcrn_vctk"] + 0.2
    assert pesq["gtcrn_dns3"] > _score(clean, noisy)["pesq"] + 0.2


def test_mask_hook_sees_mask_and_spectrum(enhancers, pair):
    enhancer = enhancers["gtcrn_dns3"]
    noisy = torch.from_numpy(pair[0][:16000])
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


def test_enhance_batch_keeps_gradients(enhancers):
    # The adaptation code calls enhance_batch with gradients on: it must not disable them.
    enhancer = enhancers["gtcrn_vctk"]
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


def test_enhance_file_writes_same_length(enhancers, pair, tmp_path):
    out = enhancers["gtcrn_dns3"].enhance_file(EXAMPLES / "noisy" / f"{PAIR}.flac",
                                              tmp_path / "enh.wav")
    assert out.shape == (len(pair[0]),)
    written, rate = sf.read(tmp_path / "enh.wav")
    assert rate == 16000 and len(written) == len(pair[0])
