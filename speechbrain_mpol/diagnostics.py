"""Mask diagnostics against an oracle: does a model's mask show the symptom MPol targets, and
is the reference gain closer to the truth than the mask?

With a clean reference, the oracle gain is ``|clean| / |noisy|`` clipped to 1 (the same
analysis the model applies, run on the clean signal). Per utterance: the mask's mean, its share
of undecided values in (0.2, 0.8), its W1 distance to the oracle, and for every reference gain
of :data:`~speechbrain_mpol.objective.REFERENCES` its mean and W1 distance to the oracle. If
the reference is farther from the oracle than the mask is, pulling the mask toward it cannot
help.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from speechbrain_mpol.hooks import MaskHook
from speechbrain_mpol.inference import run_enhancer
from speechbrain_mpol.objective import GAIN_FLOOR, REFERENCES, reference_gain, wasserstein_1d


@torch.no_grad()
def mask_statistics(
    enhancer: nn.Module,
    hook: MaskHook,
    noisy: torch.Tensor,
    clean: torch.Tensor,
    noise_frames: int = 32,
) -> dict:
    """Source-model diagnostics of one utterance, and the value arrays for histograms.

    Arguments
    ---------
    enhancer : torch.nn.Module
        The pretrained enhancer, its hook attached.
    hook : MaskHook
        The hook on its mask.
    noisy, clean : torch.Tensor
        One utterance ``[samples]`` and its clean reference.
    noise_frames : int
        Frames in the references' noise estimate.

    Returns
    -------
    dict
        ``stats`` (name -> float) and ``values`` (label -> flat numpy array of gains).
    """
    ones = torch.ones(1)
    run_enhancer(enhancer, noisy[None], ones)
    view = hook.view()
    view.lengths = ones
    gain = view.linear_gain()
    run_enhancer(enhancer, clean[None], ones)
    clean_mag = hook.view().noisy  # the same analysis applied to the clean reference
    hook.clear()
    oracle = (clean_mag / view.noisy.clamp(min=GAIN_FLOOR)).clamp(0.0, 1.0)
    stats = {
        "mask_mean": float(gain.mean()),
        "mask_mid_share": float(((gain > 0.2) & (gain < 0.8)).float().mean()),
        "oracle_mean": float(oracle.mean()),
        "w1_mask_oracle": float(wasserstein_1d(gain, oracle)[0]),
    }
    values = {"source mask": gain.flatten().numpy(), "oracle": oracle.flatten().numpy()}
    for name in REFERENCES:
        ref = reference_gain(name, view.noisy, view.enhanced, ones, k=noise_frames)
        stats[f"w1_{name}_oracle"] = float(wasserstein_1d(ref, oracle)[0])
        stats[f"{name}_mean"] = float(ref.mean())
        values[f"reference {name}"] = ref.flatten().numpy()
    return {"stats": stats, "values": values}


@torch.no_grad()
def mask_values(enhancer: nn.Module, hook: MaskHook, noisy: torch.Tensor) -> np.ndarray:
    """Flat linear-gain mask values of one utterance ``[samples]`` with the current weights."""
    run_enhancer(enhancer, noisy[None], torch.ones(1))
    values = hook.view().linear_gain().flatten().numpy()
    hook.clear()
    return values
