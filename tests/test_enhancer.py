"""The drop-in API: MPolEnhancer on real weights and real audio."""

import soundfile as sf
import torch

from speechbrain_mpol.enhancer import MPolEnhancer, preset_for
from speechbrain_mpol.presets import load_method, load_model_preset

from .conftest import REPO, schedule_counts


def test_from_hparams_enhances_files_adapts_and_resets(tmp_path):
    enhancer = MPolEnhancer.from_hparams(str(REPO / "pretrained" / "gtcrn_vctk"),
                                         savedir=tmp_path / "savedir")
    weights = enhancer.enhancer.mods.state_dict()
    before = {k: v.clone() for k, v in weights.items()}
    files = sorted((REPO / "examples" / "noisy").iterdir())[:8]  # one continual step's worth
    for i, noisy in enumerate(files):
        out = enhancer.enhance_file(noisy, tmp_path / f"enhanced{i}.wav")
        samples, rate = sf.read(noisy)
        written, written_rate = sf.read(tmp_path / f"enhanced{i}.wav")
        assert out.shape == (len(samples),) and len(written) == len(samples)
        assert written_rate == rate == 16000 and torch.isfinite(out).all()
    # the main job's default for this model, read from its preset
    expected, counts = schedule_counts("gtcrn_vctk", len(files)), enhancer.counts
    assert counts["backward"] == expected["backward"] >= 1
    # measured: the rollback guard keeps this step (the default's objective falls on the files)
    assert counts.get("updates", 0) == expected["steps"] >= 1 and not counts.get("rollbacks")
    changed = {k for k, v in enhancer.enhancer.mods.state_dict().items()
               if not torch.equal(v, before[k])}
    assert changed and changed <= set(enhancer.adapter.param_names)
    enhancer.reset()
    assert all(torch.equal(v, before[k]) for k, v in enhancer.enhancer.mods.state_dict().items())


def test_wrapping_a_loaded_enhancer_uses_the_recipe_defaults(real_metricgan):
    wrapped = MPolEnhancer(real_metricgan)
    default = load_method("mpol_default", load_model_preset("metricgan_plus"))
    objective = wrapped.adapter.objective
    assert (objective.reference, objective.compare_in) == (default["reference"],
                                                           default["compare_in"])
    assert (wrapped.adapter.mode, wrapped.adapter.steps) == (default["mode"], default["steps"])
    assert wrapped.adapter.optimizer.defaults["lr"] == default["lr"]
    assert preset_for(enhancer=real_metricgan) == "metricgan_plus"
    noisy = torch.from_numpy(sf.read(sorted((REPO / "examples" / "noisy").iterdir())[1],
                                     dtype="float32")[0])
    out = wrapped.enhance_batch(noisy[None])
    expected = schedule_counts("metricgan_plus", 1)
    assert out.shape == (1, noisy.numel()) and wrapped.counts["backward"] == expected["backward"]
