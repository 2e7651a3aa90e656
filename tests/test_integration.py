"""Integration tests: real SpeechBrain classes, real trained weights, real audio."""

import pytest
import torch

from speechbrain_mpol.adapter import MPolAdapter
from speechbrain_mpol.baselines import (
    BNStatsAdapter,
    EntropyAdapter,
    RemixITAdapter,
    SourceAdapter,
)
from speechbrain_mpol.hooks import attach_hook

from .conftest import real_mixture

METRICGAN_PARAMS = ["linear2", "Learnable_sigmoid"]
GTCRN_PARAMS = [r"bn\d?\.", r"_ln\.", r"de_convs\.4\."]


def fast_opt(params):
    return torch.optim.AdamW(params, lr=1e-2)


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed_keys(before, module):
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


def test_metricgan_hook_sees_mask_and_adaptation_changes_selected_weights(
    real_metricgan, example_audio
):
    noisy, _ = real_mixture(example_audio)
    hook = attach_hook(real_metricgan, "metricgan")
    adapter = MPolAdapter(real_metricgan, hook, params=METRICGAN_PARAMS, opt_class=fast_opt,
                          accumulation=1)
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
    adapter = MPolAdapter(real_metricgan, attach_hook(real_metricgan, "metricgan"),
                          params=METRICGAN_PARAMS, compare_in=compare_in, mode="episodic",
                          steps=5, opt_class=lambda p: torch.optim.AdamW(p, lr=5e-3),
                          clip_grad_norm=None)
    wavs, lens = noisy[None], torch.ones(1)
    before = float(adapter.objective(wavs, lens)["w1"][0])
    adapter(wavs, lens)
    after = float(adapter.objective(wavs, lens)["w1"][0])
    assert after < before


def _methods(params):
    return {
        "source": lambda e, h: SourceAdapter(e, h),
        "mpol": lambda e, h: MPolAdapter(e, h, params=params, opt_class=fast_opt,
                                         accumulation=2),
        "mpol_episodic": lambda e, h: MPolAdapter(e, h, params=params, opt_class=fast_opt,
                                                  mode="episodic", steps=1),
        "entropy": lambda e, h: EntropyAdapter(e, h, params=params, opt_class=fast_opt,
                                               accumulation=2),
        "remixit": lambda e, h: RemixITAdapter(e, h, params=params, opt_class=fast_opt,
                                               buffer_size=2),
    }


def _run_method(enhancer, model_type, factory, example_audio):
    before = snapshot(enhancer.mods)
    adapter = factory(enhancer, attach_hook(enhancer, model_type))
    for seed, noise in enumerate(["noise1.wav", "noise3.wav"]):
        noisy, _ = real_mixture(example_audio, seed=seed, noise=noise, seconds=2.0)
        out = adapter(noisy[None], torch.ones(1))
        assert out.shape == (1, noisy.numel()) and torch.isfinite(out).all()
    return adapter, changed_keys(before, enhancer.mods)


@pytest.mark.parametrize("method", ["source", "mpol", "mpol_episodic", "entropy", "remixit"])
def test_metricgan_methods_change_only_declared_parameters(
    real_metricgan, example_audio, method
):
    adapter, changed = _run_method(real_metricgan, "metricgan",
                                   _methods(METRICGAN_PARAMS)[method], example_audio)
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
    methods = _methods(GTCRN_PARAMS)
    methods["bn_stats"] = lambda e, h: BNStatsAdapter(e, h)
    adapter, changed = _run_method(real_gtcrn, "gtcrn", methods[method], example_audio)
    if method == "source":
        assert not changed
    elif method == "bn_stats":
        assert changed and all("running_" in k or "num_batches" in k for k in changed)
    else:
        assert changed and changed <= set(adapter.param_names)


def test_gtcrn_hook_mask_is_complex_magnitude(real_gtcrn, example_audio):
    noisy, _ = real_mixture(example_audio)
    hook = attach_hook(real_gtcrn, "gtcrn")
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
        BNStatsAdapter(real_metricgan, attach_hook(real_metricgan, "metricgan"))
