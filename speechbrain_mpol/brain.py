"""``MPolBrain``: run a test-time adapter over a dataset, write enhanced audio and metrics.

A ``speechbrain.Brain`` whose evaluation loop enhances each batch with the adapter (which
adapts as it goes), writes the enhanced files atomically (32-bit float WAV by default:
``output_subtype``), scores the samples as written against clean references when the manifest
has them (wide-band PESQ in a worker process, STOI, ESTOI, SI-SDR, optionally CSIG/CBAK/COVL),
optionally scores the unadapted source model and the unprocessed input on the same files and
measures an objective after adaptation, and writes ``results.csv`` (one row per utterance),
``summary.json`` (strict JSON) and plots. It is the one evaluation loop of the project: the
main job (:mod:`speechbrain_mpol.pipeline`) and the benchmark
(:mod:`speechbrain_mpol.benchmark`) both run it.

One file cannot take a run down: an utterance whose enhancement or scoring fails is reported
(a ``problem`` in its row of ``results.csv``, and under ``failed`` in ``summary.json``) and
the stream continues as if it had not been there (the adapter's state is restored). A run
opened with :meth:`MPolBrain.open_progress` saves its progress after every batch through a
:class:`~speechbrain_mpol.progress.ProgressCheckpointer` keyed to the manifest and the
settings; a batch that stopped the process (killed, or a crash in native code) twice is
failed, not retried, on the third start.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import speechbrain as sb
import torch

from speechbrain_mpol.atomic import remove_stale_temporaries, write_json
from speechbrain_mpol.audio import AudioError, read_audio, write_audio
from speechbrain_mpol.manifest import check_manifest, output_path, write_rows
from speechbrain_mpol.metrics import paired_bootstrap_ci, score_pair
from speechbrain_mpol.progress import AdaptedState, ProgressCheckpointer, RunProgress

logger = logging.getLogger(__name__)

#: Metrics written per utterance (keys of ``score_pair``).
METRICS = ("pesq", "stoi", "estoi", "si_sdr")
#: Starts of a batch after which it is failed instead of tried again: the first two starts
#: stopped the process (a kill, or a crash in native code), the third does not try.
MAX_STARTS = 3
#: Hyperparameters of the Brain that change what a row holds (part of a run's resume key).
OUTPUT_OPTIONS = ("sample_rate", "compare_to_source", "score_noisy", "composite",
                  "write_audio", "output_subtype", "report_objective")


def audio_pipeline(sample_rate: int, max_seconds: float | None = None):
    """SpeechBrain dynamic item that reads ``noisy_wav`` (and ``clean_wav`` when present).

    A clean reference longer than its noisy file is cut to it; a shorter one is kept as it
    is (its row is reported as not scored, see :meth:`MPolBrain.score`).
    """

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
        # A probe of its own per process: torchrun ranks check the same folder at once.
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise OSError(f"{folder}: output folder is not writable ({err})") from None
    return folder


def validate_manifest(
    manifest: str | os.PathLike,
    sample_rate: int,
    max_seconds: float | None = None,
    output_dir: str | os.PathLike | None = None,
) -> tuple[list[dict], list[dict]]:
    """Check a manifest (:func:`~speechbrain_mpol.manifest.check_manifest`), then every file.

    Arguments
    ---------
    manifest : str or PathLike
        SpeechBrain CSV with ``ID``, ``noisy_wav`` and optionally ``clean_wav``.
    sample_rate : int
        The model's rate (other rates are accepted and resampled).
    max_seconds : float, optional
        Longest file accepted.
    output_dir : str or PathLike, optional
        Folder of the enhanced files: a row whose output would overwrite an input is refused.

    Returns
    -------
    usable : list of dict
        The manifest rows that can be enhanced, in manifest order.
    skipped : list of dict
        ``{"ID", "file", "problem"}`` for every refused utterance.

    Raises
    ------
    ManifestError
        One line naming the row, for a problem with the manifest itself (IDs that escape the
        output folder or collide, missing columns, ...): nothing is read then.
    """
    usable, skipped = [], []
    for row in check_manifest(manifest, output_dir):
        try:
            read_audio(row["noisy_wav"], sample_rate, max_seconds=max_seconds)
            if row.get("clean_wav"):
                read_audio(row["clean_wav"], sample_rate, allow_silent=True)
        except AudioError as err:
            logger.error("skipping %s: %s", row["ID"], err)
            skipped.append({"ID": row["ID"], "file": err.path, "problem": err.problem})
            continue
        usable.append(row)
    return usable, skipped


def _input_files(manifest: str | os.PathLike) -> set[Path]:
    """Every file a manifest reads, resolved."""
    with open(manifest, newline="", encoding="utf-8") as handle:
        return {Path(row[key]).resolve() for row in csv.DictReader(handle, skipinitialspace=True)
                for key in ("noisy_wav", "clean_wav") if row.get(key)}


class MPolBrain(sb.Brain):
    """Enhance-and-adapt loop over a dataset.

    Expected ``modules``: ``adapter`` (an :class:`~speechbrain_mpol.adapter.Adapter`).
    Expected ``hparams``: ``output_folder``, ``sample_rate``; optional ``compare_to_source``
    (also score the unadapted model), ``score_noisy`` (also score the input), ``write_audio``,
    ``output_subtype`` (of the written files, default ``FLOAT``), ``composite`` (also
    CSIG/CBAK/COVL), ``report_objective`` (an objective measured with the adapted weights
    after each batch, as ``objective_after_<part>``), ``report`` (print the summary table),
    ``plots``, ``skipped`` (list from :func:`validate_manifest`, reported in the summary).
    Which model ran, and why when it is not the requested one, comes from the enhancer's
    ``load_report`` into the summary and the table.

    Use ``brain.open_progress(key)`` first to save and resume progress (the main job), then
    ``brain.evaluate(dataset, test_loader_kwargs={"batch_size": 1})``. Without it the run
    keeps its progress in memory only (the benchmark).
    """

    progress: RunProgress | None = None
    keeper: ProgressCheckpointer | None = None

    @property
    def rows(self) -> list[dict]:
        """One result row per utterance consumed so far, in stream order."""
        return self.progress.rows

    def _folders(self) -> None:
        self.out_dir = Path(self.hparams.output_folder)
        self.wav_dir = self.out_dir / "enhanced"

    def open_progress(self, key: dict, overwrite: bool = False,
                      manifest: str | os.PathLike | None = None) -> None:
        """Resume this run's progress from ``<output_folder>/checkpoints``, or start afresh.

        Arguments
        ---------
        key : dict
            The run's :func:`~speechbrain_mpol.progress.run_key` (manifest and settings).
        overwrite : bool
            Forget whatever the output folder holds (progress, results and enhanced files of
            any run) and start over.
        manifest : str or PathLike, optional
            The run's manifest: with ``overwrite``, none of its files is deleted.

        Raises
        ------
        StaleProgressError
            The folder holds progress or results of another run (nothing is changed then).
        """
        self._folders()
        self.progress = RunProgress()
        self.keeper = ProgressCheckpointer(
            self.out_dir / "checkpoints",
            {"progress": self.progress, "adapter": AdaptedState(self.modules.adapter)}, key)
        if overwrite:
            self._forget_outputs(_input_files(manifest) if manifest else set())
        if self.keeper.resume(overwrite=overwrite) is not None:
            logger.info("resuming after %d finished utterances", self.progress.position)

    def _forget_outputs(self, inputs: set[Path]) -> None:
        """Delete the results and enhanced files of whatever run wrote this folder."""
        for name in ("results.csv", "summary.json"):
            (self.out_dir / name).unlink(missing_ok=True)
        if self.wav_dir.is_dir():
            for path in self.wav_dir.glob("*.wav"):
                if path.resolve() not in inputs:
                    path.unlink()

    def on_evaluate_start(self, max_key=None, min_key=None):
        """Prepare the output folders; progress in memory unless :meth:`open_progress` ran."""
        self._folders()
        if self.progress is None:
            self.progress = RunProgress()
        if getattr(self.hparams, "write_audio", True):
            self.wav_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.wav_dir)
        if self.keeper is not None:
            remove_stale_temporaries(self.out_dir)
            remove_stale_temporaries(self.keeper.checkpoints_dir)
        self.done = self.progress.finished_ids
        self.elapsed_before = self.progress.elapsed
        self.start_time = time.time()

    def evaluate_batch(self, batch, stage):
        """Enhance and adapt (gradients are turned on inside the adapter), then score.

        Batches whose utterances all finished before (an interrupted run) are skipped. A
        batch that stopped the process on two earlier starts is failed instead.
        """
        if all(uid in self.done for uid in batch.id):
            return torch.tensor(0.0)
        starts = self.keeper.begin(batch.id) if self.keeper is not None else 1
        try:
            if starts >= MAX_STARTS:
                problem = (f"stopped the run {starts - 1} times (killed, or crashed in native "
                           "code); not tried again")
                loss = self._fail_batch(batch, problem)
            else:
                if starts > 1:
                    logger.warning("%s stopped the previous run (killed, or crashed in native "
                                   "code); trying once more", ", ".join(batch.id))
                loss = self._process(batch, stage)
        except BaseException:  # a Python-level stop (disk full, Ctrl-C): not the file's fault
            if self.keeper is not None:
                self.keeper.end_batch()
            raise
        self.save_progress()
        return loss

    def _process(self, batch, stage):
        """Enhance, write and score one batch; a failure of enhancement fails its files."""
        adapter = self.modules.adapter
        before = adapter.adapted_state()
        try:
            out = self.compute_forward(batch, stage)
        except Exception as err:  # e.g. a model that cannot take a 1-sample input
            adapter.load_adapted_state(before)  # the stream goes on as without this batch
            adapter.hook.clear()
            return self._fail_batch(batch, f"enhancement failed ({type(err).__name__}: "
                                           f"{err})".replace("\n", " "))
        return self.compute_objectives(out, batch, stage)

    def _fail_batch(self, batch, problem: str) -> torch.Tensor:
        """Report every utterance of ``batch`` as not enhanced."""
        wavs, lens = batch.noisy_sig
        for i, (uid, wav) in enumerate(zip(batch.id, batch.noisy_wav, strict=True)):
            seconds = float(lens[i]) * wavs.shape[1] / self.hparams.sample_rate
            self._fail({"ID": uid, "duration": round(seconds, 3)}, wav, problem, "enhancement")
        return torch.tensor(0.0)

    def _fail(self, row: dict, wav: str, problem: str, stage: str) -> None:
        """Record ``row`` with its problem, in ``results.csv`` and the summary's ``failed``."""
        logger.error("%s (%s): %s", row["ID"], wav, problem)
        row["problem"] = problem
        self.progress.add(row)
        self.progress.fail(row["ID"], wav, problem, stage)

    def save_progress(self) -> None:
        """Save the finished rows and the adapter's stream state (if progress is kept)."""
        self.progress.elapsed = self.elapsed_before + time.time() - self.start_time
        if self.keeper is not None:
            self.keeper.save()

    def compute_forward(self, batch, stage):
        """Enhance the batch with the adapter (adapting on it); optionally with the source.

        Returns the enhanced batch, the source model's (or None) and the adapter's objective
        parts measured after the batch (empty unless ``report_objective``).
        """
        batch = batch.to(self.device)
        wavs, lens = batch.noisy_sig
        enhanced = self.modules.adapter(wavs, lens)
        source = None
        if getattr(self.hparams, "compare_to_source", False):
            source = self.modules.adapter.predict_source(wavs, lens)
        after = {}
        if getattr(self.hparams, "report_objective", None) is not None:
            after = self.modules.adapter.measure(wavs, lens, self.hparams.report_objective)
        return enhanced, source, after

    def compute_objectives(self, predictions, batch, stage):
        """Write the enhanced audio and score what was written; returns the mean objective."""
        enhanced, source, after = predictions
        wavs, lens = batch.noisy_sig
        clean, clean_lens = batch.clean_sig
        rate = self.hparams.sample_rate
        parts = getattr(self.modules.adapter, "last_parts", {})
        total = wavs.shape[1]
        for i, (uid, wav) in enumerate(zip(batch.id, batch.noisy_wav, strict=True)):
            n = int(round(float(lens[i]) * total))
            row = {"ID": uid, "duration": round(n / rate, 3)}
            for key, value in parts.items():
                if value.numel() == enhanced.shape[0]:
                    row[f"objective_{key}"] = float(value[i])
            for key, value in after.items():
                row[f"objective_after_{key}"] = float(value[i])
            out = enhanced[i, :n].detach().cpu()
            try:
                if getattr(self.hparams, "write_audio", True):
                    # What is scored is what was written (e.g. after 16-bit quantization).
                    out = write_audio(output_path(self.wav_dir, uid), out, rate,
                                      subtype=getattr(self.hparams, "output_subtype", "FLOAT"))
                else:
                    out = out.numpy()
            except AudioError as err:  # non-finite output: nothing is delivered
                self._fail(row, wav, f"not written ({err.problem})", "enhancement")
                continue
            self.progress.audio_seconds += n / rate
            problem = None
            if clean.shape[1] > 0:
                m = int(round(float(clean_lens[i]) * clean.shape[1]))
                problem = self.score(row, clean[i, :m].detach().cpu().numpy(), out,
                                     wavs[i, :n], source, i)
            if problem:
                self._fail(row, wav, problem, "scoring")
            else:
                row["problem"] = ""
                self.progress.add(row)
        w1 = parts.get("w1")
        return w1.mean().cpu() if w1 is not None else torch.tensor(0.0)

    def score(self, row: dict, ref: np.ndarray, out: np.ndarray, noisy: torch.Tensor,
              source: torch.Tensor | None, i: int) -> str | None:
        """Score the delivered output (and the source model's, the input) into ``row``.

        Returns why a metric of the delivered output is missing, or None.
        """
        rate = self.hparams.sample_rate
        n = len(out)
        if len(ref) < n:
            row.update(dict.fromkeys(METRICS, math.nan))
            return (f"not scored: the clean reference is shorter than the noisy file "
                    f"({len(ref)} < {n} samples)")
        composite = getattr(self.hparams, "composite", False)
        scores, reasons = score_pair(ref, out, rate, composite_measures=composite)
        row.update(scores)
        if source is not None:
            scores, _ = score_pair(ref, source[i, :n].cpu().numpy(), rate, False)
            row.update({f"source_{k}": scores[k] for k in METRICS})
        if getattr(self.hparams, "score_noisy", True):
            scores, _ = score_pair(ref, noisy.cpu().numpy(), rate, False)
            row.update({f"noisy_{k}": scores[k] for k in METRICS})
        if not reasons:
            return None
        return "not scored: " + "; ".join(f"{k}: {v}" for k, v in reasons.items())

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Write ``results.csv``, ``summary.json`` and the plots; log the summary."""
        if stage != sb.Stage.TEST:
            return
        summary = self.summarize()
        write_rows(self.out_dir / "results.csv", self.rows, result_fields(self.rows))
        write_json(self.out_dir / "summary.json", summary)
        self.summary = summary
        if self.keeper is not None:
            self.keeper.finish()  # complete: a rerun of this run starts afresh
        logger.info("summary: %s", summary)
        if getattr(self.hparams, "report", True):
            print(format_summary(summary))
        if getattr(self.hparams, "plots", True) and self.rows:
            from speechbrain_mpol.plots import plot_results

            plot_results(self.rows, self.out_dir)

    def summarize(self) -> dict:
        """Means per system, paired differences against the source, run statistics."""
        adapter = self.modules.adapter
        wall = self.elapsed_before + time.time() - self.start_time
        seconds = self.progress.audio_seconds
        failed = self.progress.failed
        not_enhanced = sum(item.get("stage") == "enhancement" for item in failed)
        summary: dict = {
            "utterances": len(self.rows) - not_enhanced,
            "audio_seconds": round(seconds, 2),
            "wall_seconds": round(wall, 2),
            "real_time_factor": round(wall / seconds, 4) if seconds > 0 else None,
            "adaptation": dict(adapter.counts),
            "skipped": list(getattr(self.hparams, "skipped", [])),
            "failed": list(failed),
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
                kept = ~(np.isnan(a) | np.isnan(b))
                delta[metric] = {
                    "mean": round(float(np.mean(a[kept] - b[kept])), 4) if kept.any() else None,
                    "ci95": [round(float(low), 4), round(float(high), 4)],
                    "share_improved": round(float(np.mean((a - b)[kept] > 0)), 3)
                    if kept.any() else None,
                }
            summary["adapted_minus_source"] = delta
        return summary


def result_fields(rows: list[dict]) -> list[str]:
    """Columns of ``results.csv``: every key in first-seen order, ``problem`` last."""
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields and k != "problem")
    return fields + ["problem"]


def format_summary(summary: dict) -> str:
    """A short plain-text table of the summary (undefined values as ``nan``)."""

    def number(value) -> float:
        return math.nan if value is None else value

    headline = summary.get("model", {}).get("headline", f"model: {summary.get('model_source')}")
    rtf = summary["real_time_factor"]
    lines = [
        headline,
        f"{summary['utterances']} utterances, {summary['audio_seconds']} s of audio, "
        f"RTF {'n/a' if rtf is None else rtf}",
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
        lines.append(f"{'delta':<10}"
                     + "".join(f"{number(d[m]['mean']):>+10.3f}" for m in METRICS))
    if summary["skipped"]:
        lines.append(f"skipped {len(summary['skipped'])} file(s):")
        lines.extend(f"  {s['file']}: {s['problem']}" for s in summary["skipped"])
    if summary.get("failed"):
        lines.append(f"failed {len(summary['failed'])} file(s) (see results.csv, 'problem'):")
        lines.extend(f"  {f['file']}: {f['problem']}" for f in summary["failed"])
    if summary.get("model", {}).get("fallback"):
        lines.append(headline)  # said again last: these are not the requested model's results
    return "\n".join(lines)
