#!/usr/bin/env python3
"""Train the project's MetricGAN+ source model on the synthetic source domain and export it.

The generator is SpeechBrain's ``EnhancementGenerator`` with the hub MetricGAN+ features
(16 kHz, 32 ms Hamming STFT, 16 ms hop, 512 bins; log1p of the magnitude). Its output is a
mask multiplying the log1p features; the loss is the padding-aware MSE between
``mask * log1p(|Y|)`` and ``log1p(|S|)``. After training, the best checkpoint (valid PESQ) is
exported in SpeechBrain's pretrained layout (``enhance_model.ckpt`` + ``hyperparams.yaml``)
and scored on the source ``test`` split through ``SpectralMaskEnhancement.from_hparams``.

Usage::

    python recipes/train_source.py hparams/source_metricgan.yaml
    python recipes/train_source.py hparams/source_metricgan.yaml --eval_only=True

Authors
-------
speechbrain-mpol
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from prepare_source import prepare_source  # noqa: E402

logger = logging.getLogger(__name__)

EXPORT_YAML = """\
# ############################################################################
# Model: MetricGAN+ generator (EnhancementGenerator) trained on the synthetic source domain
# of speechbrain-mpol (TTS voices + stationary synthetic noise, see README.md here).
# Same layout as speechbrain/metricgan-plus-voicebank/hyperparams.yaml; load with
#   SpectralMaskEnhancement.from_hparams(source="pretrained/metricgan_source", savedir=...)
# Exported by recipes/train_source.py. Security: hyperpyyaml can execute code (!new,
# !apply); only load YAML files you trust.
# ############################################################################

# Pretrained path: the folder this file sits in. It is not used in `paths` below, on
# purpose: without `paths`, the Pretrainer reads enhance_model.ckpt from the folder passed
# as `source`, so the model loads from any working directory and never resolves to a hub
# id (the hub file has `paths: enhance_model: speechbrain/metricgan-plus-voicebank/...`).
pretrained_path: pretrained/metricgan_source

sample_rate: {sample_rate}
win_length: {win_length}
hop_length: {hop_length}
n_fft: {n_fft}
window_fn: !name:torch.hamming_window

compute_stft: !new:speechbrain.processing.features.STFT
    sample_rate: !ref <sample_rate>
    win_length: !ref <win_length>
    hop_length: !ref <hop_length>
    n_fft: !ref <n_fft>
    window_fn: !ref <window_fn>

compute_istft: !new:speechbrain.processing.features.ISTFT
    sample_rate: !ref <sample_rate>
    win_length: !ref <win_length>
    hop_length: !ref <hop_length>
    n_fft: !ref <n_fft>
    window_fn: !ref <window_fn>

spectral_magnitude: !name:speechbrain.processing.features.spectral_magnitude
    power: 0.5

resynth: !name:speechbrain.processing.signal_processing.resynthesize
    stft: !ref <compute_stft>
    istft: !ref <compute_istft>

enhance_model: !new:speechbrain.lobes.models.MetricGAN.EnhancementGenerator
    input_size: {input_size}
    hidden_size: {hidden_size}
    num_layers: {num_layers}
    dropout: 0

modules:
    enhance_model: !ref <enhance_model>

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        enhance_model: !ref <enhance_model>
"""


def log_magnitude(hparams: dict, wavs: torch.Tensor) -> torch.Tensor:
    """The MetricGAN+ features: log1p of the STFT magnitude, ``[batch, frames, 257]``."""
    return torch.log1p(hparams["spectral_magnitude"](hparams["compute_stft"](wavs)))


def score(clean: np.ndarray, estimate: np.ndarray, sample_rate: int = 16000) -> dict[str, float]:
    """Wide-band PESQ, STOI and SI-SDR of ``estimate`` against ``clean`` (shared metrics)."""
    from speechbrain_mpol.metrics import evaluate_pair

    n = min(len(clean), len(estimate))
    scores = evaluate_pair(clean[:n], estimate[:n], sample_rate, composite_measures=False)
    return {k: scores[k] for k in ("pesq", "stoi", "si_sdr")}



class SourceBrain(sb.Brain):
    """Supervised mask training of the MetricGAN+ generator on log1p magnitudes."""

    def compute_forward(self, batch, stage):
        """Masked log1p magnitude of the noisy batch; also returns the noisy features."""
        batch = batch.to(self.device)
        noisy, lens = batch.noisy_sig
        feats = log_magnitude(self.hparams.__dict__, noisy)
        mask = self.modules.enhance_model(feats, lengths=lens)
        if stage == sb.Stage.TRAIN:
            mask = torch.clamp(mask, min=self.hparams.min_mask)
        return mask * feats

    def compute_objectives(self, predictions, batch, stage):
        """Padding-aware MSE to the clean log1p magnitude; PESQ on the valid split."""
        clean, lens = batch.clean_sig
        target = log_magnitude(self.hparams.__dict__, clean)
        loss = sb.nnet.losses.mse_loss(predictions, target, lens)
        if stage != sb.Stage.TRAIN and self.hparams.valid_pesq:
            noisy, _ = batch.noisy_sig
            wavs = self.hparams.resynth(torch.expm1(predictions), noisy)
            for i, rel in enumerate(lens):
                n = int(round(float(rel) * clean.shape[1]))
                self.pesq_values.append(
                    score(clean[i, :n].cpu().numpy(), wavs[i, :n].cpu().numpy())["pesq"]
                )
        return loss

    def on_stage_start(self, stage, epoch=None):
        """Reset the per-stage metrics and the epoch timer."""
        self.pesq_values = []
        self.stage_start = time.time()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log, and on VALID save a checkpoint ranked by PESQ."""
        stats = {"loss": stage_loss, "seconds": round(time.time() - self.stage_start, 1)}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        if self.pesq_values:
            stats["pesq"] = float(np.mean(self.pesq_values))
        if stage == sb.Stage.VALID:
            self.hparams.train_logger.log_stats(
                {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            print(f"epoch {epoch}: train {self.train_stats} valid {stats}", flush=True)
            # Without valid PESQ, rank by loss (lower is better) through a negated key.
            key = {"pesq": stats["pesq"]} if "pesq" in stats else {"pesq": -stage_loss}
            self.checkpointer.save_and_keep_only(meta=key, max_keys=["pesq"], num_to_keep=1)


def dataio_prep(hparams: dict) -> dict:
    """Manifests -> ``DynamicItemDataset`` s yielding ``noisy_sig`` and ``clean_sig``."""

    @sb.utils.data_pipeline.takes("noisy_wav", "clean_wav")
    @sb.utils.data_pipeline.provides("noisy_sig", "clean_sig")
    def audio_pipeline(noisy_wav, clean_wav):
        yield torch.from_numpy(sf.read(noisy_wav, dtype="float32")[0])
        yield torch.from_numpy(sf.read(clean_wav, dtype="float32")[0])

    datasets = {}
    for split in ("train", "valid", "test"):
        datasets[split] = sb.dataio.dataset.DynamicItemDataset.from_csv(
            csv_path=hparams[f"{split}_csv"],
            dynamic_items=[audio_pipeline],
            output_keys=["id", "noisy_sig", "clean_sig"],
        )
    return datasets


def export_model(hparams: dict, model: torch.nn.Module) -> Path:
    """Write ``enhance_model.ckpt`` and a hub-style ``hyperparams.yaml`` to the export folder."""
    folder = Path(hparams["export_folder"])
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().float().clone() for k, v in model.state_dict().items()}
    torch.save(state, folder / "enhance_model.ckpt")
    keys = ("sample_rate", "win_length", "hop_length", "n_fft", "input_size", "hidden_size",
            "num_layers")
    (folder / "hyperparams.yaml").write_text(EXPORT_YAML.format(**{k: hparams[k] for k in keys}))
    logger.info("exported the generator to %s", folder)
    return folder


def evaluate_export(hparams: dict, interface: type | None = None) -> dict:
    """Score noisy input and the exported model on the test split, loading it like a hub model.

    Arguments
    ---------
    hparams : dict
        The training hyperparameters (``export_folder``, ``test_csv``, ``output_folder``).
    interface : type, optional
        The SpeechBrain pretrained interface that loads the export
        (default ``SpectralMaskEnhancement``; ``SepformerSeparation`` for a SepFormer).

    Returns
    -------
    dict
        ``{"noisy": {...}, "model": {...}, "n": N}`` of mean PESQ-WB, STOI and SI-SDR, also
        written to ``<output_folder>/source_test_scores.json``.
    """
    from speechbrain_mpol.hooks import run_enhancer

    if interface is None:
        from speechbrain.inference.enhancement import SpectralMaskEnhancement as interface
    with tempfile.TemporaryDirectory() as savedir:
        model = interface.from_hparams(
            source=str(Path(hparams["export_folder"]).resolve()), savedir=savedir
        )
        with open(hparams["test_csv"], newline="") as f:
            rows = list(csv.DictReader(f))
        per_utt = {"noisy": [], "model": []}
        for row in rows:
            noisy = sf.read(row["noisy_wav"], dtype="float32")[0]
            clean = sf.read(row["clean_wav"], dtype="float32")[0]
            with torch.no_grad():
                out = run_enhancer(model, torch.from_numpy(noisy)[None], torch.ones(1))
            per_utt["noisy"].append(score(clean, noisy))
            per_utt["model"].append(score(clean, out[0].numpy()))
    summary = {
        system: {m: float(np.mean([s[m] for s in scores])) for m in ("pesq", "stoi", "si_sdr")}
        for system, scores in per_utt.items()
    }
    summary["n"] = len(rows)
    out_file = Path(hparams["output_folder"]) / "source_test_scores.json"
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"source test split ({len(rows)} utterances):", flush=True)
    for system in ("noisy", "model"):
        s = summary[system]
        print(f"  {system:6s} PESQ-WB {s['pesq']:.3f}  STOI {s['stoi']:.3f}  "
              f"SI-SDR {s['si_sdr']:.2f} dB", flush=True)
    return summary


def train_and_export(
    argv: list[str],
    brain_class: type,
    dataio: Callable[[dict], dict],
    export: Callable[[dict], Path],
    interface: type | None = None,
) -> None:
    """Prepare data, train (resumable), export the best checkpoint, score it on test.

    Shared by the source-model recipes; ``--eval_only=True`` only scores the export.

    Arguments
    ---------
    argv : list of str
        Command line: the hparams file and overrides.
    brain_class : type
        The ``sb.Brain`` subclass that trains the model.
    dataio : callable
        ``hparams -> {"train": ..., "valid": ..., "test": ...}`` datasets.
    export : callable
        ``hparams -> folder``: writes the pretrained folder from the recovered modules.
    interface : type, optional
        The pretrained interface that loads the export (see :func:`evaluate_export`).
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    with open(hparams_file) as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    torch.set_num_threads(int(hparams["num_threads"]))
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    sb.utils.distributed.run_on_main(
        prepare_source,
        kwargs={
            "save_folder": hparams["data_folder"],
            "n_train": hparams["n_train"],
            "n_valid": hparams["n_valid"],
            "n_test": hparams["n_test"],
            "seed": hparams["data_seed"],
            "num_workers": hparams["prep_workers"],
        },
    )
    if hparams["eval_only"]:
        evaluate_export(hparams, interface)
        return

    datasets = dataio(hparams)
    brain = brain_class(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.max_grad_norm = hparams["max_grad_norm"]
    start = time.time()
    brain.fit(
        brain.hparams.epoch_counter,
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs=hparams["train_dataloader_options"],
        valid_loader_kwargs=hparams["valid_dataloader_options"],
    )
    print(f"training wall time this run: {(time.time() - start) / 60:.1f} min", flush=True)
    # Export the best epoch by valid PESQ, not simply the last one.
    brain.checkpointer.recover_if_possible(max_key="pesq")
    export(hparams)
    shutil.copy(hparams["train_log"], Path(hparams["output_folder"]) / "train_log_final.txt")
    evaluate_export(hparams, interface)


def main(argv: list[str]) -> None:
    """Train the MetricGAN+ source model (see the module docstring)."""
    train_and_export(argv, SourceBrain, dataio_prep,
                     lambda hparams: export_model(hparams, hparams["enhance_model"]))


if __name__ == "__main__":
    main(sys.argv[1:])
