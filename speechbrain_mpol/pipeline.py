"""The main job: a manifest of noisy audio in; enhanced files, scores and plots out.

:func:`enhance_and_adapt` validates every input, loads the model preset's enhancer, builds the
method's adapter and runs :class:`~speechbrain_mpol.brain.MPolBrain` over the manifest. Under
``torchrun`` (the process group already initialised by the recipe) each process takes a
contiguous shard of the manifest and adapts on its own stream (no gradient is shared), writes
``rank<r>/``, and the main process merges the per-rank ``results.csv`` in manifest order.
"""

from __future__ import annotations

import logging
from pathlib import Path

import speechbrain as sb
import torch.distributed as dist
from speechbrain.utils.distributed import ddp_barrier, if_main_process, is_distributed_initialized

from speechbrain_mpol.brain import MPolBrain, audio_pipeline, validate_manifest
from speechbrain_mpol.distributed import merge_result_csvs, shard_rows
from speechbrain_mpol.presets import load_enhancer, load_method, load_model_preset, model_hook

logger = logging.getLogger(__name__)


def build_dataset(manifest: str | Path, ids: list[str], sample_rate: int, max_seconds=None):
    """The SpeechBrain dataset of the manifest rows ``ids`` (in manifest order), audio read
    and checked on the fly."""
    dataset = sb.dataio.dataset.DynamicItemDataset.from_csv(manifest)
    keep = set(ids)
    dataset = dataset.filtered_sorted(key_test={"id": lambda uid: uid in keep})
    dataset.add_dynamic_item(audio_pipeline(sample_rate, max_seconds))
    dataset.set_output_keys(["id", "noisy_wav", "noisy_sig", "clean_sig"])
    return dataset


def build_adapter(hparams: dict, run_opts: dict):
    """Load the run's model preset and enhancer and build its method's adapter."""
    model = load_model_preset(hparams["model"], hparams.get("shared_folder"),
                              model_source=hparams.get("model_source"))
    enhancer = load_enhancer(model, run_opts, hparams.get("savedir"),
                             strict=hparams.get("strict_model", False))
    method = load_method(hparams["method"], model, sample_rate=hparams["sample_rate"],
                         **(hparams.get("method_options") or {}))
    return method["adapter"](enhancer=enhancer, hook=model_hook(enhancer, model))


def enhance_and_adapt(hparams: dict, manifest: str | Path, run_opts: dict) -> dict:
    """Enhance every usable file of ``manifest`` while adapting; returns the summary.

    Arguments
    ---------
    hparams : dict
        The run's hyperparameters (``hparams/mpol_voicebank.yaml``).
    manifest : str or Path
        SpeechBrain CSV with ``ID``, ``duration``, ``noisy_wav`` and optionally ``clean_wav``.
    run_opts : dict
        SpeechBrain run options (``device``, distributed settings).

    Returns
    -------
    dict
        The run's summary (also in ``summary.json``).
    """
    root = Path(hparams["output_folder"])
    ok, skipped = validate_manifest(manifest, hparams["sample_rate"], hparams.get("max_seconds"),
                                    output_dir=root / "enhanced")
    hparams["skipped"] = skipped
    ids_in_order = list(ok)
    world = dist.get_world_size() if is_distributed_initialized() else 1
    if world > 1:
        rank = dist.get_rank()
        ok = shard_rows(ok, rank, world)
        hparams["output_folder"] = str(root / f"rank{rank}")
        hparams["skipped"] = skipped if if_main_process() else []
    dataset = build_dataset(manifest, ok, hparams["sample_rate"], hparams.get("max_seconds"))
    adapter = build_adapter(hparams, run_opts)
    brain = MPolBrain(modules={"adapter": adapter}, hparams=hparams, run_opts=run_opts)
    if ok:
        brain.evaluate(dataset, test_loader_kwargs=hparams["dataloader_opts"])
    else:
        logger.error("no usable input files in %s", manifest)
        brain.on_evaluate_start()
        brain.on_stage_end(sb.Stage.TEST, None)
    if world > 1:
        ddp_barrier()
        if if_main_process():
            shards = [i for r in range(world) for i in shard_rows(ids_in_order, r, world)]
            merge_result_csvs([root / f"rank{r}" / "results.csv" for r in range(world)],
                              root / "results.csv", manifest_ids=shards)
        ddp_barrier()
    return brain.summary
