"""Plumbing tests of the adapter on the real SpectralMaskEnhancement class (random generator)."""

from pathlib import Path

import pytest
import torch

from speechbrain_mpol.adapter import Adapter, crop_batch, select_parameters
from speechbrain_mpol.inference import run_enhancer
from speechbrain_mpol.objective import MPolObjective
from speechbrain_mpol.presets import load_model_preset, model_hook

SELECTED = load_model_preset("metricgan_plus")["adapted_params"]


def make_adapter(enhancer, compare_in="linear", **kwargs):
    kwargs.setdefault("params", SELECTED)
    kwargs.setdefault("opt_class", lambda p: torch.optim.AdamW(p, lr=1e-2))
    hook = model_hook(enhancer, load_model_preset("metricgan_plus"))
    return Adapter(enhancer, hook, MPolObjective(compare_in=compare_in), **kwargs)


def noisy_batch(seconds=1.0, batch=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(16000 * seconds)) / 16000
    speech = 0.3 * torch.sin(2 * torch.pi * 220 * t) * (torch.sin(2 * torch.pi * 2 * t) > 0)
    return speech + 0.05 * torch.randn(batch, t.numel(), generator=gen)


def test_pretrained_freezes_and_adapter_reenables_only_selected(metricgan_enhancer):
    model = metricgan_enhancer.mods
    assert not any(p.requires_grad for p in model.parameters())  # SpeechBrain's freeze
    adapter = make_adapter(metricgan_enhancer)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"enhance_model.linear2.weight", "enhance_model.linear2.bias",
                         "enhance_model.Learnable_sigmoid.slope"}
    assert not model.training  # stays in eval mode
    assert set(adapter.param_names) == trainable


def test_gradients_reach_only_selected_parameters(metricgan_enhancer):
    adapter = make_adapter(metricgan_enhancer, accumulation=100)  # accumulate, do not step
    wavs = noisy_batch()
    with torch.no_grad():  # as inside Brain.evaluate
        adapter(wavs, torch.ones(1))
    for name, p in metricgan_enhancer.mods.named_parameters():
        if any(s in name for s in SELECTED):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_continual_update_changes_only_selected_and_reset_restores(metricgan_enhancer):
    model = metricgan_enhancer.mods
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapter = make_adapter(metricgan_enhancer, accumulation=1, source_pull=0.0)
    adapter(noisy_batch(), torch.ones(1))
    assert adapter.counts["updates"] == 1
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(any(s in k for s in SELECTED) for k in changed)
    adapter.reset()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_accumulation_steps_every_n_utterances(metricgan_enhancer):
    adapter = make_adapter(metricgan_enhancer, accumulation=3)
    for i in range(7):
        adapter(noisy_batch(seed=i), torch.ones(1))
    assert adapter.counts["updates"] == 2
    assert adapter.counts["backward"] == 7
    # the crop is the whole utterance: its adaptation pass is also its prediction
    assert adapter.counts["forward"] == 7


def test_continual_prediction_is_the_current_weights_output(metricgan_enhancer):
    """The fused pass returns what a separate no-gradient inference would, update or not."""
    adapter = make_adapter(metricgan_enhancer, accumulation=1, source_pull=0.0)
    for seed in range(3):
        wavs = noisy_batch(seed=seed)
        with torch.no_grad():
            expected = run_enhancer(metricgan_enhancer, wavs, torch.ones(1))
        out = adapter(wavs, torch.ones(1))
        assert torch.allclose(out, expected, atol=1e-6)
        assert not out.requires_grad
    assert adapter.counts["updates"] == 3 and adapter.counts["forward"] == 3


def test_continual_longer_than_the_crop_predicts_separately(metricgan_enhancer):
    adapter = make_adapter(metricgan_enhancer, accumulation=1, crop_seconds=0.5)
    wavs = noisy_batch()
    assert wavs.shape[1] > 8000
    with torch.no_grad():
        expected = run_enhancer(metricgan_enhancer, wavs, torch.ones(1))
    out = adapter(wavs, torch.ones(1))
    assert out.shape == wavs.shape and torch.allclose(out, expected, atol=1e-6)
    assert adapter.counts["forward"] == 2 and adapter.counts["backward"] == 1


def test_source_pull_moves_weights_by_the_configured_fraction(metricgan_enhancer):
    adapter = make_adapter(metricgan_enhancer, source_pull=0.2)
    weight = metricgan_enhancer.mods.enhance_model.linear2.weight
    source = weight.detach().clone()
    with torch.no_grad():
        weight.add_(1.0)
    adapter.pull_to_source()
    assert torch.allclose(weight.detach(), source + 0.8, atol=1e-6)


def test_episodic_mode_resets_before_each_utterance(metricgan_enhancer):
    adapter = make_adapter(metricgan_enhancer, mode="episodic", steps=2)
    weight = metricgan_enhancer.mods.enhance_model.linear2.weight
    source = weight.detach().clone()
    out1 = adapter(noisy_batch(seed=1), torch.ones(1))
    adapted_once = weight.detach().clone()
    assert not torch.equal(adapted_once, source)
    adapter(noisy_batch(seed=1), torch.ones(1))
    # same input, reset in between: the same adapted weights and output, not a drift
    assert torch.allclose(weight.detach(), adapted_once, atol=1e-6)
    assert out1.shape == (1, 16000)
    assert adapter.counts["updates"] == 4


def test_predict_source_leaves_adapted_weights(metricgan_enhancer):
    adapter = make_adapter(metricgan_enhancer, accumulation=1, source_pull=0.0)
    wavs = noisy_batch()
    source_out = adapter.predict(wavs, torch.ones(1))
    adapter(wavs, torch.ones(1))
    adapted = metricgan_enhancer.mods.enhance_model.linear2.weight.detach().clone()
    again = adapter.predict_source(wavs, torch.ones(1))
    assert torch.allclose(again, source_out, atol=1e-6)
    assert torch.equal(metricgan_enhancer.mods.enhance_model.linear2.weight.detach(), adapted)


def test_compare_in_mask_domain_runs_and_updates(metricgan_enhancer):
    adapter = make_adapter(metricgan_enhancer, compare_in="mask", accumulation=1)
    adapter(noisy_batch(), torch.ones(1))
    assert adapter.counts["updates"] == 1
    assert float(adapter.last_parts["w1"][0]) > 0


def test_non_finite_loss_skips_update(metricgan_enhancer):
    adapter = make_adapter(metricgan_enhancer, accumulation=1)
    wavs = noisy_batch()
    wavs[0, 100] = float("nan")
    before = metricgan_enhancer.mods.enhance_model.linear2.weight.detach().clone()
    adapter(wavs, torch.ones(1))
    assert adapter.counts["skipped_nonfinite"] == 1
    assert torch.equal(metricgan_enhancer.mods.enhance_model.linear2.weight.detach(), before)


def test_select_parameters_errors_name_the_candidates(metricgan_enhancer):
    with pytest.raises(ValueError, match="linear1.weight"):
        select_parameters(metricgan_enhancer.mods, ["does_not_exist"])


def test_crop_batch_keeps_short_utterances():
    wavs, lens = crop_batch(torch.zeros(2, 1000), torch.tensor([1.0, 0.2]), 400)
    assert wavs.shape == (2, 400)
    assert lens.tolist() == pytest.approx([1.0, 0.5])


def test_rollback_guard_restores_last_good_weights(metricgan_enhancer):
    adapter = make_adapter(metricgan_enhancer, accumulation=1, rollback_threshold=0.0,
                           source_pull=0.0)
    weight = metricgan_enhancer.mods.enhance_model.linear2.weight
    source = weight.detach().clone()
    with torch.no_grad():  # sabotage: push the weights far from anything sensible
        weight.mul_(40.0)
    adapter(noisy_batch(), torch.ones(1))
    assert adapter.counts["rollbacks"] == 1
    assert torch.equal(weight.detach(), source)  # the last good state is the source here


def test_rollback_guard_keeps_improving_updates(metricgan_enhancer):
    adapter = make_adapter(metricgan_enhancer, accumulation=1, rollback_threshold=10.0)
    for i in range(3):
        adapter(noisy_batch(seed=i), torch.ones(1))
    assert adapter.counts["rollbacks"] == 0 and adapter.counts["updates"] == 3


def test_long_utterance_is_enhanced_in_chunks_with_its_length(metricgan_enhancer):
    adapter = make_adapter(metricgan_enhancer, chunk_seconds=2.0, crop_seconds=1.0,
                           accumulation=1)
    wavs = noisy_batch(seconds=5.0)
    out = adapter(wavs, torch.ones(1))
    assert out.shape == wavs.shape and torch.isfinite(out).all()
    # the adaptation pass only ever saw the 1 s crop
    assert adapter.counts["backward"] == 1 and adapter.counts["updates"] == 1


def test_batched_objective_equals_unbatched(metricgan_enhancer):
    """A padded batch gives each utterance the loss it gets alone (padding never counts)."""
    adapter = make_adapter(metricgan_enhancer)
    long, short = noisy_batch(seconds=1.0, seed=1), noisy_batch(seconds=0.6, seed=2)
    batch = torch.zeros(2, long.shape[1])
    batch[0], batch[1, : short.shape[1]] = long[0], short[0]
    lengths = torch.tensor([1.0, short.shape[1] / long.shape[1]])
    together = adapter.measure(batch, lengths)["w1"]
    alone = torch.cat([adapter.measure(long, torch.ones(1))["w1"],
                       adapter.measure(short, torch.ones(1))["w1"]])
    # equal up to the last STFT frame of the short one, which sees zeros instead of its own
    # reflection padding: 1% is ample (measured: equal to 4 digits)
    assert torch.allclose(together, alone, rtol=0.01)
    one = adapter.measure(long, torch.ones(1))["w1"]
    assert torch.equal(adapter.measure(long, torch.ones(1))["w1"], one)  # B = 1: same path


def test_shift_gate_adapts_only_above_its_threshold(metricgan_enhancer):
    wavs = noisy_batch()
    closed = make_adapter(metricgan_enhancer, mode="episodic", steps=2,
                          gate_threshold=float("inf"))
    source = closed.predict_source(wavs, torch.ones(1))
    out = closed(wavs, torch.ones(1))
    assert closed.counts["gated"] == 1 and closed.counts["updates"] == 0
    assert torch.allclose(out, source, atol=1e-6)  # the source weights' output
    opened = make_adapter(metricgan_enhancer, mode="episodic", steps=2,
                          gate_threshold=float("-inf"))
    opened(wavs, torch.ones(1))
    assert opened.counts["gated"] == 0 and opened.counts["updates"] == 2


def test_a_continual_stream_enhances_gated_out_audio_with_the_source_weights(
        metricgan_enhancer):
    """What the gate keeps out is enhanced as Source would, even after the stream adapted
    (the dev calibration assumes exactly that: gate.gated_deltas takes Source's scores)."""
    wavs = noisy_batch()
    adapter = make_adapter(metricgan_enhancer, mode="continual", accumulation=1,
                           gate_threshold=float("-inf"))
    source = adapter.predict_source(wavs, torch.ones(1))
    adapter(wavs, torch.ones(1))  # open: one update
    adapted = adapter.predict(wavs, torch.ones(1))
    assert adapter.counts["updates"] == 1 and not torch.allclose(adapted, source, atol=1e-4)
    weights = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    adapter.gate.threshold = float("inf")  # closed from now on
    out = adapter(wavs, torch.ones(1))
    assert adapter.counts["gated"] == 1 and adapter.counts["updates"] == 1
    assert torch.allclose(out, source, atol=1e-6)
    # the stream's adapted weights are kept for the next audio the gate lets through
    assert all(torch.equal(v, weights[k]) for k, v in adapter.model.state_dict().items())


def test_gated_deltas_follow_the_gate():
    from speechbrain_mpol.gate import choose_quantile

    rows = []
    for i, (shift, score, gain) in enumerate([("in_domain", 0.1, -0.1), ("in_domain", 0.2, -0.1),
                                              ("noise", 0.5, 0.3), ("noise", 0.05, -0.2)]):
        rows += [{"ID": str(i), "shift": shift, "method": "source", "pesq": 2.0,
                  "gate_score": score},
                 {"ID": str(i), "shift": shift, "method": "mpol_default", "pesq": 2.0 + gain}]
    table, best = choose_quantile(rows, "in_domain", [0.0, 1.0], 0.02, ["in_domain"])
    # quantile 0: threshold 0.1 opens the 0.2 in-domain utterance (-0.1) -> not eligible;
    # quantile 1: threshold 0.2 keeps in-domain closed and opens only the 0.5 noise one
    assert [t["eligible"] for t in table] == [False, True]
    assert best["quantile"] == 1.0 and best["d_noise"] == pytest.approx(0.15)


def test_gate_verification_walks_up_the_quantiles_until_a_measured_run_keeps_every_set(
        tmp_path, monkeypatch):
    import speechbrain_mpol.benchmark as benchmark
    from speechbrain_mpol.gate import verify
    from speechbrain_mpol.manifest import write_rows

    source = [{"ID": "a", "shift": "in_domain", "pesq": 2.0},
              {"ID": "b", "shift": "noise", "pesq": 2.0}]
    # a stand-in for the gated run: the in-domain loss shrinks as the threshold rises
    runs = []

    def run_benchmark(hparams, run_opts):
        threshold = hparams["method_options"]["mpol_gated"]["gate_threshold"]
        runs.append(threshold)
        write_rows(Path(hparams["output_folder"]) / "benchmark.csv",
                   [{"ID": "a", "pesq": 2.0 - 0.1 / threshold}, {"ID": "b", "pesq": 2.3}])

    monkeypatch.setattr(benchmark, "run_benchmark", run_benchmark)
    for cached in ("noisy", "m/_source_diagnostics"):
        (tmp_path / "runs" / cached).mkdir(parents=True)
    table = [{"quantile": q, "gate_threshold": t, "eligible": e}
             for q, t, e in [(0.5, 1.0, True), (0.75, 2.0, True), (0.9, 4.0, False),
                             (0.95, 10.0, True)]]
    hparams = {"output_folder": str(tmp_path), "unshifted": ["in_domain"], "max_loss": 0.02,
               "verify_runs": 3}
    best = verify(hparams, {}, "m", table, table[0], source)
    # 1.0 loses 0.1 and 2.0 loses 0.05 in-domain; 4.0 is not eligible; 10.0 loses 0.01
    assert runs == [1.0, 2.0, 10.0] and best is table[3]
    assert best["measured_d_in_domain"] == pytest.approx(-0.01)
    assert best["measured_mean_delta_shifted"] == pytest.approx(0.3)
    runs.clear()
    assert verify({**hparams, "verify_runs": 2}, {}, "m", table, table[0], source) is None
    assert runs == [1.0, 2.0]
