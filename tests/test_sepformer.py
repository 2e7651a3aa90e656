"""SepFormer (SepformerSeparation) with MPol and the baselines: real weights, real audio.

The weights are SpeechBrain's sepformer-wham16k-enhancement when present in ../shared, else the
project's own corpus-trained SepFormer (pretrained/sepformer_libri,
recipes/train_source_sepformer.py).
"""

import shutil

import numpy as np
import pytest
import torch

from speechbrain_mpol.inference import run_enhancer
from speechbrain_mpol.metrics import si_sdr
from speechbrain_mpol.presets import build_adapter, load_model_preset, model_hook

from .conftest import real_mixture, sepformer_folder
from .test_integration import _run_method, changed_keys, snapshot

SEPFORMER = load_model_preset("sepformer")


def test_sepformer_source_model_enhances_real_speech(real_sepformer, example_audio):
    """Real speech in stationary white noise (the kind of noise it was trained on)."""
    clean = real_mixture(example_audio, seconds=3.0)[1]
    rng = np.random.default_rng(0)
    noise = torch.from_numpy(rng.standard_normal(clean.numel())).float()
    noise = noise * clean.pow(2).mean().sqrt() / noise.pow(2).mean().sqrt() / 10 ** (5 / 20)
    noisy = clean + noise
    with torch.no_grad():
        out = run_enhancer(real_sepformer, noisy[None], torch.ones(1))[0]
    assert out.shape == noisy.shape and torch.isfinite(out).all()
    gain = si_sdr(clean.numpy(), out.numpy()) - si_sdr(clean.numpy(), noisy.numpy())
    assert gain > 3.0, f"SI-SDR gain only {gain:.2f} dB at 5 dB white noise"


def test_sepformer_hook_sees_relu_mask_in_encoder_domain(real_sepformer, example_audio):
    noisy, _ = real_mixture(example_audio, seconds=2.0)
    hook = model_hook(real_sepformer, SEPFORMER)
    with torch.no_grad():
        out = run_enhancer(real_sepformer, noisy[None], torch.ones(1))
    view = hook.view()
    channels = real_sepformer.mods.encoder.conv1d.out_channels
    stride = real_sepformer.mods.encoder.conv1d.stride[0]
    assert view.mask.shape == view.noisy.shape == (1, view.mask.shape[1], channels)
    assert abs(view.mask.shape[1] - noisy.numel() / stride) <= 2
    assert float(view.mask.min()) >= 0.0 and float(view.noisy.min()) >= 0.0  # both ReLU
    assert view.mask.std() > 0.01
    assert torch.allclose(view.enhanced, view.mask * view.noisy)
    # the decoder turns exactly mask * encoded into the returned waveform
    with torch.no_grad():
        decoded = real_sepformer.mods.decoder(view.enhanced.transpose(1, 2))
    n = min(decoded.shape[1], out.shape[1])
    assert torch.allclose(decoded[:, :n], out[:, :n], atol=1e-5)


@pytest.mark.parametrize("method", ["source", "mpol", "mpol_episodic", "entropy", "remixit"])
def test_sepformer_methods_change_only_declared_parameters(real_sepformer, example_audio, method):
    adapter, changed = _run_method(real_sepformer, SEPFORMER, method, example_audio)
    if method == "source":
        assert not changed
        return
    assert changed and changed <= set(adapter.param_names)
    assert all(k.startswith("masknet.") for k in changed)
    assert any("norm" in k for k in changed) and any(".output" in k for k in changed)
    if method == "remixit":
        name = next(k for k in adapter.param_names if "output.0.weight" in k)
        student = real_sepformer.mods.state_dict()[name]
        assert not torch.equal(adapter.teacher_state[name], student)
        assert adapter.teacher_state[name].data_ptr() != student.data_ptr()
    adapter.reset()
    assert not changed_keys(adapter.source_state, real_sepformer.mods)


def test_sepformer_mpol_reduces_its_objective_and_reset_restores(real_sepformer, example_audio):
    noisy, _ = real_mixture(example_audio, snr=0.0, seed=1, seconds=2.0)
    before_state = snapshot(real_sepformer.mods)
    adapter = build_adapter(real_sepformer, SEPFORMER, "mpol", reference="noisy_wiener",
                            noise_frames=1000, mode="episodic", steps=5, clip_grad_norm=None,
                            lr=5e-3)
    wavs, lens = noisy[None], torch.ones(1)
    before = float(adapter.measure(wavs, lens)["w1"][0])
    adapter(wavs, lens)
    after = float(adapter.measure(wavs, lens)["w1"][0])
    assert after < before
    assert changed_keys(before_state, real_sepformer.mods)
    adapter.reset()
    assert not changed_keys(before_state, real_sepformer.mods)


def test_sepformer_has_no_batchnorm_statistics_to_adapt(real_sepformer):
    with pytest.raises(ValueError, match="BatchNorm"):
        build_adapter(real_sepformer, SEPFORMER, "bn_stats")


def test_8khz_sepformer_is_resampled_in_and_out(tmp_path, example_audio):
    """A model that declares 8 kHz (like sepformer-wham-enhancement) gets 8 kHz audio."""
    from speechbrain.inference.separation import SepformerSeparation

    folder = tmp_path / "sepformer8k"
    shutil.copytree(sepformer_folder(), folder)
    yaml = (folder / "hyperparams.yaml").read_text()
    (folder / "hyperparams.yaml").write_text(yaml.replace("sample_rate: 16000",
                                                          "sample_rate: 8000"))
    model = SepformerSeparation.from_hparams(source=str(folder), savedir=str(folder))
    assert model.hparams.sample_rate == 8000
    hook = model_hook(model, SEPFORMER)
    noisy, _ = real_mixture(example_audio, seconds=2.0)
    with torch.no_grad():
        out = run_enhancer(model, noisy[None], torch.ones(1), sample_rate=16000)
    assert out.shape == (1, noisy.numel()) and torch.isfinite(out).all()
    stride = model.mods.encoder.conv1d.stride[0]
    assert abs(hook.view().mask.shape[1] - noisy.numel() / 2 / stride) <= 2  # saw 8 kHz
    hook.remove()  # build_adapter attaches its own
    adapter = build_adapter(model, SEPFORMER, "mpol", mode="episodic", steps=1,
                            sample_rate=16000, lr=1e-2)
    adapted = adapter(noisy[None], torch.ones(1))
    assert adapted.shape == (1, noisy.numel()) and adapter.counts["updates"] == 1
