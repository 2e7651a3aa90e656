"""``MPolEnhancer``: a SpeechBrain enhancer that adapts itself with MPol while it enhances.

A drop-in for SpeechBrain's enhancement interfaces: change one import and one line, and
``enhance_batch`` / ``enhance_file`` keep their meaning, while every call also adapts the model
to the audio it sees (with the model preset's recommended method, the same as the main job's).

Example
-------
>>> from speechbrain_mpol.enhancer import MPolEnhancer
>>> enhancer = MPolEnhancer.from_hparams("pretrained/gtcrn_vctk")  # doctest: +SKIP
>>> enhanced = enhancer.enhance_file("examples/noisy/<ID>.flac")    # doctest: +SKIP
>>> enhancer.reset()                                                # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from speechbrain_mpol.audio import read_audio, write_audio
from speechbrain_mpol.loading import local_folder
from speechbrain_mpol.presets import (
    HPARAMS,
    build_adapter,
    load_enhancer,
    load_model_preset,
    preset_file,
)


def same_source(source: str | os.PathLike) -> str:
    """A source as comparable text: a local folder's absolute path, else the hub id."""
    folder = local_folder(source)
    return str(folder.resolve()) if folder is not None else str(source).rstrip("/")


def preset_for(source: str | None = None, enhancer: nn.Module | None = None) -> str:
    """The model preset that fits a model source or a loaded enhancer.

    A preset whose ``model_source`` (or offline source) is ``source`` wins; else the preset of
    the enhancer's interface class (the first preset, in name order, without a ``base``).

    Example
    -------
    >>> preset_for("speechbrain/metricgan-plus-voicebank")
    'metricgan_plus'
    """
    names = sorted(p.stem for p in (HPARAMS / "models").glob("*.yaml"))
    presets = {name: load_model_preset(name) for name in names}
    if source is not None:
        wanted = same_source(source)
        for name, preset in presets.items():
            candidates = [preset["model_source"], *preset.get("offline_sources", [])]
            if any(same_source(c) == wanted for c in candidates):
                return name
    if enhancer is not None:
        for name in names:
            if "base:" not in preset_file("models", name).read_text() and isinstance(
                enhancer, presets[name]["enhancer_class"]
            ):
                return name
    raise ValueError(f"no model preset fits {source or type(enhancer).__name__}; pass "
                     "model=<a preset of hparams/models/> or a preset YAML file")


class MPolEnhancer:
    """Enhance and adapt with MPol, behind SpeechBrain's enhancement interface.

    Arguments
    ---------
    enhancer : speechbrain.inference.interfaces.Pretrained
        A loaded SpeechBrain enhancer (``SpectralMaskEnhancement``, ``SepformerSeparation``,
        the project's ``GTCRNEnhancement``).
    model : str, optional
        Its model preset (``hparams/models/<model>.yaml``); default: the preset of its class.
    method : str
        A method preset; default ``mpol_default``, the main job's.
    sample_rate : int
        Rate of the audio passed to :meth:`enhance_batch`.
    **method_options
        Options of the method (``lr=0.001``, ``mode="continual"``...).
    """

    def __init__(
        self,
        enhancer: nn.Module,
        model: str | os.PathLike | None = None,
        method: str = "mpol_default",
        sample_rate: int = 16000,
        **method_options,
    ):
        preset = load_model_preset(model or preset_for(enhancer=enhancer))
        self.enhancer = enhancer
        self.sample_rate = sample_rate
        self.adapter = build_adapter(enhancer, preset, method, sample_rate=sample_rate,
                                     **method_options)

    @classmethod
    def from_hparams(
        cls,
        source: str,
        savedir: str | os.PathLike | None = None,
        model: str | os.PathLike | None = None,
        run_opts: dict | None = None,
        **kwargs,
    ) -> MPolEnhancer:
        """Load ``source`` (a hub id or a folder) the way SpeechBrain does, and wrap it.

        Arguments
        ---------
        source : str
            A HuggingFace id or a local folder with ``hyperparams.yaml``.
        savedir : str or PathLike, optional
            Where a hub id's files are kept.
        model : str, optional
            The model preset; default: the one whose source is ``source``.
        run_opts : dict, optional
            SpeechBrain run options (``{"device": "cuda"}``).
        **kwargs
            ``method``, ``sample_rate`` and method options, as for the constructor.
        """
        preset = load_model_preset(model or preset_for(source), model_source=source,
                                   offline_sources=[])
        return cls(load_enhancer(preset, run_opts, savedir), model or preset["name"], **kwargs)

    def enhance_batch(
        self, noisy: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Enhance ``[batch, samples]`` waveforms, adapting on them (one stream)."""
        return self.adapter(noisy, lengths)

    def enhance_file(
        self, filename: str | os.PathLike, output_filename: str | os.PathLike | None = None
    ) -> torch.Tensor:
        """Enhance one file of any length and rate (long files in cross-faded chunks).

        Returns the enhanced waveform ``[samples]`` at ``sample_rate``, as long as the input;
        written to ``output_filename`` when given.
        """
        noisy = read_audio(filename, self.sample_rate)
        enhanced = self.enhance_batch(noisy[None], torch.ones(1))[0]
        if output_filename is not None:
            write_audio(Path(output_filename), enhanced, self.sample_rate)
        return enhanced

    def reset(self) -> None:
        """Back to the source weights, bit for bit."""
        self.adapter.reset()

    @property
    def counts(self) -> dict:
        """Forward and backward passes, updates, rollbacks and skipped updates so far."""
        return dict(self.adapter.counts)
