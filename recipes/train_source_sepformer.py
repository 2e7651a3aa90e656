#!/usr/bin/env python3
"""Train the project's SepFormer source model on the synthetic source domain and export it.

A small SepFormer for enhancement (one output source): SpeechBrain's ``Encoder`` (Conv1d +
ReLU), ``Dual_Path_Model`` with transformer intra/inter blocks, and ``Decoder``, trained
with the negative scale-invariant SNR of the speech estimate, as SpeechBrain's
``sepformer-wham16k-enhancement`` recipe does. Training uses random crops
(``train_crop_seconds``) because attention cost grows with length; valid and test use
whole utterances. After training, the best checkpoint (valid PESQ) is exported in
SpeechBrain's pretrained layout (``encoder.ckpt``, ``masknet.ckpt``, ``decoder.ckpt``,
``hyperparams.yaml``) and scored on the source ``test`` split through
``SepformerSeparation.from_hparams``.

Usage::

    python recipes/train_source_sepformer.py hparams/source_sepformer.yaml
    python recipes/train_source_sepformer.py hparams/source_sepformer.yaml --eval_only=True

Authors
-------
speechbrain-mpol
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import speechbrain as sb
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_source import score, train_and_export  # noqa: E402

logger = logging.getLogger(__name__)

EXPORT_YAML = """\
# ############################################################################
# Model: small SepFormer for speech enhancement (one output source) trained on the
# synthetic source domain of speechbrain-mpol (TTS voices + stationary synthetic noise, see
# README.md here). Same layout as speechbrain/sepformer-wham16k-enhancement; load with
#   SepformerSeparation.from_hparams(source="pretrained/sepformer_source", savedir=...)
# Exported by recipes/train_source_sepformer.py. Security: hyperpyyaml can execute code
# (!new, !apply); only load YAML files you trust.
# ############################################################################

# No `paths:` on purpose: the Pretrainer then reads the .ckpt files from the folder passed
# as `source`, from any working directory.
sample_rate: {sample_rate}
num_spks: 1

Encoder: !new:speechbrain.lobes.models.dual_path.Encoder
    kernel_size: {kernel_size}
    out_channels: {n_filters}

SBtfintra: !new:speechbrain.lobes.models.dual_path.SBTransformerBlock
    num_layers: 1
    d_model: {d_model}
    nhead: {nhead}
    d_ffn: {d_ffn}
    dropout: 0
    use_positional_encoding: True
    norm_before: True

SBtfinter: !new:speechbrain.lobes.models.dual_path.SBTransformerBlock
    num_layers: 1
    d_model: {d_model}
    nhead: {nhead}
    d_ffn: {d_ffn}
    dropout: 0
    use_positional_encoding: True
    norm_before: True

MaskNet: !new:speechbrain.lobes.models.dual_path.Dual_Path_Model
    num_spks: !ref <num_spks>
    in_channels: {n_filters}
    out_channels: {d_model}
    num_layers: {num_layers}
    K: {chunk_size}
    intra_model: !ref <SBtfintra>
    inter_model: !ref <SBtfinter>
    norm: ln
    linear_layer_after_inter_intra: False
    skip_around_intra: True

Decoder: !new:speechbrain.lobes.models.dual_path.Decoder
    in_channels: {n_filters}
    out_channels: 1
    kernel_size: {kernel_size}
    stride: {stride}
    bias: False

modules:
    encoder: !ref <Encoder>
    masknet: !ref <MaskNet>
    decoder: !ref <Decoder>

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        encoder: !ref <Encoder>
        masknet: !ref <MaskNet>
        decoder: !ref <Decoder>
"""

EXPORT_KEYS = ("sample_rate", "kernel_size", "n_filters", "d_model", "nhead", "d_ffn",
               "num_layers", "chunk_size", "stride")


class SepformerSourceBrain(sb.Brain):
    """Supervised SI-SNR training of a one-source SepFormer."""

    def compute_forward(self, batch, stage):
        """Speech estimate ``[B, samples]`` of the noisy batch (encoder -> mask -> decoder)."""
        batch = batch.to(self.device)
        noisy, _ = batch.noisy_sig
        encoded = self.modules.encoder(noisy)
        mask = self.modules.masknet(encoded)[0]
        estimate = self.modules.decoder(encoded * mask)
        # The transposed-conv decoder may return a few samples fewer or more than the input.
        if estimate.shape[1] < noisy.shape[1]:
            estimate = torch.nn.functional.pad(estimate, (0, noisy.shape[1] - estimate.shape[1]))
        return estimate[:, : noisy.shape[1]]

    def compute_objectives(self, predictions, batch, stage):
        """Negative SI-SNR over the valid samples; PESQ on the valid split."""
        clean, lens = batch.clean_sig
        # Zero the padding so that it contributes to neither signal.
        mask = (torch.arange(clean.shape[1], device=clean.device)[None]
                < (lens * clean.shape[1]).round()[:, None])
        predictions = predictions * mask
        loss = sb.nnet.losses.get_si_snr_with_pitwrapper(
            (clean * mask)[..., None], predictions[..., None]
        ).mean()
        if stage != sb.Stage.TRAIN and self.hparams.valid_pesq:
            for i, rel in enumerate(lens):
                n = int(round(float(rel) * clean.shape[1]))
                self.pesq_values.append(
                    score(clean[i, :n].cpu().numpy(), predictions[i, :n].detach().cpu().numpy())[
                        "pesq"
                    ]
                )
        return loss

    def on_stage_start(self, stage, epoch=None):
        """Reset the per-stage metrics and the epoch timer."""
        self.pesq_values = []
        self.stage_start = time.time()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log, step the LR schedule, and on VALID keep the best checkpoint by PESQ."""
        stats = {"si_snr": -stage_loss, "seconds": round(time.time() - self.stage_start, 1)}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        if self.pesq_values:
            stats["pesq"] = float(np.mean(self.pesq_values))
        if stage == sb.Stage.VALID:
            old_lr, new_lr = self.hparams.lr_scheduler([self.optimizer], epoch, stage_loss)
            sb.nnet.schedulers.update_learning_rate(self.optimizer, new_lr)
            self.hparams.train_logger.log_stats(
                {"epoch": epoch, "lr": old_lr}, train_stats=self.train_stats, valid_stats=stats
            )
            print(f"epoch {epoch}: lr {old_lr:.2e} train {self.train_stats} valid {stats}",
                  flush=True)
            key = {"pesq": stats["pesq"]} if "pesq" in stats else {"pesq": -stage_loss}
            self.checkpointer.save_and_keep_only(meta=key, max_keys=["pesq"], num_to_keep=1)


def dataio_prep(hparams: dict) -> dict:
    """Manifests -> datasets; the train split yields random aligned crops, the others whole."""
    crop = int(hparams["train_crop_seconds"] * hparams["sample_rate"])

    def read_pair(noisy_wav, clean_wav):
        noisy = torch.from_numpy(sf.read(noisy_wav, dtype="float32")[0])
        clean = torch.from_numpy(sf.read(clean_wav, dtype="float32")[0])
        return noisy, clean

    @sb.utils.data_pipeline.takes("noisy_wav", "clean_wav")
    @sb.utils.data_pipeline.provides("noisy_sig", "clean_sig")
    def train_pipeline(noisy_wav, clean_wav):
        noisy, clean = read_pair(noisy_wav, clean_wav)
        if len(noisy) > crop:
            start = int(torch.randint(len(noisy) - crop + 1, ()))
            noisy, clean = noisy[start:start + crop], clean[start:start + crop]
        yield noisy
        yield clean

    @sb.utils.data_pipeline.takes("noisy_wav", "clean_wav")
    @sb.utils.data_pipeline.provides("noisy_sig", "clean_sig")
    def eval_pipeline(noisy_wav, clean_wav):
        yield from read_pair(noisy_wav, clean_wav)

    return {
        split: sb.dataio.dataset.DynamicItemDataset.from_csv(
            csv_path=hparams[f"{split}_csv"],
            dynamic_items=[train_pipeline if split == "train" else eval_pipeline],
            output_keys=["id", "noisy_sig", "clean_sig"],
        )
        for split in ("train", "valid", "test")
    }


def export_model(hparams: dict) -> Path:
    """Write the three module checkpoints and a hub-style ``hyperparams.yaml``."""
    folder = Path(hparams["export_folder"])
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("encoder", "masknet", "decoder"):
        module = hparams["modules"][name]
        state = {k: v.detach().cpu().float().clone() for k, v in module.state_dict().items()}
        torch.save(state, folder / f"{name}.ckpt")
    values = {k: hparams[k] for k in EXPORT_KEYS}
    (folder / "hyperparams.yaml").write_text(EXPORT_YAML.format(**values))
    logger.info("exported the SepFormer to %s", folder)
    return folder


def main(argv: list[str]) -> None:
    """Train the SepFormer source model (see the module docstring)."""
    from speechbrain.inference.separation import SepformerSeparation

    train_and_export(argv, SepformerSourceBrain, dataio_prep, export_model, SepformerSeparation)


if __name__ == "__main__":
    main(sys.argv[1:])
