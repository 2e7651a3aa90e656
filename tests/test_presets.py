"""Model and method presets: every YAML loads, each model setting is written once, and a new
model joins through YAML alone."""

import re
import runpy
import shutil
from pathlib import Path

import pytest
import ruamel.yaml
import soundfile as sf
import torch

from speechbrain_mpol.adapter import Adapter
from speechbrain_mpol.presets import (
    HPARAMS,
    build_adapter,
    load_enhancer,
    load_method,
    load_model_preset,
)

from .conftest import REPO

MODELS = sorted(p.stem for p in (HPARAMS / "models").glob("*.yaml"))
METHODS = sorted(p.stem for p in (HPARAMS / "methods").glob("*.yaml"))
#: Keys that only a model preset may set (a run may override model_source with null default).
MODEL_KEYS = ("enhancer_class", "model_source", "offline_sources", "hook", "hook_modules",
              "adapted_params", "method_options", "sweep_param_sets", "sweep_grid")


def raw(path: Path) -> dict:
    """A YAML file's top-level mapping, tags kept as text, nothing built."""
    with open(path) as handle:
        return ruamel.yaml.YAML().load(handle) or {}


def as_text(value) -> str:
    return repr(value.tag.value if hasattr(value, "tag") and value.tag.value else value) + repr(
        value)


@pytest.mark.parametrize("model", MODELS)
def test_every_model_preset_loads_with_every_method(model):
    preset = load_model_preset(model)
    assert preset["name"] == model
    assert {"enhancer_class", "model_source", "hook", "hook_modules", "adapted_params"} <= set(
        preset)
    assert all(re.compile(p) for p in preset["adapted_params"])
    for method in METHODS:
        loaded = load_method(method, preset)
        assert callable(loaded["adapter"])
        for key, value in preset.get("method_options", {}).get(method, {}).items():
            assert loaded[key] == value, (model, method, key)


def test_method_options_are_layered_and_unknown_ones_raise():
    gtcrn = load_model_preset("gtcrn_vctk")
    paper, default = load_method("mpol_paper", gtcrn), load_method("mpol_default", gtcrn)
    assert (paper["reference"], paper["mode"], paper["lr"]) == ("self", "continual", 5e-4)
    own = gtcrn["method_options"]["mpol_default"]  # the model's dev-chosen options win
    assert own and all(default[k] == v for k, v in own.items())
    assert default["reference"] == "noisy_wiener" and default["lr"] == 1e-3
    assert default["rollback_threshold"] == 0.5 and paper["rollback_threshold"] is None
    assert load_method("mpol_default", gtcrn, lr=0.01)["lr"] == 0.01  # the caller wins
    with pytest.raises(ValueError, match="unknown option.*lrr"):
        load_method("mpol", gtcrn, lrr=0.01)
    with pytest.raises(ValueError, match="unknown model preset 'nope'"):
        load_model_preset("nope")


def test_a_preset_adds_method_options_to_its_bases():
    """GTCRN-DNS3 names GTCRN-VCTK as its base and sets only its own gate: the dev-chosen
    default comes from the base, method by method."""
    vctk, dns3 = load_model_preset("gtcrn_vctk"), load_model_preset("gtcrn_dns3")
    assert "mpol_default" not in _own_keys("gtcrn_dns3")
    assert dns3["method_options"]["mpol_default"] == vctk["method_options"]["mpol_default"]
    for method in ("mpol_default", "mpol_gated"):
        ungated = {k: v for k, v in load_method(method, vctk).items()
                   if k not in ("adapter", "name", "gate_threshold")}
        assert ungated == {k: v for k, v in load_method(method, dns3).items()
                           if k not in ("adapter", "name", "gate_threshold")}
    assert load_method("mpol_gated", dns3)["gate_threshold"] != load_method(
        "mpol_gated", vctk)["gate_threshold"]


def _own_keys(name: str) -> dict:
    """The method options written in a model preset's own file."""
    import ruamel.yaml

    text = (REPO / "hparams" / "models" / f"{name}.yaml").read_text()
    return ruamel.yaml.YAML(typ="safe").load(text).get("method_options", {})


def test_no_model_setting_is_written_in_more_than_one_file():
    """A model setting's value lives in exactly one YAML file of the repository, and no Python
    file restates a model's adapted-parameter patterns."""
    yamls = [p for p in REPO.glob("hparams/**/*.yaml") if "export" not in p.parts]
    seen: dict[tuple[str, str], list[Path]] = {}
    for path in yamls:
        for key, value in raw(path).items():
            placeholder = getattr(getattr(value, "tag", None), "value", None) == "!PLACEHOLDER"
            if key in MODEL_KEYS and value not in (None, [], {}) and not placeholder:
                seen.setdefault((key, as_text(value)), []).append(path)
    repeated = {k: v for k, v in seen.items() if len(v) > 1}
    assert not repeated, repeated
    outside = {p for (key, _), paths in seen.items() for p in paths
               if p.parent.name != "models"}
    assert not outside, f"model settings outside hparams/models/: {outside}"
    python = [p for folder in ("speechbrain_mpol", "recipes", "benchmarks", "tests")
              for p in (REPO / folder).rglob("*.py")]
    text = {p: p.read_text() for p in python}
    for model in MODELS:
        preset = load_model_preset(model)
        params = preset["adapted_params"]
        needles = [p for p in params if re.escape(p) != p]  # the regular expressions
        needles.append(", ".join(f'"{p}"' for p in params))
        for needle in needles:
            holders = [p.name for p, t in text.items() if needle in t]
            assert not holders, f"{model}: {needle!r} restated in {holders}"


TOY_MODEL = """\
# A toy mask model: SpeechBrain's SpectralMaskEnhancement around a one-layer generator
# (the generator's output layers expect 2 x 200 BLSTM features).
sample_rate: 16000
compute_stft: !new:speechbrain.processing.features.STFT
    sample_rate: 16000
    win_length: 32
    hop_length: 16
    n_fft: 512
    window_fn: !name:torch.hamming_window
compute_istft: !new:speechbrain.processing.features.ISTFT
    sample_rate: 16000
    win_length: 32
    hop_length: 16
    n_fft: 512
    window_fn: !name:torch.hamming_window
spectral_magnitude: !name:speechbrain.processing.features.spectral_magnitude
    power: 0.5
resynth: !name:speechbrain.processing.signal_processing.resynthesize
    stft: !ref <compute_stft>
    istft: !ref <compute_istft>
enhance_model: !new:speechbrain.lobes.models.MetricGAN.EnhancementGenerator
    input_size: 257
    hidden_size: 200
    num_layers: 1
    dropout: 0
modules:
    enhance_model: !ref <enhance_model>
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        enhance_model: !ref <enhance_model>
"""

TOY_PRESET = """\
# Model preset of the toy model: the whole integration of a new mask model.
enhancer_class: !name:speechbrain.inference.enhancement.SpectralMaskEnhancement
model_source: {folder}
offline_sources: []
sample_rate: 16000
hook: !name:speechbrain_mpol.hooks.MetricGANMaskHook
hook_modules: [enhance_model]
adapted_params: [linear1]
method_options:
    mpol_default: {{mode: continual, accumulation: 1, lr: 0.01}}
"""


def test_a_new_mask_model_joins_through_yaml_only(tmp_path):
    """A model folder (hyperparams.yaml + weights) and one preset file: the main job runs it,
    adapts exactly the declared weights, and scores real audio."""
    from hyperpyyaml import load_hyperpyyaml

    folder = tmp_path / "toy_model"
    folder.mkdir()
    (folder / "hyperparams.yaml").write_text(TOY_MODEL)
    torch.manual_seed(0)
    network = load_hyperpyyaml(TOY_MODEL)["enhance_model"]
    torch.save(network.state_dict(), folder / "enhance_model.ckpt")
    preset = tmp_path / "toy.yaml"
    preset.write_text(TOY_PRESET.format(folder=folder))

    model = load_model_preset(preset)
    adapter = build_adapter(load_enhancer(model), model, "mpol_default")
    assert isinstance(adapter, Adapter)
    assert adapter.param_names == ["enhance_model.linear1.weight", "enhance_model.linear1.bias"]

    data = tmp_path / "data"
    (data / "noisy").mkdir(parents=True)
    (data / "clean").mkdir()
    for path in sorted((REPO / "examples" / "noisy").iterdir())[:3]:
        shutil.copy(path, data / "noisy" / path.name)
        shutil.copy(REPO / "examples" / "clean" / path.name, data / "clean" / path.name)
    main = runpy.run_path(str(REPO / "recipes" / "adapt.py"))["main"]
    summary = main([str(HPARAMS / "mpol_voicebank.yaml"), f"--model={preset}",
                    f"--data_folder={data}", f"--output_folder={tmp_path / 'out'}",
                    "--plots=False"])
    assert summary["utterances"] == 3
    assert summary["adaptation"]["updates"] == 3  # continual, a step after every utterance
    assert summary["model_source"] == str(folder)
    enhanced, rate = sf.read(tmp_path / "out" / "enhanced" / f"{path.stem}.wav")
    assert rate == 16000 and len(enhanced) == len(sf.read(path)[0])
