"""Training, export and evaluation of the project's source models on the corpus source domain.

Two models share one loop (:func:`run_source_recipe`): the MetricGAN+ generator
(:class:`MetricGANSourceBrain`, the hub model's architecture and features, supervised log1p
magnitude MSE) and a small SepFormer (:class:`SepformerSourceBrain`, negative SI-SNR). Both
train on speech mixed on the fly (:mod:`speechbrain_mpol.dynamic_mixing`), validate one
utterance at a time on the fixed validation set (a global layer norm would otherwise see the
padding of a batch), keep the best epoch with SpeechBrain's ``Checkpointer``, export it in the
hub layout (``<module>.ckpt`` files + the repository's ``hparams/export/*.yaml``) and score the
export, loaded through ``from_hparams`` like a hub model, on the fixed in-domain test set.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.sampler import ReproducibleRandomSampler

from speechbrain_mpol.atomic import atomic_path
from speechbrain_mpol.audio import AudioError
from speechbrain_mpol.dynamic_mixing import DynamicMixer, dynamic_mixing_dataset, read_segment
from speechbrain_mpol.manifest import write_rows
from speechbrain_mpol.metrics import evaluate_pair, pesq_wb, si_sdr
from speechbrain_mpol.source_corpus import prepare_corpus

logger = logging.getLogger(__name__)

TEST_METRICS = ("pesq", "stoi", "si_sdr")


def log_magnitude(stft: torch.nn.Module, spectral_magnitude, wavs: torch.Tensor) -> torch.Tensor:
    """The MetricGAN+ features: ``log1p`` of the STFT magnitude, ``[batch, frames, bins]``."""
    return torch.log1p(spectral_magnitude(stft(wavs)))


def valid_lengths(lens: torch.Tensor, samples: int) -> list[int]:
    """Relative SpeechBrain lengths -> sample counts.

    Example
    -------
    >>> valid_lengths(torch.tensor([1.0, 0.5]), 10)
    [10, 5]
    """
    return [int(round(float(rel) * samples)) for rel in lens]


class SourceBrain(sb.Brain):
    """What both source-model brains share: epoch seeding, validation scores, checkpoints.

    Subclasses define :meth:`compute_forward`, :meth:`training_loss` and :meth:`estimate`
    (the enhanced waveform of a prediction). Hyperparameters used here: ``mixer`` (set by
    :func:`run_source_recipe`), ``checkpoint_key`` (``pesq`` or ``si_sdr``: the validation
    score that ranks the epochs), ``train_logger``.
    """

    train_sampler_for_epoch: ReproducibleRandomSampler | None = None

    def estimate(self, predictions, batch) -> torch.Tensor:
        """The enhanced waveform ``[B, samples]`` of ``predictions``."""
        raise NotImplementedError

    def training_loss(self, predictions, batch) -> torch.Tensor:
        """The loss minimised in training (also reported on validation)."""
        raise NotImplementedError

    def compute_objectives(self, predictions, batch, stage):
        """The training loss; on validation also PESQ-WB and SI-SDR of every utterance."""
        loss = self.training_loss(predictions, batch)
        if stage != sb.Stage.TRAIN:
            clean, lens = batch.clean_sig
            noisy, _ = batch.noisy_sig
            wavs = self.estimate(predictions, batch).detach().cpu().numpy()
            for i, n in enumerate(valid_lengths(lens, clean.shape[1])):
                ref = clean[i, :n].cpu().numpy()
                self.scores["pesq"].append(pesq_wb(ref, wavs[i, :n]))
                self.scores["si_sdr"].append(si_sdr(ref, wavs[i, :n]))
                self.scores["si_sdr_noisy"].append(si_sdr(ref, noisy[i, :n].cpu().numpy()))
        return loss

    def on_stage_start(self, stage, epoch=None):
        """Start the epoch's random streams (mixing, sampling), reset scores and timer."""
        if stage == sb.Stage.TRAIN:
            self.hparams.mixer.set_epoch(epoch)
            if self.train_sampler_for_epoch is not None:
                self.train_sampler_for_epoch.set_epoch(epoch)
        self.scores = {"pesq": [], "si_sdr": [], "si_sdr_noisy": []}
        self.stage_start = time.time()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log the epoch; after validation step the LR schedule and keep the best epoch."""
        stats = {"loss": round(float(stage_loss), 5),
                 "seconds": round(time.time() - self.stage_start, 1)}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        stats["pesq"] = round(float(np.nanmean(self.scores["pesq"])), 4)
        stats["si_sdr"] = round(float(np.mean(self.scores["si_sdr"])), 3)
        stats["si_sdr_noisy"] = round(float(np.mean(self.scores["si_sdr_noisy"])), 3)
        if stage != sb.Stage.VALID:
            return
        lr = self.optimizer.param_groups[0]["lr"]
        scheduler = getattr(self.hparams, "lr_scheduler", None)
        if scheduler is not None:
            lr, new_lr = scheduler([self.optimizer], epoch, stage_loss)
            sb.nnet.schedulers.update_learning_rate(self.optimizer, new_lr)
        self.hparams.train_logger.log_stats(
            {"epoch": epoch, "lr": lr}, train_stats=self.train_stats, valid_stats=stats
        )
        print(f"epoch {epoch}: lr {lr:.2e} train {self.train_stats} valid {stats}", flush=True)
        key = self.hparams.checkpoint_key
        self.checkpointer.save_and_keep_only(meta={key: stats[key]}, max_keys=[key],
                                             num_to_keep=1)


class MetricGANSourceBrain(SourceBrain):
    """Supervised mask training of the MetricGAN+ generator on log1p magnitudes.

    The mask multiplies ``log1p|Y|``; the loss is the padding-aware MSE to ``log1p|S|``. In
    training the mask is clamped at ``min_mask`` from below, as in SpeechBrain's MetricGAN+
    recipe, which keeps it away from hard zeros in low-SNR bins.
    """

    def _features(self, wavs):
        return log_magnitude(self.hparams.compute_stft, self.hparams.spectral_magnitude, wavs)

    def compute_forward(self, batch, stage):
        """Masked log1p magnitude of the noisy batch."""
        batch = batch.to(self.device)
        noisy, lens = batch.noisy_sig
        feats = self._features(noisy)
        mask = self.modules.enhance_model(feats, lengths=lens)
        if stage == sb.Stage.TRAIN:
            mask = torch.clamp(mask, min=self.hparams.min_mask)
        return mask * feats

    def training_loss(self, predictions, batch):
        """Padding-aware MSE to the clean log1p magnitude."""
        clean, lens = batch.clean_sig
        return sb.nnet.losses.mse_loss(predictions, self._features(clean), lens)

    def estimate(self, predictions, batch):
        """Resynthesis with the noisy phase, as ``SpectralMaskEnhancement`` does."""
        noisy, _ = batch.noisy_sig
        return self.hparams.resynth(torch.expm1(predictions), noisy)


class SepformerSourceBrain(SourceBrain):
    """Supervised negative-SI-SNR training of a one-source SepFormer."""

    def compute_forward(self, batch, stage):
        """Speech estimate ``[B, samples]`` (encoder -> mask -> decoder)."""
        batch = batch.to(self.device)
        noisy, _ = batch.noisy_sig
        encoded = self.modules.encoder(noisy)
        mask = self.modules.masknet(encoded)[0]
        estimate = self.modules.decoder(encoded * mask)
        # The transposed-conv decoder may return a few samples fewer or more than the input.
        if estimate.shape[1] < noisy.shape[1]:
            estimate = torch.nn.functional.pad(estimate, (0, noisy.shape[1] - estimate.shape[1]))
        return estimate[:, : noisy.shape[1]]

    def training_loss(self, predictions, batch):
        """Negative SI-SNR over the valid samples (padding zeroed in both signals)."""
        clean, lens = batch.clean_sig
        mask = (torch.arange(clean.shape[1], device=clean.device)[None]
                < (lens * clean.shape[1]).round()[:, None])
        return sb.nnet.losses.get_si_snr_with_pitwrapper(
            (clean * mask)[..., None], (predictions * mask)[..., None]
        ).mean()

    def estimate(self, predictions, batch):
        """The prediction is already a waveform."""
        return predictions


def fixed_set(csv_path: str | Path) -> sb.dataio.dataset.DynamicItemDataset:
    """A fixed mixture manifest (``noisy_wav, clean_wav``) as a ``DynamicItemDataset``."""

    @sb.utils.data_pipeline.takes("noisy_wav", "clean_wav")
    @sb.utils.data_pipeline.provides("noisy_sig", "clean_sig")
    def read_pair(noisy_wav, clean_wav):
        yield read_segment(noisy_wav)
        yield read_segment(clean_wav)

    return sb.dataio.dataset.DynamicItemDataset.from_csv(
        csv_path=str(csv_path), dynamic_items=[read_pair],
        output_keys=["id", "noisy_sig", "clean_sig"],
    )


def prepare_from_hparams(corpus: dict) -> dict[str, Path]:
    """:func:`prepare_corpus` with the options of ``hparams/source_corpus.yaml``."""
    return prepare_corpus(
        corpus["corpus_folder"], corpus["data_folder"],
        snr_range=tuple(corpus["snr_range"]), level_range=tuple(corpus["level_range"]),
        max_peak=corpus["max_peak"], segment_seconds=corpus["segment_seconds"],
        min_segment_seconds=corpus["min_segment_seconds"], valid_every=corpus["valid_every"],
        valid_seed=corpus["valid_seed"], test_seed=corpus["test_seed"],
    )


def training_mixer(corpus: dict, manifests: dict, crop_seconds: float, seed: int) -> DynamicMixer:
    """The dynamic mixer over the prepared training noise list."""
    with open(manifests["noise_train"], newline="") as handle:
        noise_files = [row["wav"] for row in csv.DictReader(handle)]
    return DynamicMixer(noise_files, corpus["snr_range"], corpus["level_range"],
                        crop_seconds=crop_seconds, max_peak=corpus["max_peak"], seed=seed)


def export_model(modules: dict[str, torch.nn.Module], hyperparams_file: str | Path,
                 folder: str | Path) -> Path:
    """Write ``<name>.ckpt`` for every module and copy ``hyperparams_file`` beside them.

    Each file is written atomically; the checkpoints are fp32 ``state_dict`` s, as the
    ``Pretrainer`` of ``from_hparams`` loads them.
    """
    folder = Path(folder)
    for name, module in modules.items():
        state = {k: v.detach().cpu().float().clone() for k, v in module.state_dict().items()}
        with atomic_path(folder / f"{name}.ckpt") as tmp:
            torch.save(state, tmp)
    with atomic_path(folder / "hyperparams.yaml") as tmp:
        shutil.copyfile(hyperparams_file, tmp)
    logger.info("exported %s to %s", ", ".join(modules), folder)
    return folder


def evaluate_export(export_folder: str | Path, test_csv: str | Path, output_folder: str | Path,
                    interface: type, run_opts: dict | None = None) -> dict:
    """Score the noisy input and the exported model on a fixed test set.

    The export is loaded with ``interface.from_hparams`` (like a hub model) and run one
    utterance at a time through :func:`speechbrain_mpol.inference.run_enhancer`, on the device
    of ``run_opts`` (SpeechBrain's ``--device``; default CPU).

    Returns
    -------
    dict
        ``{"noisy": {...}, "model": {...}, "n": N}``: means of PESQ-WB, STOI, SI-SDR; also
        written to ``<output_folder>/test_scores.json`` (per utterance: ``test_scores.csv``).
    """
    from speechbrain_mpol.inference import run_enhancer

    with tempfile.TemporaryDirectory() as savedir:
        model = interface.from_hparams(source=str(Path(export_folder).resolve()),
                                       savedir=savedir, run_opts=run_opts)
        with open(test_csv, newline="") as handle:
            rows = list(csv.DictReader(handle))
        per_utt = []
        for row in rows:
            noisy = read_segment(row["noisy_wav"])
            clean = read_segment(row["clean_wav"]).numpy()
            with torch.no_grad():
                out = run_enhancer(model, noisy[None], torch.ones(1))[0].cpu().numpy()
            scores = {"ID": row["ID"]}
            for system, wav in (("noisy", noisy.numpy()), ("model", out)):
                values = evaluate_pair(clean, wav, composite_measures=False)
                scores.update({f"{system}_{m}": values[m] for m in TEST_METRICS})
            per_utt.append(scores)
    summary = {
        system: {m: float(np.nanmean([s[f"{system}_{m}"] for s in per_utt]))
                 for m in TEST_METRICS}
        for system in ("noisy", "model")
    }
    summary["n"] = len(per_utt)
    output_folder = Path(output_folder)
    write_rows(output_folder / "test_scores.csv", per_utt)
    with atomic_path(output_folder / "test_scores.json") as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"in-domain test set ({len(per_utt)} mixtures):", flush=True)
    for system in ("noisy", "model"):
        s = summary[system]
        print(f"  {system:6s} PESQ-WB {s['pesq']:.3f}  STOI {s['stoi']:.3f}  "
              f"SI-SDR {s['si_sdr']:.2f} dB", flush=True)
    return summary


def _refuse_overwrite(hparams: dict) -> None:
    """Stop before training if the export folder already holds checkpoints."""
    folder = Path(hparams["export_folder"])
    existing = sorted(p.name for p in folder.glob("*.ckpt")) if folder.is_dir() else []
    if existing and not hparams["overwrite_export"]:
        raise FileExistsError(f"{folder} already holds {', '.join(existing)}; pass "
                              "--overwrite_export=True or another --export_folder")


def run_source_recipe(argv: list[str], brain_class: type, interface: type) -> dict:
    """Prepare the corpus, train (resumable), export the best epoch, score it on test.

    ``--eval_only=True`` only scores the existing export.

    Arguments
    ---------
    argv : list of str
        Command line: the hparams file and SpeechBrain-style overrides.
    brain_class : type
        :class:`MetricGANSourceBrain` or :class:`SepformerSourceBrain`.
    interface : type
        The pretrained interface that loads the export (``SpectralMaskEnhancement``,
        ``SepformerSeparation``).

    Returns
    -------
    dict
        The test summary of :func:`evaluate_export`.
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    with open(hparams_file) as handle:
        hparams = load_hyperpyyaml(handle, overrides)
    torch.set_num_threads(int(hparams["num_threads"]))
    sb.create_experiment_directory(experiment_directory=hparams["output_folder"],
                                   hyperparams_to_save=hparams_file, overrides=overrides)
    manifests = prepare_from_hparams(hparams["corpus"])
    if hparams["eval_only"]:
        return evaluate_export(hparams["export_folder"], manifests["test"],
                               hparams["output_folder"], interface, run_opts)
    _refuse_overwrite(hparams)

    mixer = training_mixer(hparams["corpus"], manifests, hparams["crop_seconds"],
                           hparams["seed"])
    hparams["mixer"] = mixer
    train_set = dynamic_mixing_dataset(manifests["speech_train"], mixer)
    # Examples drawn with replacement: an epoch is a number of examples, not a pass over the
    # 142 utterances, so that validation costs the same share of time for any epoch size.
    sampler = ReproducibleRandomSampler(train_set, seed=hparams["seed"], replacement=True,
                                        num_samples=hparams["examples_per_epoch"])
    brain = brain_class(modules=hparams["modules"], opt_class=hparams["opt_class"],
                        hparams=hparams, run_opts=run_opts, checkpointer=hparams["checkpointer"])
    brain.train_sampler_for_epoch = sampler
    brain.max_grad_norm = hparams["max_grad_norm"]
    start = time.time()
    brain.fit(
        hparams["epoch_counter"], train_set, fixed_set(manifests["valid"]),
        train_loader_kwargs={**hparams["train_dataloader_options"], "sampler": sampler},
        valid_loader_kwargs=hparams["valid_dataloader_options"],
    )
    print(f"training wall time this run: {(time.time() - start) / 60:.1f} min", flush=True)
    key = hparams["checkpoint_key"]
    best = brain.checkpointer.recover_if_possible(max_key=key)
    print(f"exporting the best epoch by valid {key}: {best.meta if best else None}", flush=True)
    export_model({name: hparams["modules"][name] for name in hparams["export_modules"]},
                 Path(hparams_file).parent / hparams["export_hyperparams"],
                 hparams["export_folder"])
    return evaluate_export(hparams["export_folder"], manifests["test"], hparams["output_folder"],
                           interface, run_opts)


def main(argv: list[str], brain_class: type, interface: type) -> None:
    """:func:`run_source_recipe` with a one-line error for bad input instead of a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        run_source_recipe(argv, brain_class, interface)
    except (FileNotFoundError, FileExistsError, AudioError) as err:
        sys.exit(f"error: {err}")
