#!/usr/bin/env python3
"""Enhance a set of audio files with a pretrained SpeechBrain enhancer, adapting it with MPol.

Usage::

    python recipes/adapt.py hparams/mpol_voicebank.yaml
    python recipes/adapt.py hparams/mpol_voicebank.yaml --data_folder=/path/to/noisy_wavs
    python recipes/adapt.py hparams/mpol_voicebank.yaml --model=gtcrn_vctk
    python recipes/adapt.py hparams/mpol_voicebank.yaml --method=mpol_paper
    python recipes/adapt.py hparams/mpol_voicebank.yaml --method_options="{lr: 0.001}"
    python recipes/adapt.py hparams/mpol_voicebank.yaml --data_folder=manifest.csv --device=cuda
    torchrun --nproc_per_node=4 recipes/adapt.py hparams/mpol_voicebank.yaml \
        --data_folder=manifest.csv --distributed_backend=nccl --device=cuda   # or gloo on CPU

With no ``--data_folder`` the example set in ``examples/`` is enhanced. Outputs go to
``output_folder``: ``enhanced/*.wav`` (32-bit float; ``--output_subtype=PCM_16`` for 16-bit),
``results.csv``, ``summary.json``, ``scores.png``, ``pesq_gain.png`` (see
``speechbrain_mpol/pipeline.py``). Rerun the same command to resume an interrupted run; an
output folder that holds another run is refused unless ``--overwrite=True``. Errors are one
line on stderr and a non-zero exit. Command-line overrides are parsed as YAML: like the YAML
files, they can execute code (``!apply:``); only run arguments you trust.

Authors
 * speechbrain-mpol developers
"""

from __future__ import annotations

import sys
from pathlib import Path

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import ddp_init_group, run_on_main

from speechbrain_mpol.brain import check_output_folder
from speechbrain_mpol.manifest import resolve_manifest
from speechbrain_mpol.pipeline import enhance_and_adapt
from speechbrain_mpol.progress import StaleProgressError


def prepare_data(hparams: dict) -> Path:
    """The manifest to enhance: ``data_folder`` if given, else the example set; checked."""
    return resolve_manifest(hparams["data_folder"] or hparams["example_folder"],
                            hparams["save_folder"], hparams.get("clean_folder"),
                            output_dir=Path(hparams["output_folder"]) / "enhanced")


def main(argv: list[str]) -> dict:
    """Run the recipe; returns the summary. Every expected failure is one line on stderr."""
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    ddp_init_group(run_opts)
    with open(hparams_file) as handle:
        hparams = load_hyperpyyaml(handle, overrides)

    def record_experiment():
        sb.create_experiment_directory(experiment_directory=hparams["output_folder"],
                                       hyperparams_to_save=hparams_file, overrides=overrides)

    try:
        check_output_folder(hparams["output_folder"])
        run_on_main(prepare_data, args=[hparams])
        summary = enhance_and_adapt(hparams, prepare_data(hparams), run_opts,
                                    on_start=record_experiment)
    # bad data_folder or manifest, no usable file, unwritable output or full disk, missing
    # model, output folder of another run
    except (OSError, ValueError, StaleProgressError) as err:
        sys.exit(f"error: {err}")
    if summary["utterances"] == 0:
        sys.exit(f"error: no file could be enhanced (see 'failed' in "
                 f"{hparams['output_folder']}/summary.json)")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
