"""The main job: a manifest of noisy audio in; enhanced files, scores and plots out.

:func:`enhance_and_adapt` checks the manifest and every input, loads the model preset's
enhancer, builds the method's adapter, opens the run's progress (resuming an interrupted run of
the same manifest and settings, refusing one of another) and runs
:class:`~speechbrain_mpol.brain.MPolBrain` over the manifest. Under ``torchrun`` (the process
group already initialised by the recipe) each process takes a contiguous shard of the manifest
and adapts on its own stream (no gradient is shared), writes ``rank<r>/``, and the main process
merges the per-rank ``results.csv`` in manifest order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import speechbrain as sb
import torch.distributed as dist
from speechbrain.utils.distributed import ddp_barrier, if_main_process, is_distributed_initialized

from speechbrain_mpol.brain import OUTPUT_OPTIONS, MPolBrain, audio_pipeline, validate_manifest
from speechbrain_mpol.distributed import merge_result_csvs, shard_rows
from speechbrain_mpol.loading import source_digest
from speechbrain_mpol.presets import load_enhancer, load_method, load_model_preset, model_hook
from speechbrain_mpol.progress import run_key

logger = logging.getLogger(__name__)


class NoUsableFilesError(ValueError):
    """Not one file of the manifest can be enhanced; the message is one line."""


def build_dataset(manifest: str | Path, ids: list[str], sample_rate: int, max_seconds=None):
    """The SpeechBrain dataset of the manifest rows ``ids`` (in manifest order), audio read
    and checked on the fly."""
    dataset = sb.dataio.dataset.DynamicItemDataset.from_csv(manifest)
    keep = set(ids)
    dataset = dataset.filtered_sorted(key_test={"id": lambda uid: uid in keep})
    dataset.add_dynamic_item(audio_pipeline(sample_rate, max_seconds))
    dataset.set_output_keys(["id", "noisy_wav", "noisy_sig", "clean_sig"])
    return dataset


def run_settings(hparams: dict, model: dict, method: dict, enhancer, world_size: int) -> dict:
    """Every setting that changes a run's outputs, for its resume key.

    The model preset and the method's resolved options as loaded (whatever their files and
    the run's ``method_options`` say), the model that actually runs (a fallback is another
    model; a local folder with its weights' digest, as retrained weights can replace them),
    the Brain's output options, the device and the number of processes.
    """
    report = getattr(enhancer, "load_report", None)
    return {
        "model": model,
        "model_used": source_digest(report.used if report is not None
                                    else model["model_source"]),
        "method": {key: value for key, value in method.items() if key != "adapter"},
        "seed": hparams.get("seed"),
        **{key: hparams.get(key) for key in OUTPUT_OPTIONS},
        "device": str(getattr(enhancer, "device", "cpu")),
        "processes": world_size,
    }


def _no_usable_files(manifest: str | Path, skipped: list[dict]) -> NoUsableFilesError:
    first = skipped[0] if skipped else None
    more = f" (and {len(skipped) - 1} more, logged)" if len(skipped) > 1 else ""
    detail = f": {first['file']}: {first['problem']}{more}" if first else ""
    return NoUsableFilesError(f"{manifest}: no usable input file, {len(skipped)} skipped"
                              f"{detail}; nothing was written")


def enhance_and_adapt(
    hparams: dict,
    manifest: str | Path,
    run_opts: dict,
    on_start: Callable[[], None] | None = None,
) -> dict:
    """Enhance every usable file of ``manifest`` while adapting; returns the summary.

    Arguments
    ---------
    hparams : dict
        The run's hyperparameters (``hparams/mpol_voicebank.yaml``).
    manifest : str or Path
        SpeechBrain CSV with ``ID``, ``duration``, ``noisy_wav`` and optionally ``clean_wav``.
    run_opts : dict
        SpeechBrain run options (``device``, distributed settings).
    on_start : callable, optional
        Called once the run is known to go ahead (inputs checked, model loaded, progress
        opened), before anything is written to the output folder: e.g. SpeechBrain's
        ``create_experiment_directory``.

    Returns
    -------
    dict
        The run's summary (also in ``summary.json``).

    Raises
    ------
    ManifestError, NoUsableFilesError
        (``ValueError``) A manifest problem, or no usable file: nothing is written.
    StaleProgressError
        The output folder holds progress or results of another run (see ``overwrite``).
    OSError
        A write failed (disk full, ...): one line; no temporary file is left.
    """
    root = Path(hparams["output_folder"])
    world = dist.get_world_size() if is_distributed_initialized() else 1
    if world > 1:
        hparams["output_folder"] = str(root / f"rank{dist.get_rank()}")
    usable, skipped = validate_manifest(manifest, hparams["sample_rate"],
                                        hparams.get("max_seconds"),
                                        output_dir=Path(hparams["output_folder"]) / "enhanced")
    if not usable:
        raise _no_usable_files(manifest, skipped)
    ids_in_order = [row["ID"] for row in usable]
    mine = shard_rows(usable, dist.get_rank(), world) if world > 1 else usable
    hparams["skipped"] = skipped if if_main_process() else []

    model = load_model_preset(hparams["model"], hparams.get("shared_folder"),
                              model_source=hparams.get("model_source"))
    enhancer = load_enhancer(model, run_opts, hparams.get("savedir"),
                             strict=hparams.get("strict_model", False))
    method = load_method(hparams["method"], model, sample_rate=hparams["sample_rate"],
                         **(hparams.get("method_options") or {}))
    adapter = method["adapter"](enhancer=enhancer, hook=model_hook(enhancer, model))
    brain = MPolBrain(modules={"adapter": adapter}, hparams=hparams, run_opts=run_opts)
    if hparams.get("resume", True):
        key = run_key(mine, run_settings(hparams, model, method, enhancer, world))
        brain.open_progress(key, overwrite=hparams.get("overwrite", False), manifest=manifest)
    if on_start is not None:
        on_start()
    dataset = build_dataset(manifest, [row["ID"] for row in mine], hparams["sample_rate"],
                            hparams.get("max_seconds"))
    brain.evaluate(dataset, test_loader_kwargs=hparams["dataloader_opts"])
    if world > 1:
        ddp_barrier()
        if if_main_process():
            shards = [i for r in range(world) for i in shard_rows(ids_in_order, r, world)]
            merge_result_csvs([root / f"rank{r}" / "results.csv" for r in range(world)],
                              root / "results.csv", manifest_ids=shards)
        ddp_barrier()
    return brain.summary
