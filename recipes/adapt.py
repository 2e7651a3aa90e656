#!/usr/bin/env python3
"""Enhance a set of audio files with a pretrained SpeechBrain enhancer, adapting it with MPol.

Usage::

    python recipes/adapt.py hparams/mpol_voicebank.yaml
    python recipes/adapt.py hparams/mpol_voicebank.yaml --data_folder=/path/to/noisy_wavs
    python recipes/adapt.py hparams/mpol_voicebank.yaml --data_folder=manifest.csv --device=cuda
    torchrun --nproc_per_node=4 recipes/adapt.py hparams/mpol_voicebank.yaml \
        --data_folder=manifest.csv --distributed_backend=nccl --device=cuda   # or gloo on CPU

Under ``torchrun`` each process enhances and adapts on its own contiguous shard of the
manifest (its own stream: no gradient is shared), writes ``rank<r>/``, and rank 0 merges the
per-rank ``results.csv`` into ``<output_folder>/results.csv`` in manifest order.

With no ``--data_folder`` the small example set built from ``../shared/audio`` is used (real
speech + real noise at 0/5/10 dB, with clean references). Outputs go to ``output_folder``:
``enhanced/*.wav``, ``results.csv``, ``summary.json``, ``scores.png``, ``pesq_gain.png``.

Authors
 * speechbrain-mpol developers
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "recipes"))

from speechbrain_mpol.brain import (  # noqa: E402
    MPolBrain,
    audio_pipeline,
    check_output_folder,
    validate_manifest,
)
from speechbrain_mpol.distributed import (  # noqa: E402
    merge_result_csvs,
    rank_and_world,
    shard_rows,
)
from speechbrain_mpol.hooks import attach_hook  # noqa: E402
from speechbrain_mpol.loading import load_enhancer  # noqa: E402
from speechbrain_mpol.manifest import resolve_manifest  # noqa: E402

logger = logging.getLogger(__name__)


def load_class(dotted: str) -> type:
    """Import ``package.module.Class`` from its dotted name."""
    module, name = dotted.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def prepare_data(hparams: dict) -> Path:
    """The manifest to enhance: ``data_folder`` if given, else the example set."""
    if hparams.get("data_folder"):
        return resolve_manifest(
            hparams["data_folder"], hparams["save_folder"], hparams.get("clean_folder")
        )
    from prepare_shifts import prepare_example

    return Path(prepare_example(hparams["shared_folder"], hparams["example_folder"]))


def prepare_model(hparams: dict) -> None:
    """Build a model folder that a prepare step makes from ``<shared_folder>/models``.

    ``model_prepare: gtcrn`` turns the published GTCRN checkpoints into SpeechBrain pretrained
    folders under ``pretrained_root`` (third-party weights: built locally, never committed).
    """
    if hparams.get("model_prepare") == "gtcrn":
        from prepare_gtcrn import prepare_gtcrn

        try:
            prepare_gtcrn(
                Path(hparams["shared_folder"]) / "models" / "gtcrn",
                hparams.get("pretrained_root", "pretrained_models"),
            )
        except FileNotFoundError as err:  # load_enhancer then reports every source it tried
            logger.error("%s", err)


def load_model(hparams: dict, run_opts: dict):
    """Prepare and load the enhancer (hub id, local folder or offline fallback)."""
    prepare_model(hparams)
    return load_enhancer(
        load_class(hparams["enhancer_class"]),
        hparams["model_source"],
        hparams["savedir"],
        fallbacks=hparams.get("offline_sources", []),
        run_opts={"device": run_opts.get("device", "cpu")},
    )


def build_adapter(hparams: dict, run_opts: dict):
    """Load the enhancer and wrap it in the adapter of ``hparams["adapter"]``."""
    enhancer = load_model(hparams, run_opts)
    hook = attach_hook(enhancer, hparams["model_type"])
    return hparams["adapter"](enhancer=enhancer, hook=hook, sample_rate=hparams["sample_rate"])


def main(argv: list[str]) -> dict:
    """Run the recipe; returns the summary."""
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    with open(hparams_file) as handle:
        hparams = load_hyperpyyaml(handle, overrides)
    try:
        check_output_folder(hparams["output_folder"])
    except OSError as err:
        sys.exit(f"error: {err}")
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    try:
        manifest = prepare_data(hparams)
    except (FileNotFoundError, ValueError) as err:  # missing shared audio, bad data_folder
        sys.exit(f"error: {err}")
    ok, skipped = validate_manifest(
        manifest, hparams["sample_rate"], hparams.get("max_seconds"),
        output_dir=Path(hparams["output_folder"]) / "enhanced",
    )
    hparams["skipped"] = skipped
    rank, world = rank_and_world()
    root = Path(hparams["output_folder"])
    ids_in_order = list(ok)
    if world > 1:
        sb.utils.distributed.ddp_init_group(run_opts)
        ok = shard_rows(ok, rank, world)
        hparams["output_folder"] = str(root / f"rank{rank}")
        hparams["skipped"] = skipped if rank == 0 else []
    dataset = sb.dataio.dataset.DynamicItemDataset.from_csv(manifest)
    dataset = dataset.filtered_sorted(key_test={"id": lambda uid: uid in set(ok)})
    dataset.add_dynamic_item(audio_pipeline(hparams["sample_rate"], hparams.get("max_seconds")))
    dataset.set_output_keys(["id", "noisy_wav", "noisy_sig", "clean_sig"])

    try:
        adapter = build_adapter(hparams, run_opts)
    except FileNotFoundError as err:
        sys.exit(f"error: {err}")
    brain = MPolBrain(modules={"adapter": adapter}, hparams=hparams, run_opts=run_opts)
    if ok:
        brain.evaluate(dataset, test_loader_kwargs=hparams["dataloader_opts"])
    else:
        logger.error("no usable input files in %s", manifest)
        brain.on_evaluate_start()
        brain.on_stage_end(sb.Stage.TEST, None)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        if rank == 0:
            all_ok = [i for r in range(world) for i in shard_rows(ids_in_order, r, world)]
            merge_result_csvs([root / f"rank{r}" / "results.csv" for r in range(world)],
                              root / "results.csv", manifest_ids=all_ok)
        dist.barrier()
    return brain.summary


if __name__ == "__main__":
    main(sys.argv[1:])
