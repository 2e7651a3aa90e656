"""The MPol objective: noise estimate, reference gain, 1-D Wasserstein distance, sign penalty.

All functions are pure and batched. Time-frequency tensors are ``[batch, frames, bins]``
(SpeechBrain's layout); ``lengths`` are SpeechBrain's relative lengths in ``(0, 1]``, and
padded frames never enter a statistic or a distribution.

The loss for one utterance (Raichle et al., ICASSP 2026) is::

    loss = sign_weight * mean(relu(-M)) + wasser_weight * W1(hist(M), hist(G))

where ``M`` is the predicted mask and ``G`` a reference gain that carries no gradient.

Example
-------
>>> import torch
>>> noisy = torch.rand(2, 50, 257) + 0.1
>>> mask = torch.rand(2, 50, 257, requires_grad=True)
>>> lengths = torch.tensor([1.0, 0.6])
>>> ref = reference_gain("self", noisy, mask.detach() * noisy, lengths)
>>> loss, parts = mpol_loss(mask, ref, lengths)
>>> loss.backward()
>>> bool(mask.grad.abs().sum() > 0), ref.requires_grad
(True, False)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from speechbrain.dataio.dataio import length_to_mask

#: Floor on denominators of gains, relative to nothing: magnitudes are in waveform units.
GAIN_FLOOR = 1e-8


def frame_mask(lengths: torch.Tensor | None, batch: int, frames: int) -> torch.Tensor:
    """Boolean ``[batch, frames]`` map of the valid (non-padded) frames.

    Arguments
    ---------
    lengths : torch.Tensor or None
        Relative lengths ``[batch]`` in (0, 1]; None means every frame is valid.
    batch : int
        Batch size.
    frames : int
        Number of frames of the padded batch.

    Returns
    -------
    torch.Tensor
        ``True`` where a frame belongs to the utterance.

    Example
    -------
    >>> frame_mask(torch.tensor([1.0, 0.5]), 2, 4).int().tolist()
    [[1, 1, 1, 1], [1, 1, 0, 0]]
    """
    if lengths is None:
        return torch.ones(batch, frames, dtype=torch.bool)
    valid = torch.round(lengths.float().cpu() * frames).clamp(min=1, max=frames)
    return length_to_mask(valid, max_len=frames, dtype=torch.bool)


def noise_estimate(
    noisy: torch.Tensor,
    energy: torch.Tensor,
    lengths: torch.Tensor | None = None,
    k: int = 32,
) -> torch.Tensor:
    """Noise magnitude per bin: mean of ``noisy`` over the ``k`` frames of lowest ``energy``.

    Arguments
    ---------
    noisy : torch.Tensor
        Noisy magnitude ``[B, T, F]`` that the noise is read from.
    energy : torch.Tensor
        Magnitude ``[B, T, F]`` that ranks the frames (the enhanced one for the authors'
        reference, the noisy one for a reference from the input alone); frames are ranked by
        the mean over bins.
    lengths : torch.Tensor, optional
        Relative lengths ``[B]``; padded frames are never picked.
    k : int
        Number of frames averaged (fewer if an utterance is shorter).

    Returns
    -------
    torch.Tensor
        Noise magnitude ``[B, F]``.

    Example
    -------
    >>> y = torch.ones(1, 10, 3); y[0, 4] = 0.1
    >>> noise_estimate(y, y, k=1).tolist()
    [[0.10000000149011612, 0.10000000149011612, 0.10000000149011612]]
    """
    batch, frames, _ = noisy.shape
    valid = frame_mask(lengths, batch, frames).to(noisy.device)
    frame_energy = energy.detach().mean(dim=-1).masked_fill(~valid, float("inf"))
    count = min(k, frames)
    idx = frame_energy.topk(count, dim=1, largest=False).indices  # [B, k]
    picked = torch.gather(noisy, 1, idx[..., None].expand(-1, -1, noisy.shape[-1]))
    # Utterances shorter than k frames: only their valid frames count.
    n_valid = valid.sum(dim=1).clamp(max=count)
    use = torch.arange(count, device=noisy.device)[None, :] < n_valid[:, None]
    return (picked * use[..., None]).sum(dim=1) / n_valid[:, None]


def _uncompressed(magnitude: torch.Tensor, compression: float) -> torch.Tensor:
    """``|.|^c`` back to linear magnitude, detached (references carry no gradient)."""
    magnitude = magnitude.detach()
    return magnitude ** (1.0 / compression) if compression != 1.0 else magnitude


def _compressed_gain(gain: torch.Tensor, compression: float) -> torch.Tensor:
    """A linear gain clipped to [0, 1], in the model's compressed domain (``G^c``)."""
    gain = gain.clamp(0.0, 1.0)
    return gain**compression if compression != 1.0 else gain


def self_reference_gain(
    noisy: torch.Tensor,
    enhanced: torch.Tensor,
    lengths: torch.Tensor | None = None,
    k: int = 32,
    compression: float = 1.0,
) -> torch.Tensor:
    """The authors' reference: spectral-subtraction gain ``G = S / (S + N)`` from the output.

    ``N`` is the mean *noisy* magnitude over the ``k`` frames whose *enhanced* energy is lowest.
    With ``compression`` c != 1 the inputs are taken as ``|.|^c``: the compression is undone
    on ``S`` and ``N`` and re-applied to the gain (``G^c``).

    Arguments
    ---------
    noisy : torch.Tensor
        Noisy magnitude ``|Y|`` ``[B, T, F]``.
    enhanced : torch.Tensor
        Enhanced magnitude ``S`` ``[B, T, F]``.
    lengths : torch.Tensor, optional
        Relative lengths ``[B]``.
    k : int
        Frames in the noise estimate.
    compression : float
        Power-law compression exponent of the model's magnitude domain.

    Returns
    -------
    torch.Tensor
        Gain in [0, 1], ``[B, T, F]``, detached.

    Example
    -------
    >>> y = torch.ones(1, 40, 2); s = y.clone(); s[0, :32] = 0.0
    >>> g = self_reference_gain(y, s, k=32)
    >>> round(float(g[0, 0, 0]), 3), round(float(g[0, 39, 0]), 3)
    (0.0, 0.5)
    """
    noisy, enhanced = _uncompressed(noisy, compression), _uncompressed(enhanced, compression)
    noise = noise_estimate(noisy, enhanced, lengths, k)[:, None, :]
    return _compressed_gain(enhanced / (enhanced + noise).clamp(min=GAIN_FLOOR), compression)


def noisy_wiener_gain(
    noisy: torch.Tensor,
    enhanced: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
    k: int = 32,
    compression: float = 1.0,
) -> torch.Tensor:
    """Power-subtraction (Wiener-style) gain from the noisy input alone.

    ``G = max(|Y|^2 - N^2, 0) / |Y|^2`` with ``N`` the mean noisy magnitude over the ``k``
    quietest *noisy* frames. The model's output is not used, so the reference cannot inherit
    the model's own bias (e.g. over-suppression under a domain shift).

    Arguments
    ---------
    noisy : torch.Tensor
        Noisy magnitude ``|Y|`` ``[B, T, F]``.
    enhanced : torch.Tensor, optional
        Ignored; present so every reference has the same signature.
    lengths : torch.Tensor, optional
        Relative lengths ``[B]``.
    k : int
        Frames in the noise estimate.
    compression : float
        As in :func:`self_reference_gain`.

    Returns
    -------
    torch.Tensor
        Gain in [0, 1], ``[B, T, F]``, detached.

    Example
    -------
    >>> y = torch.ones(1, 40, 1); y[0, 35:] = 10.0
    >>> g = noisy_wiener_gain(y, k=32)
    >>> round(float(g[0, 0, 0]), 3), round(float(g[0, 39, 0]), 3)
    (0.0, 0.99)
    """
    noisy = _uncompressed(noisy, compression)
    noise = noise_estimate(noisy, noisy, lengths, k)[:, None, :]
    power = noisy.pow(2)
    gain = (power - noise.pow(2)).clamp(min=0.0) / power.clamp(min=GAIN_FLOOR)
    return _compressed_gain(gain, compression)


def decision_directed_gain(
    noisy: torch.Tensor,
    enhanced: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
    k: int = 32,
    compression: float = 1.0,
    alpha: float = 0.98,
) -> torch.Tensor:
    """Wiener gain with a decision-directed a-priori SNR (Ephraim & Malah, 1984).

    With ``N`` from the ``k`` quietest noisy frames, the a-posteriori SNR
    ``gamma_t = |Y_t|^2 / N^2`` and, frame by frame,
    ``xi_t = alpha * G_{t-1}^2 * gamma_{t-1} + (1 - alpha) * max(gamma_t - 1, 0)``,
    ``G_t = xi_t / (1 + xi_t)``. The recursion smooths the gain over time, which avoids the
    isolated spurious ones of plain power subtraction ("musical noise") in noise-only bins.

    Arguments
    ---------
    noisy : torch.Tensor
        Noisy magnitude ``|Y|`` ``[B, T, F]``.
    enhanced : torch.Tensor, optional
        Ignored (same signature as the other references).
    lengths : torch.Tensor, optional
        Relative lengths ``[B]``.
    k : int
        Frames in the noise estimate.
    compression : float
        As in :func:`self_reference_gain`.
    alpha : float
        Smoothing of the a-priori SNR.

    Returns
    -------
    torch.Tensor
        Gain in [0, 1], ``[B, T, F]``, detached.

    Example
    -------
    >>> y = torch.ones(1, 40, 1); y[0, 35:] = 10.0
    >>> g = decision_directed_gain(y, k=32)
    >>> float(g[0, 0, 0]) < 0.05, float(g[0, 39, 0]) > 0.9
    (True, True)
    """
    noisy = _uncompressed(noisy, compression)
    noise_power = noise_estimate(noisy, noisy, lengths, k)[:, None, :].pow(2).clamp(min=GAIN_FLOOR)
    gamma = noisy.pow(2) / noise_power
    gains = []
    previous = torch.zeros_like(gamma[:, 0])
    for t in range(gamma.shape[1]):
        prior = (1 - alpha) * (gamma[:, t] - 1).clamp(min=0.0)
        if t > 0:
            prior = prior + alpha * previous.pow(2) * gamma[:, t - 1]
        previous = prior / (1 + prior)
        gains.append(previous)
    return _compressed_gain(torch.stack(gains, dim=1), compression)


#: The reference gains, by the name used in YAML (``reference:``).
REFERENCES: dict[str, Callable[..., torch.Tensor]] = {
    "self": self_reference_gain,
    "noisy_wiener": noisy_wiener_gain,
    "decision_directed": decision_directed_gain,
}


def reference_gain(
    name: str,
    noisy: torch.Tensor,
    enhanced: torch.Tensor,
    lengths: torch.Tensor | None = None,
    k: int = 32,
    compression: float = 1.0,
) -> torch.Tensor:
    """Compute the reference gain called ``name`` (a key of :data:`REFERENCES`).

    Arguments
    ---------
    name : str
        ``"self"`` (the authors'), ``"noisy_wiener"`` or ``"decision_directed"``.
    noisy, enhanced : torch.Tensor
        Linear magnitudes ``[B, T, F]``.
    lengths : torch.Tensor, optional
        Relative lengths ``[B]``.
    k : int
        Frames in the noise estimate.
    compression : float
        Power-law compression of the magnitude domain.

    Returns
    -------
    torch.Tensor
        Detached gain in [0, 1], ``[B, T, F]``.
    """
    if name not in REFERENCES:
        raise ValueError(f"unknown reference {name!r}; choose one of {sorted(REFERENCES)}")
    return REFERENCES[name](noisy, enhanced, lengths, k=k, compression=compression)


def wasserstein_1d(
    a: torch.Tensor, b: torch.Tensor, lengths: torch.Tensor | None = None
) -> torch.Tensor:
    """1-D Wasserstein-1 distance between the value histograms of ``a`` and ``b``, per utterance.

    With equal sample counts the optimal transport pairs sorted values, so
    ``W1 = mean(|sort(a) - sort(b)|)`` over the valid frames; only the histograms are compared,
    not the bins one by one.

    Arguments
    ---------
    a, b : torch.Tensor
        ``[B, T, F]`` (or ``[B, T]``) of the same shape; gradients flow through both.
    lengths : torch.Tensor, optional
        Relative lengths ``[B]``; padded frames are left out of both distributions.

    Returns
    -------
    torch.Tensor
        ``[B]`` distances.

    Example
    -------
    >>> a = torch.tensor([[[0.0, 1.0]]]); b = torch.tensor([[[1.0, 0.5]]])
    >>> wasserstein_1d(a, b).tolist()
    [0.25]
    """
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    batch, frames = a.shape[:2]
    valid = frame_mask(lengths, batch, frames).to(a.device)
    valid = valid.reshape(batch, frames, *([1] * (a.dim() - 2))).expand_as(a).reshape(batch, -1)
    # Padded entries are pushed past every valid value so they sort last in both tensors.
    big = torch.finfo(a.dtype).max
    a_sorted = a.reshape(batch, -1).masked_fill(~valid, big).sort(dim=1).values
    b_sorted = b.reshape(batch, -1).masked_fill(~valid, big).sort(dim=1).values
    n_valid = valid.sum(dim=1)
    keep = torch.arange(a_sorted.shape[1], device=a.device)[None, :] < n_valid[:, None]
    diff = torch.where(keep, (a_sorted - b_sorted).abs(), torch.zeros_like(a_sorted))
    return diff.sum(dim=1) / n_valid


def masked_mean(x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``[B, T, ...]`` over the valid frames of each utterance, ``[B]``."""
    batch, frames = x.shape[:2]
    valid = frame_mask(lengths, batch, frames).to(x.device)
    valid = valid.reshape(batch, frames, *([1] * (x.dim() - 2))).expand_as(x)
    return (x * valid).reshape(batch, -1).sum(1) / valid.reshape(batch, -1).sum(1)


def sign_penalty(mask: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``relu(-mask)`` over the valid frames, ``[B]``: zero for non-negative masks.

    Example
    -------
    >>> sign_penalty(torch.tensor([[[-1.0, 1.0]]])).tolist()
    [0.5]
    """
    return masked_mean(torch.relu(-mask), lengths)


def mpol_loss(
    mask: torch.Tensor,
    reference: torch.Tensor,
    lengths: torch.Tensor | None = None,
    sign_weight: float = 10.0,
    wasser_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The MPol loss, averaged over the batch.

    Arguments
    ---------
    mask : torch.Tensor
        Predicted mask ``[B, T, F]`` in the domain it is compared in (carries gradient).
    reference : torch.Tensor
        Reference gain in the same domain, ``[B, T, F]``; detached here in any case.
    lengths : torch.Tensor, optional
        Relative lengths ``[B]``.
    sign_weight : float
        Weight of the sign penalty (authors: 10; 1 for a PReLU-masked model).
    wasser_weight : float
        Weight of the Wasserstein term.

    Returns
    -------
    loss : torch.Tensor
        Scalar loss.
    parts : dict
        Per-utterance ``w1`` and ``sign`` terms ``[B]``, detached.
    """
    w1 = wasserstein_1d(mask, reference.detach(), lengths)
    sign = sign_penalty(mask, lengths)
    loss = (sign_weight * sign + wasser_weight * w1).mean()
    return loss, {"w1": w1.detach(), "sign": sign.detach()}


class MPolObjective:
    """The MPol loss of one enhancer pass (a :class:`~speechbrain_mpol.hooks.MaskView`).

    Computes the reference gain from the pass, brings mask and reference into the comparison
    domain and returns :func:`mpol_loss`. Stateless; build it in YAML with
    ``!new:speechbrain_mpol.objective.MPolObjective``.

    Arguments
    ---------
    reference : str
        Reference gain, a key of :data:`REFERENCES`: ``"self"`` (the authors' S/(S+N)),
        ``"noisy_wiener"`` or ``"decision_directed"``.
    compare_in : str
        ``"linear"``: compare the mask's effective linear gain with the reference;
        ``"mask"``: map the reference into the mask's own domain (MetricGAN+'s log1p domain)
        and compare it with the raw mask.
    noise_frames : int
        Frames in the noise estimate (k).
    compression : float
        Power-law compression of the magnitude domain (1 for none).
    sign_weight, wasser_weight : float
        Loss weights (see :func:`mpol_loss`).

    Example
    -------
    >>> from speechbrain_mpol.hooks import MaskView
    >>> noisy = torch.rand(1, 40, 5) + 0.1
    >>> mask = torch.full((1, 40, 5), 0.5, requires_grad=True)
    >>> view = MaskView(mask, noisy, mask * noisy, None, lambda m: m, lambda g: g)
    >>> loss, parts = MPolObjective(reference="noisy_wiener")(view)
    >>> loss.backward(); sorted(parts), bool(mask.grad.abs().sum() > 0)
    (['sign', 'w1'], True)
    """

    def __init__(
        self,
        reference: str = "self",
        compare_in: str = "linear",
        noise_frames: int = 32,
        compression: float = 1.0,
        sign_weight: float = 10.0,
        wasser_weight: float = 1.0,
    ):
        if compare_in not in ("linear", "mask"):
            raise ValueError(f"compare_in must be 'linear' or 'mask', not {compare_in!r}")
        if reference not in REFERENCES:
            raise ValueError(f"unknown reference {reference!r}; choose one of {sorted(REFERENCES)}")
        self.reference = reference
        self.compare_in = compare_in
        self.noise_frames = int(noise_frames)
        self.compression = float(compression)
        self.sign_weight = float(sign_weight)
        self.wasser_weight = float(wasser_weight)

    def reference_gain(self, view) -> torch.Tensor:
        """The reference as a linear gain ``[B, T, F]`` (detached)."""
        return reference_gain(self.reference, view.noisy, view.enhanced.detach(), view.lengths,
                              k=self.noise_frames, compression=self.compression)

    def mask_and_reference(self, view) -> tuple[torch.Tensor, torch.Tensor]:
        """The (mask, reference) pair in the comparison domain."""
        gain = self.reference_gain(view)
        if self.compare_in == "linear":
            return view.linear_gain(), gain
        return view.mask, view.from_linear(gain).detach()

    def __call__(self, view) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``sign_weight * mean(relu(-M)) + wasser_weight * W1(M, G)``, mean over the batch."""
        mask, reference = self.mask_and_reference(view)
        return mpol_loss(mask, reference, view.lengths, self.sign_weight, self.wasser_weight)
