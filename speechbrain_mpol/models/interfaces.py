"""SpeechBrain ``Pretrained`` interfaces for the project's own (non-hub) enhancers.

:class:`GTCRNEnhancement` wraps :class:`~speechbrain_mpol.models.gtcrn.GTCRN` the way
``SpectralMaskEnhancement`` wraps MetricGAN+: ``from_hparams`` on a local folder holding
``hyperparams.yaml`` and ``enhance_model.ckpt`` (``pretrained/gtcrn_vctk``, built by
``recipes/prepare_gtcrn.py``), then
``enhance_batch`` / ``enhance_file``.

Example
-------
>>> import torch
>>> from speechbrain_mpol.models.gtcrn import GTCRN
>>> enhancer = GTCRNEnhancement(modules={"enhance_model": GTCRN()}, hparams={})
>>> enhancer.enhance_batch(torch.randn(2, 8000)).shape
torch.Size([2, 8000])
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from speechbrain.inference.interfaces import Pretrained
from speechbrain.utils.fetching import FetchConfig

from speechbrain_mpol.audio import read_audio, write_audio
from speechbrain_mpol.models.gtcrn import SAMPLE_RATE, gtcrn_istft, gtcrn_stft


class GTCRNEnhancement(Pretrained):
    """GTCRN speech enhancement (16 kHz, complex ratio mask on a 512-point STFT).

    ``from_hparams`` leaves the modules in eval mode with frozen parameters (SpeechBrain's
    default), so BatchNorm uses its running statistics. :meth:`enhance_batch` does not switch
    gradients off: test-time adaptation calls it with gradients enabled.

    Arguments
    ---------
    See ``speechbrain.inference.interfaces.Pretrained``.

    Example
    -------
    >>> from speechbrain_mpol.models.gtcrn import GTCRN
    >>> enhancer = GTCRNEnhancement(modules={"enhance_model": GTCRN()}, hparams={})
    >>> enhancer.mods.enhance_model.training
    False
    """

    MODULES_NEEDED = ["enhance_model"]

    @classmethod
    def from_hparams(
        cls, source: str | os.PathLike, hparams_file: str = "hyperparams.yaml", **kwargs
    ) -> GTCRNEnhancement:
        """Load from a local pretrained folder, never touching the network.

        A folder ``source`` is read in place when ``savedir`` is not given (SpeechBrain would
        otherwise fetch without a destination). Network fetching is disabled unless the
        caller passes its own ``fetch_config``: GTCRN is not on the SpeechBrain hub, so a
        non-folder ``source`` would only end in a slow offline failure.

        Arguments
        ---------
        source : str or PathLike
            Folder with ``hyperparams.yaml`` and ``enhance_model.ckpt``.
        hparams_file : str
            Name of the hyperparameter file inside ``source``.
        **kwargs : dict
            Forwarded to ``Pretrained.from_hparams`` (``savedir``, ``run_opts``, ...).

        Returns
        -------
        GTCRNEnhancement
            The loaded enhancer.
        """
        source = str(source)
        savedir = kwargs.get("savedir")
        if not Path(source).is_dir() and not (
            savedir is not None and (Path(savedir) / hparams_file).is_file()
        ):
            raise FileNotFoundError(
                f"GTCRN pretrained folder not found: {source!r}. The published weights are "
                "committed in pretrained/gtcrn_vctk and pretrained/gtcrn_dns3 (rebuilt by "
                "`python recipes/prepare_gtcrn.py`)."
            )
        if savedir is None and Path(source).is_dir():
            kwargs["savedir"] = source
        kwargs.setdefault("fetch_config", FetchConfig(allow_network=False))
        return super().from_hparams(source, hparams_file=hparams_file, **kwargs)

    def enhance_batch(
        self, noisy: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Enhance a batch of noisy waveforms.

        GTCRN is causal in time, so the zero padding of a shorter utterance changes at most
        its last STFT frame; samples beyond each length are zeroed in the output.

        Arguments
        ---------
        noisy : torch.Tensor
            Waveforms ``[B, L]`` at 16 kHz.
        lengths : torch.Tensor, optional
            Relative lengths ``[B]`` in (0, 1] (SpeechBrain convention). Also passed to the
            mask module as a keyword, so a forward hook on ``enhance_model.mask`` sees it.

        Returns
        -------
        torch.Tensor
            Enhanced waveforms ``[B, L]``.
        """
        noisy = noisy.to(self.device)
        if lengths is not None:
            lengths = lengths.to(self.device)
        length = noisy.shape[-1]
        enhanced_spec = self.mods.enhance_model(gtcrn_stft(noisy), lengths=lengths)
        enhanced = gtcrn_istft(enhanced_spec, length)
        if lengths is not None:
            samples = torch.round(lengths * length).long()
            keep = torch.arange(length, device=noisy.device)[None, :] < samples[:, None]
            enhanced = enhanced * keep
        return enhanced

    def enhance_file(
        self, path: str | os.PathLike, output_filename: str | os.PathLike | None = None
    ) -> torch.Tensor:
        """Enhance an audio file (read as mono, resampled to 16 kHz when needed).

        Arguments
        ---------
        path : str or PathLike
            Noisy audio file.
        output_filename : str or PathLike, optional
            If given, the enhanced audio is written there (16-bit PCM wav).

        Returns
        -------
        torch.Tensor
            The enhanced waveform ``[L]``.
        """
        noisy = read_audio(path, SAMPLE_RATE)
        with torch.no_grad():  # file-level inference only; adaptation uses enhance_batch
            enhanced = self.enhance_batch(noisy.unsqueeze(0), lengths=torch.ones(1))[0]
        if output_filename is not None:
            write_audio(output_filename, enhanced, SAMPLE_RATE)
        return enhanced
