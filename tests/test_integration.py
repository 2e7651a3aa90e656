"""Integration tests: real SpeechBrain classes, real trained weights, real audio."""

import pytest
import torch

from speechbrain_mpol.presets import build_adapter, load_model_preset, model_hook

from .conftest import real_mixture

METRICGAN = load_model_preset("metricgan_plus")
GTCRN = load_model_preset("gtcrn_vctk")
FAST = 0.01  # a learning rate large enough to move weights in a few steps


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed_keys(before, module):
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


def test_metricgan_hook_sees_mask_and_adaptation_changes_selected_weights(
    real_metricgan, example_audio
):
    noisy, _ = real_mixture(example_audio)
    adapter = build_adapter(real_metricgan, METRICGAN, "mpol", lr=FAST, accumulation=1)
    hook = adapter.hook
    with torch.no_grad():
        real_metricgan.enhance_batch(noisy[None], torch.ones(1))
    view = hook.view()
    frames = noisy.numel() // 256 + 1  # 16 ms hop at 16 kHz, centred STFT
    assert view.mask.shape == (1, frames, 257)
    assert float(view.mask.min()) >= 0.0 and float(view.mask.max()) <= 1.2
    assert view.mask.std() > 0.01  # a trained model's mask is not constant
    hook.clear()

    before = snapshot(real_metricgan.mods)
    out = adapter(noisy[None], torch.ones(1))
    assert out.shape == (1, noisy.numel())
    assert torch.isfinite(out).all()
    changed = changed_keys(before, real_metricgan.mods)
    assert changed == {"enhance_model.linear2.weight", "enhance_model.linear2.bias",
                       "enhance_model.Learnable_sigmoid.slope"}
    adapter.reset()
    assert not changed_keys(before, real_metricgan.mods)


@pytest.mark.parametrize("compare_in", ["linear", "mask"])
def test_metricgan_mpol_reduces_its_own_objective(real_metricgan, example_audio, compare_in):
    noisy, _ = real_mixture(example_audio, snr=0.0, seed=1)
    adapter = build_adapter(real_metricgan, METRICGAN, "mpol", compare_in=compare_in,
                            mode="episodic", steps=5, lr=5e-3, clip_grad_norm=None)
    wavs, lens = noisy[None], torch.ones(1)
    before = float(adapter.measure(wavs, lens)["w1"][0])
    adapter(wavs, lens)
    after = float(adapter.measure(wavs, lens)["w1"][0])
    assert after < before


METHODS = {  # method preset -> options that make a short test move the weights
    "source": {},
    "mpol": {"lr": FAST, "accumulation": 2},
    "mpol_episodic": {"lr": FAST, "steps": 1},
    "entropy": {"lr": FAST, "accumulation": 2},
    "remixit": {"lr": FAST, "buffer_size": 2},
    "bn_stats": {},
}


def _run_method(enhancer, model, method, example_audio):
    before = snapshot(enhancer.mods)
    adapter = build_adapter(enhancer, model, method, **METHODS[method])
    for seed, noise in enumerate(["noise1.wav", "noise3.wav"]):
        noisy, _ = real_mixture(example_audio, seed=seed, noise=noise, seconds=2.0)
        out = adapter(noisy[None], torch.ones(1))
        assert out.shape == (1, noisy.numel()) and torch.isfinite(out).all()
    return adapter, changed_keys(before, enhancer.mods)


@pytest.mark.parametrize("method", ["source", "mpol", "mpol_episodic", "entropy", "remixit"])
def test_metricgan_methods_change_only_declared_parameters(
    real_metricgan, example_audio, method
):
    adapter, changed = _run_method(real_metricgan, METRICGAN, method, example_audio)
    if method == "source":
        assert not changed
    else:
        assert changed and changed <= set(adapter.param_names)
    if method == "remixit":
        teacher = adapter.teacher_state["enhance_model.linear2.weight"]
        student = real_metricgan.mods.enhance_model.linear2.weight
        assert not torch.equal(teacher, student.detach())
        assert teacher.data_ptr() != student.data_ptr()


@pytest.mark.parametrize("method", ["source", "mpol", "mpol_episodic", "entropy", "remixit",
                                    "bn_stats"])
def test_gtcrn_methods_change_only_declared_parameters(real_gtcrn, example_audio, method):
    adapter, changed = _run_method(real_gtcrn, GTCRN, method, example_audio)
    if method == "source":
        assert not changed
    elif method == "bn_stats":
        assert changed and all("running_" in k or "num_batches" in k for k in changed)
    else:
        assert changed and changed <= set(adapter.param_names)


def test_gtcrn_hook_mask_is_complex_magnitude(real_gtcrn, example_audio):
    noisy, _ = real_mixture(example_audio)
    hook = model_hook(real_gtcrn, GTCRN)
    with torch.no_grad():
        out = real_gtcrn.enhance_batch(noisy[None], torch.ones(1))
    view = hook.view()
    assert view.mask.shape[0] == 1 and view.mask.shape[2] == 257
    assert float(view.mask.min()) >= 0.0
    # |S| = |M| |Y| for a complex ratio mask
    assert torch.allclose(view.enhanced, view.mask * view.noisy)
    assert out.shape == (1, noisy.numel())


def test_bn_stats_needs_batchnorm(real_metricgan):
    with pytest.raises(ValueError, match="BatchNorm"):
        build_adapter(real_metricgan, METRICGAN, "bn_stats")
