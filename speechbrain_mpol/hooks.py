"""Mask out: forward hooks that read a pretrained enhancer's mask without editing SpeechBrain.

A :class:`MaskHook` registers a PyTorch forward hook on the submodule that produces (or
applies) the mask of an existing SpeechBrain ``Pretrained`` enhancer. Running the enhancer as
usual then leaves a :class:`MaskView` behind: the mask in the model's own domain, the linear
magnitude of the mixture it acts on, the enhanced linear magnitude, and the two maps between
the mask's domain and a linear gain, which MPol needs to compare the mask with a reference
gain computed on linear magnitudes.

Example
-------
>>> import torch
>>> from speechbrain.lobes.models.MetricGAN import EnhancementGenerator
>>> generator = EnhancementGenerator()
>>> hook = MetricGANMaskHook(generator)
>>> feats = torch.log1p(torch.rand(1, 20, 257))
>>> mask = generator(feats, lengths=torch.ones(1))
>>> view = hook.view()
>>> view.mask.shape, view.noisy.shape
(torch.Size([1, 20, 257]), torch.Size([1, 20, 257]))
>>> hook.remove()
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from speechbrain_mpol.objective import GAIN_FLOOR


@dataclass
class MaskView:
    """What one forward pass of a mask-based enhancer exposes to MPol.

    All time-frequency tensors are ``[batch, frames, bins]``.

    Attributes
    ----------
    mask : torch.Tensor
        The mask in the model's own domain (carries gradient when the pass did).
    noisy : torch.Tensor
        Linear magnitude of the mixture representation the mask acts on (detached).
    enhanced : torch.Tensor
        Linear magnitude of the enhanced estimate (carries gradient).
    lengths : torch.Tensor or None
        SpeechBrain relative lengths ``[batch]``.
    to_linear : callable
        Maps a mask of this model's domain to its effective linear magnitude gain.
    from_linear : callable
        Maps a linear magnitude gain into this model's mask domain.
    """

    mask: torch.Tensor
    noisy: torch.Tensor
    enhanced: torch.Tensor
    lengths: torch.Tensor | None
    to_linear: Callable[[torch.Tensor], torch.Tensor]
    from_linear: Callable[[torch.Tensor], torch.Tensor]

    def linear_gain(self) -> torch.Tensor:
        """The mask's effective linear gain ``|enhanced| / |noisy|`` per bin."""
        return self.to_linear(self.mask)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class MaskHook:
    """Base class: capture the inputs and output of one submodule on every forward call.

    Subclasses turn the captured tensors into a :class:`MaskView` in :meth:`view`.

    Arguments
    ---------
    module : torch.nn.Module
        The submodule to observe.
    """

    def __init__(self, module: nn.Module):
        self.module = module
        self.args: tuple = ()
        self.kwargs: dict = {}
        self.output = None
        self._handle = module.register_forward_hook(self._capture, with_kwargs=True)

    def _capture(self, module, args, kwargs, output):
        self.args, self.kwargs, self.output = args, kwargs, output

    def clear(self) -> None:
        """Drop the captured tensors (and the graph they hold)."""
        self.args, self.kwargs, self.output = (), {}, None

    def remove(self) -> None:
        """Detach the hook from the module."""
        self._handle.remove()
        self.clear()

    def view(self) -> MaskView:
        """The :class:`MaskView` of the last forward pass."""
        raise NotImplementedError

    def _require_capture(self) -> None:
        if self.output is None:
            raise RuntimeError(
                f"{type(self).__name__}: no forward pass was captured; run the enhancer first"
            )


class MetricGANMaskHook(MaskHook):
    """Hook on MetricGAN+'s generator (``SpectralMaskEnhancement.mods.enhance_model``).

    The generator reads ``L = log1p(|Y|)`` ``[B, T, 257]`` and returns a mask ``M`` in
    (0, 1.2) that multiplies ``L``; the enhanced magnitude is ``expm1(M * L)``. So the mask's
    effective linear gain is ``expm1(M * L) / |Y|``, and a linear gain ``g`` corresponds to
    the log-domain mask ``log1p(g * |Y|) / L``.

    Arguments
    ---------
    module : torch.nn.Module
        The ``EnhancementGenerator`` (called as ``module(feats, lengths=...)``).
    """

    def view(self) -> MaskView:
        """The mask view of the last generator call."""
        self._require_capture()
        log_noisy = self.args[0].detach()
        mask = self.output
        noisy = torch.expm1(log_noisy)
        lengths = self.kwargs.get("lengths", self.args[1] if len(self.args) > 1 else None)

        def to_linear(m: torch.Tensor) -> torch.Tensor:
            return torch.expm1(m * log_noisy) / noisy.clamp(min=GAIN_FLOOR)

        def from_linear(g: torch.Tensor) -> torch.Tensor:
            return torch.log1p(g * noisy) / log_noisy.clamp(min=GAIN_FLOOR)

        return MaskView(
            mask=mask,
            noisy=noisy,
            enhanced=torch.expm1(mask * log_noisy),
            lengths=lengths,
            to_linear=to_linear,
            from_linear=from_linear,
        )


class ComplexMaskHook(MaskHook):
    """Hook on a complex-ratio-mask application module, e.g. GTCRN's ``mask`` submodule.

    The module is called as ``module(mask, spec)`` with ``mask`` ``[B, 2, T, F]`` (real,
    imaginary) and the noisy spectrum ``spec`` ``[B, F, T, 2]``. MPol compares magnitude
    distributions, so the view's mask is the complex mask's magnitude, which is exactly the
    effective linear gain ``|S| / |Y|``; the mask's phase stays the model's own.

    Arguments
    ---------
    module : torch.nn.Module
        The mask application module.
    """

    def view(self) -> MaskView:
        """The mask view of the last mask application."""
        self._require_capture()
        cmask, spec = self.args[0], self.args[1].detach()
        magnitude = cmask.pow(2).sum(dim=1).clamp(min=GAIN_FLOOR**2).sqrt()  # [B, T, F]
        noisy = spec.pow(2).sum(dim=-1).sqrt().transpose(1, 2)  # [B, T, F]
        return MaskView(
            mask=magnitude,
            noisy=noisy,
            enhanced=magnitude * noisy,
            lengths=self.kwargs.get("lengths"),
            to_linear=_identity,
            from_linear=_identity,
        )


class SepformerMaskHook(MaskHook):
    """Hooks on SepFormer's ``masknet`` and ``encoder`` (``SepformerSeparation``).

    The encoder (Conv1d + ReLU) gives a non-negative mixture representation ``[B, N, L]``;
    the masknet returns ``[n_spk, B, N, L]`` (ReLU, so never negative); the decoder turns
    ``mask * encoded`` back into a waveform. MPol applies in this encoder domain: frames are
    encoder frames, bins are the N encoder channels, the enhanced "magnitude" is
    ``mask * encoded``. The first output source is the speech estimate of an enhancement model.

    Arguments
    ---------
    masknet : torch.nn.Module
        The mask network.
    encoder : torch.nn.Module
        The encoder whose output the mask multiplies.
    """

    def __init__(self, masknet: nn.Module, encoder: nn.Module):
        super().__init__(masknet)
        self.encoded = None
        self._encoder_handle = encoder.register_forward_hook(self._capture_encoder)

    def _capture_encoder(self, module, args, output):
        self.encoded = output

    def clear(self) -> None:
        """Drop the captured tensors."""
        super().clear()
        self.encoded = None

    def remove(self) -> None:
        """Detach both hooks."""
        self._encoder_handle.remove()
        super().remove()

    def view(self) -> MaskView:
        """The mask view of the last separation, for the first source."""
        self._require_capture()
        mask = self.output[0].transpose(1, 2)  # [B, L, N]
        noisy = self.encoded.detach().transpose(1, 2)
        return MaskView(
            mask=mask,
            noisy=noisy,
            enhanced=mask * noisy,
            lengths=None,
            to_linear=_identity,
            from_linear=_identity,
        )


def attach_hook(
    enhancer: nn.Module, hook: Callable[..., MaskHook], modules: Sequence[str]
) -> MaskHook:
    """Attach a :class:`MaskHook` to the submodules of a SpeechBrain pretrained enhancer.

    Which hook class and which submodules are a property of the model: each model preset
    (``hparams/models/<model>.yaml``) names them as ``hook`` and ``hook_modules``.

    Arguments
    ---------
    enhancer : speechbrain.inference.interfaces.Pretrained
        The loaded enhancer (its ``mods`` hold the network).
    hook : callable
        A :class:`MaskHook` class, e.g. :class:`MetricGANMaskHook`.
    modules : sequence of str
        Dotted paths in ``enhancer.mods`` of the modules the hook class takes, in order
        (``["enhance_model"]``; ``["masknet", "encoder"]`` for a SepFormer).

    Returns
    -------
    MaskHook
        The attached hook.
    """
    return hook(*(enhancer.mods.get_submodule(path) for path in modules))
