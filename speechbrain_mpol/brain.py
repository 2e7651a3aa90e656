"""``MPolBrain``: run a test-time adapter over a dataset, write enhanced audio and metrics.

A ``speechbrain.Brain`` whose evaluation loop enhances each batch with the adapter (which
adapts as it goes), writes the enhanced 16-bit wavs atomically, scores them against clean
references when the manifest has them (wide-band PESQ, STOI, ESTOI, SI-SDR, optionally
CSIG/CBAK/COVL), optionally scores the unadapted source model and the unprocessed input on the
same files and measures an objective after adaptation, and writes ``results.csv`` (one row per
utterance), ``summary.json`` and plots. It is the one evaluation loop of the project: the main
job (:mod:`speechbrain_mpol.pipeline`) and the benchmark (:mod:`speechbrain_mpol.benchmark`)
both run it.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import speechbrain as sb
import torch

from speechbrain_mpol.atomic import atomic_path
from speechbrain_mpol.audio import AudioError, read_audio, write_audio
from speechbrain_mpol.manifest import write_rows
from speechbrain_mpol.metrics import evaluate_pair, paired_bootstrap_ci

logger = logging.getLogger(__name__)

#: Metrics written per utterance (keys of ``evaluate_pair``).
METRICS = ("pesq", "stoi", "estoi", "si_sdr")


def audio_pipeline(sample_rate: int, max_seconds: float | None = None):
    """SpeechBrain dynamic item that reads ``noisy_wav`` (and ``clean_wav`` when present)."""

    @sb.utils.data_pipeline.takes("noisy_wav", "clean_wav")
    @sb.utils.data_pipeline.provides("noisy_sig", "clean_sig")
    def pipeline(noisy_wav, clean_wav):
        noisy = read_audio(noisy_wav, sample_rate, max_seconds=max_seconds)
        yield noisy
        if clean_wav:
            clean = read_audio(clean_wav, sample_rate, allow_silent=True)
            yield clean[: noisy.shape[0]]
        else:
            yield torch.zeros(0)

    return pipeline


def check_output_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` and prove it is writable, or raise ``OSError`` naming it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OSError(f"{folder}: output folder is not writable ({err})") from None
    return folder


def validate_manifest(
    manifest: str | os.PathLike,
    sample_rate: int,
    max_seconds: float | None = None,
    output_dir: str | os.PathLike | None = None,
) -> tuple[list[str], list[dict]]:
    """Check every file of a manifest; return the usable IDs and the skipped ones with reasons.

    Arguments
    ---------
    manifest : str or PathLike
        SpeechBrain CSV with ``ID``, ``noisy_wav`` and optionally ``clean_wav``.
    sample_rate : int
        The model's rate (other rates are accepted and resampled).
    max_seconds : float, optional
        Longest file accepted.
    output_dir : str or PathLike, optional
        Folder of the enhanced files: an input that would be overwritten is refused.

    Returns
    -------
    ok : list of str
        IDs that can be enhanced.
    skipped : list of dict
        ``{"ID", "file", "problem"}`` for every refused utterance.
    """
    ok, skipped = [], []
    with open(manifest, newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                if output_dir is not None:
                    target = (Path(output_dir) / f"{row['ID']}.wav").resolve()
                    if Path(row["noisy_wav"]).resolve() == target:
                        raise AudioError(row["noisy_wav"], "its output path is the input "
                                         "itself; refusing to overwrite an input")
                read_audio(row["noisy_wav"], sample_rate, max_seconds=max_seconds)
                if row.get("clean_wav"):
                    read_audio(row["clean_wav"], sample_rate, allow_silent=True)
            except AudioError as err:
                logger.error("skipping %s: %s", row["ID"], err)
                skipped.append({"ID": row["ID"], "file": err.path, "problem": err.problem})
                continue
            ok.append(row["ID"])
    return ok, skipped


class MPolBrain(sb.Brain):
    """Enhance-and-adapt loop over a dataset.

    Expected ``modules``: ``adapter`` (an :class:`~speechbrain_mpol.adapter.Adapter`).
    Expected ``hparams``: ``output_folder``, ``sample_rate``; optional ``compare_to_source``
    (also score the unadapted model), ``score_noisy`` (also score the input), ``write_audio``,
    ``composite`` (also CSIG/CBAK/COVL), ``report_objective`` (an objective measured with the
    adapted weights after each batch, as ``objective_after_<part>``), ``report`` (print the
    summary table), ``skipped`` (list from :func:`validate_manifest`, reported in the summary).
    Which model ran, and why when it is not the requested one, comes from the enhancer's
    ``load_report`` into the summary and the table.

    Use ``brain.evaluate(dataset, test_loader_kwargs={"batch_size": 1})``.
    """

    def on_evaluate_start(self, max_key=None, min_key=None):
        """Prepare the output folders; resume from ``progress.pt`` if a run was interrupted."""
        self.out_dir = Path(self.hparams.output_folder)
        self.wav_dir = self.out_dir / "enhanced"
        self.wav_dir.mkdir(parents=True, exist_ok=True)
        self.progress_file = self.out_dir / "progress.pt"
        self.rows: list[dict] = []
        self.audio_seconds = 0.0
        self.elapsed = 0.0
        if getattr(self.hparams, "resume", True) and self.progress_file.is_file():
            progress = torch.load(self.progress_file, weights_only=True)
            self.rows = progress["rows"]
            self.audio_seconds = progress["audio_seconds"]
            self.elapsed = progress["elapsed"]
            self.modules.adapter.load_adapted_state(progress["adapter"])
            logger.info("resuming after %d finished utterances", len(self.rows))
        self.done = {row["ID"] for row in self.rows}
        self.start_time = time.time()

    def evaluate_batch(self, batch, stage):
        """Enhance and adapt (gradients are turned on inside the adapter), then score.

        Batches whose utterances all finished in an interrupted run are skipped.
        """
        if all(uid in self.done for uid in batch.id):
            return torch.tensor(0.0)
        out = self.compute_forward(batch, stage)
        loss = self.compute_objectives(out, batch, stage)
        self.save_progress()
        return loss

    def save_progress(self) -> None:
        """Atomically record finished rows and the adapter's stream state."""
        progress = {
            "rows": self.rows,
            "audio_seconds": self.audio_seconds,
            "elapsed": self.elapsed + time.time() - self.start_time,
            "adapter": self.modules.adapter.adapted_state(),
        }
        with atomic_path(self.progress_file) as tmp:
            torch.save(progress, tmp)

    def compute_forward(self, batch, stage):
        """Enhance the batch with the adapter (adapting on it); optionally with the source."""
        batch = batch.to(self.device)
        wavs, lens = batch.noisy_sig
        enhanced = self.modules.adapter(wavs, lens)
        source = None
        if getattr(self.hparams, "compare_to_source", False):
            source = self.modules.adapter.predict_source(wavs, lens)
        return enhanced, source

    def compute_objectives(self, predictions, batch, stage):
        """Write the enhanced audio and score it; returns the mean adaptation objective."""
        enhanced, source = predictions
        wavs, lens = batch.noisy_sig
        clean, _ = batch.clean_sig
        rate = self.hparams.sample_rate
        parts = getattr(self.modules.adapter, "last_parts", {})
        after = {}
        if getattr(self.hparams, "report_objective", None) is not None:
            after = self.modules.adapter.measure(wavs, lens, self.hparams.report_objective)
        composite = getattr(self.hparams, "composite", False)
        total = wavs.shape[1]
        for i, uid in enumerate(batch.id):
            n = int(round(float(lens[i]) * total))
            self.audio_seconds += n / rate
            out = enhanced[i, :n].detach().cpu()
            row = {"ID": uid, "duration": round(n / rate, 3)}
            for key, value in parts.items():
                if value.numel() == enhanced.shape[0]:
                    row[f"objective_{key}"] = float(value[i])
            for key, value in after.items():
                row[f"objective_after_{key}"] = float(value[i])
            if getattr(self.hparams, "write_audio", True):
                target = self.wav_dir / f"{uid}.wav"
                if Path(batch.noisy_wav[i]).resolve() == target.resolve():
                    raise AudioError(target, "output path equals the input path; refusing")
                write_audio(target, out, rate)
            if clean.shape[1] > 0:
                ref = clean[i, :n].detach().cpu().numpy()
                row.update(evaluate_pair(ref, out.numpy(), rate, composite_measures=composite))
                if source is not None:
                    scores = evaluate_pair(ref, source[i, :n].cpu().numpy(), rate, False)
                    row.update({f"source_{k}": scores[k] for k in METRICS})
                if getattr(self.hparams, "score_noisy", True):
                    scores = evaluate_pair(ref, wavs[i, :n].cpu().numpy(), rate, False)
                    row.update({f"noisy_{k}": scores[k] for k in METRICS})
            self.rows.append(row)
        w1 = parts.get("w1")
        return w1.mean().cpu() if w1 is not None else torch.tensor(0.0)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Write ``results.csv``, ``summary.json`` and the plots; log the summary."""
        if stage != sb.Stage.TEST:
            return
        summary = self.summarize()
        write_rows(self.out_dir / "results.csv", self.rows)
        with atomic_path(self.out_dir / "summary.json") as tmp:
            Path(tmp).write_text(json.dumps(summary, indent=2))
        self.summary = summary
        self.progress_file.unlink(missing_ok=True)  # complete: a rerun starts afresh
        logger.info("summary: %s", json.dumps(summary))
        if getattr(self.hparams, "report", True):
            print(format_summary(summary))
        if getattr(self.hparams, "plots", True) and self.rows:
            from speechbrain_mpol.plots import plot_results

            plot_results(self.rows, self.out_dir)

    def summarize(self) -> dict:
        """Means per system, paired differences against the source, run statistics."""
        adapter = self.modules.adapter
        wall = self.elapsed + time.time() - self.start_time
        summary: dict = {
            "utterances": len(self.rows),
            "audio_seconds": round(self.audio_seconds, 2),
            "wall_seconds": round(wall, 2),
            "real_time_factor": round(wall / max(self.audio_seconds, 1e-9), 4),
            "adaptation": dict(adapter.counts),
            "skipped": list(getattr(self.hparams, "skipped", [])),
            "model_source": getattr(adapter.enhancer, "model_source", None),
        }
        report = getattr(adapter.enhancer, "load_report", None)
        if report is not None:
            summary["model"] = report.as_dict()
        for system in ("noisy", "source", "adapted"):
            prefix = "" if system == "adapted" else f"{system}_"
            means = {}
            for metric in METRICS:
                values = [r.get(prefix + metric, math.nan) for r in self.rows]
                if values and not all(math.isnan(v) for v in values):
                    means[metric] = round(float(np.nanmean(values)), 4)
            if means:
                summary[system] = means
        if "source" in summary and "adapted" in summary:
            delta = {}
            for metric in METRICS:
                a = np.array([r.get(metric, math.nan) for r in self.rows], dtype=float)
                b = np.array([r.get(f"source_{metric}", math.nan) for r in self.rows], dtype=float)
                low, high = paired_bootstrap_ci(a, b)
                delta[metric] = {
                    "mean": round(float(np.nanmean(a - b)), 4),
                    "ci95": [round(float(low), 4), round(float(high), 4)],
                    "share_improved": round(float(np.nanmean((a - b) > 0)), 3),
                }
            summary["adapted_minus_source"] = delta
        return summary


def format_summary(summary: dict) -> str:
    """A short plain-text table of the summary."""
    headline = summary.get("model", {}).get("headline", f"model: {summary.get('model_source')}")
    lines = [
        headline,
        f"{summary['utterances']} utterances, {summary['audio_seconds']} s of audio, "
        f"RTF {summary['real_time_factor']}",
        f"{'system':<10}" + "".join(f"{m:>10}" for m in METRICS),
    ]
    for system in ("noisy", "source", "adapted"):
        if system in summary:
            lines.append(
                f"{system:<10}"
                + "".join(f"{summary[system].get(m, math.nan):>10.3f}" for m in METRICS)
            )
    if "adapted_minus_source" in summary:
        d = summary["adapted_minus_source"]
        lines.append(f"{'delta':<10}" + "".join(f"{d[m]['mean']:>+10.3f}" for m in METRICS))
    if summary["skipped"]:
        lines.append(f"skipped {len(summary['skipped'])} file(s):")
        lines.extend(f"  {s['file']}: {s['problem']}" for s in summary["skipped"])
    if summary.get("model", {}).get("fallback"):
        lines.append(headline)  # said again last: these are not the requested model's results
    return "\n".join(lines)
