"""Unit tests of the MPol objective on constructed tensors."""

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

from speechbrain_mpol.objective import (
    decision_directed_gain,
    frame_mask,
    mpol_loss,
    noise_estimate,
    noisy_wiener_gain,
    reference_gain,
    self_reference_gain,
    sign_penalty,
    wasserstein_1d,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_w1_matches_scipy(seed):
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(1, 30, 17, generator=gen, dtype=torch.float64)
    b = torch.rand(1, 30, 17, generator=gen, dtype=torch.float64) ** 3
    ours = float(wasserstein_1d(a, b)[0])
    ref = wasserstein_distance(a.flatten().numpy(), b.flatten().numpy())
    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-12)


def test_w1_is_permutation_invariant():
    gen = torch.Generator().manual_seed(3)
    a, b = torch.rand(1, 20, 9, generator=gen), torch.rand(1, 20, 9, generator=gen)
    perm = torch.randperm(a.numel(), generator=gen)
    shuffled = a.flatten()[perm].reshape(a.shape)
    assert torch.allclose(wasserstein_1d(a, b), wasserstein_1d(shuffled, b))
    assert float(wasserstein_1d(a, a)[0]) == 0.0


def test_w1_ignores_padding():
    gen = torch.Generator().manual_seed(4)
    a, b = torch.rand(1, 12, 5, generator=gen), torch.rand(1, 12, 5, generator=gen)
    padded_a = torch.cat([a, torch.full((1, 8, 5), 7.0)], dim=1)
    padded_b = torch.cat([b, torch.full((1, 8, 5), -3.0)], dim=1)
    batch_a = torch.cat([padded_a, torch.rand(1, 20, 5, generator=gen)])
    batch_b = torch.cat([padded_b, torch.rand(1, 20, 5, generator=gen)])
    lengths = torch.tensor([12 / 20, 1.0])
    padded = wasserstein_1d(batch_a, batch_b, lengths)
    assert float(padded[0]) == pytest.approx(float(wasserstein_1d(a, b)[0]), rel=1e-6)


def test_w1_gradient_flows_to_first_argument():
    a = torch.rand(1, 10, 4, requires_grad=True)
    wasserstein_1d(a, torch.zeros(1, 10, 4)).sum().backward()
    assert torch.allclose(a.grad, torch.full_like(a, 1 / 40))


def test_frame_mask_rounds_relative_lengths():
    valid = frame_mask(torch.tensor([1.0, 0.26]), 2, 10)
    assert valid.sum(1).tolist() == [10, 3]


def test_noise_estimate_picks_lowest_energy_frames():
    # noisy magnitude carries a per-frame signature; energy ranks frames 5, 11, 2 lowest
    frames, bins = 16, 3
    noisy = torch.arange(frames, dtype=torch.float32)[None, :, None].repeat(1, 1, bins)
    energy = torch.ones(1, frames, bins)
    energy[0, [5, 11, 2]] = torch.tensor([0.1, 0.2, 0.3])[:, None]
    est = noise_estimate(noisy, energy, k=3)
    assert torch.allclose(est, torch.full((1, bins), (5 + 11 + 2) / 3))


def test_noise_estimate_never_picks_padding():
    noisy = torch.ones(1, 10, 2)
    noisy[0, 6:] = 100.0
    energy = torch.ones(1, 10, 2)
    energy[0, 6:] = 0.0  # quietest frames are padding and must be ignored
    est = noise_estimate(noisy, energy, torch.tensor([0.6]), k=3)
    assert torch.allclose(est, torch.ones(1, 2))


def test_noise_estimate_short_utterance_uses_all_valid_frames():
    noisy = torch.tensor([[[1.0], [3.0], [50.0], [50.0]]])
    est = noise_estimate(noisy, noisy, torch.tensor([0.5]), k=32)
    assert float(est) == pytest.approx(2.0)


@pytest.mark.parametrize("name", ["self", "noisy_wiener", "decision_directed"])
def test_reference_gain_range_shape_and_detached(name):
    gen = torch.Generator().manual_seed(5)
    noisy = torch.rand(2, 60, 33, generator=gen) * 3
    enhanced = (noisy * torch.rand(2, 60, 33, generator=gen)).requires_grad_(True)
    gain = reference_gain(name, noisy, enhanced, torch.tensor([1.0, 0.5]))
    assert gain.shape == noisy.shape
    assert float(gain.min()) >= 0.0 and float(gain.max()) <= 1.0
    assert not gain.requires_grad and gain.grad_fn is None


def _noise_floor_and_loud_bin(level_db: float = 30.0):
    """Noise floor 1.0 everywhere; in bin 1 of the last 20 frames a tone ``level_db`` above."""
    noisy = torch.ones(1, 100, 2)
    noisy[0, 80:, 1] = 10 ** (level_db / 20)
    return noisy


def test_noisy_wiener_gain_noise_zero_loud_one():
    noisy = _noise_floor_and_loud_bin(30.0)
    gain = noisy_wiener_gain(noisy, k=32)
    assert float(gain[0, :80].max()) < 0.01  # pure noise bins
    assert float(gain[0, 80:, 1].min()) > 0.99  # 30 dB above the floor


def test_decision_directed_gain_noise_zero_loud_one():
    noisy = _noise_floor_and_loud_bin(30.0)
    gain = decision_directed_gain(noisy, k=32)
    assert float(gain[0, :80].max()) < 0.05  # pure noise bins
    assert float(gain[0, 81:, 1].min()) > 0.99  # 30 dB above the floor, once the recursion has run


def test_self_reference_gain_noise_zero_loud_one():
    noisy = _noise_floor_and_loud_bin(30.0)
    # a model that removes the noise and keeps the tone
    enhanced = torch.zeros_like(noisy)
    enhanced[0, 80:, 1] = noisy[0, 80:, 1] - 1.0
    gain = self_reference_gain(noisy, enhanced, k=32)
    assert float(gain[0, :80].max()) < 0.01
    assert float(gain[0, 80:, 1].min()) > 0.95


def test_compression_is_undone_and_reapplied():
    noisy = _noise_floor_and_loud_bin(30.0)
    c = 0.3
    plain = noisy_wiener_gain(noisy, k=32)
    compressed = noisy_wiener_gain(noisy**c, k=32, compression=c)
    assert torch.allclose(compressed, plain**c, atol=1e-5)


def test_unknown_reference_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown reference"):
        reference_gain("oracle", torch.ones(1, 2, 2), torch.ones(1, 2, 2))


def test_sign_penalty_and_loss_weights():
    mask = torch.tensor([[[-0.5, 0.5], [1.0, -1.5]]], requires_grad=True)
    assert float(sign_penalty(mask)[0].detach()) == pytest.approx(0.5)
    ref = torch.tensor([[[0.0, 0.5], [1.0, 0.0]]])
    loss, parts = mpol_loss(mask, ref, sign_weight=10.0, wasser_weight=1.0)
    expected = 10 * 0.5 + float(parts["w1"][0])
    assert float(loss.detach()) == pytest.approx(expected)
    loss.backward()
    assert mask.grad is not None and np.isfinite(mask.grad.numpy()).all()
