"""The domain-shift benchmark: every model x method over one shuffled stream of shifted sets.

For each model preset and each method preset, the utterances of all shifted sets of a split
(built beforehand by the data-preparation recipe, one manifest per shift) are streamed through
the method as one seeded, shuffled stream starting from the source weights (continual
adaptation needs more than one small set), with the same evaluation loop as the main job
(:class:`~speechbrain_mpol.brain.MPolBrain`), and scored (PESQ-WB, STOI, ESTOI, SI-SDR,
CSIG/CBAK/COVL). :func:`run_benchmark` writes to ``output_folder``:

- ``benchmark.csv``: one row per model x shift x method x utterance, with the reporting
  objective (W1 to the authors' reference) under the source weights and after adaptation;
- ``summary.csv`` / ``summary.md``: means, difference to Source with 95% paired-bootstrap
  intervals;
- ``diagnostics.csv``: per model x shift, the source mask against the oracle
  (:mod:`speechbrain_mpol.diagnostics`);
- ``cost.csv``: forward and backward passes and wall time per second of audio, per method;
- ``fig_<model>_delta.png`` and ``fig_<model>_<shift>_hist.png``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import torch

from speechbrain_mpol.atomic import atomic_path, atomic_write_text
from speechbrain_mpol.audio import read_audio
from speechbrain_mpol.brain import MPolBrain
from speechbrain_mpol.diagnostics import mask_statistics, mask_values
from speechbrain_mpol.gate import source_scores
from speechbrain_mpol.loading import source_digest
from speechbrain_mpol.manifest import write_rows
from speechbrain_mpol.metrics import evaluate_pair, paired_bootstrap_ci
from speechbrain_mpol.pipeline import build_dataset
from speechbrain_mpol.presets import load_enhancer, load_method, load_model_preset, model_hook

logger = logging.getLogger(__name__)

METRICS = ("pesq", "stoi", "estoi", "si_sdr", "csig", "cbak", "covl")
#: A run's adapted masks of the first utterance per set (``histogram_methods``), in its folder.
ADAPTED_MASKS = "adapted_masks.npz"


def shift_manifests(folder: str | os.PathLike, split: str, shifts: list[str]) -> dict[str, Path]:
    """The manifest of every shift of ``split``: ``<folder>/<split>/<shift>/<split>_<shift>.csv``.

    Raises ``FileNotFoundError`` naming the first missing one (run the preparation recipe).
    """
    manifests = {}
    for shift in shifts:
        path = Path(folder) / split / shift / f"{split}_{shift}.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: shifted set not found; build it with the data "
                                    "preparation recipe first (see README, Benchmark)")
        manifests[shift] = path
    return manifests


def read_shifts(manifests: dict[str, Path], limit: int | None = None) -> dict[str, list[dict]]:
    """The rows of every shift (the first ``limit`` of each), IDs as ``<manifest stem>/<ID>``."""
    shifts = {}
    for shift, manifest in manifests.items():
        with open(manifest, newline="") as handle:
            rows = list(csv.DictReader(handle))[:limit or None]
        shifts[shift] = [{"ID": f"{manifest.stem}/{row['ID']}", "duration": row["duration"],
                          "noisy_wav": row["noisy_wav"], "clean_wav": row["clean_wav"],
                          "shift": shift} for row in rows]
    return shifts


def write_stream(shifts: dict[str, list[dict]], path: str | os.PathLike, seed: int = 0) -> list:
    """All shifted sets as one shuffled stream (what a deployed enhancer meets), as a manifest.

    Continual adaptation needs a stream longer than one small set (the authors accumulate
    gradients over 8 utterances); each row keeps its ``shift`` so results are read per shift.

    Arguments
    ---------
    shifts : dict of str to list of dict
        Shift -> its rows (:func:`read_shifts`), in report order.
    path : str or PathLike
        The stream manifest to write.
    seed : int
        Seed of the shuffle.

    Returns
    -------
    list of dict
        The stream's rows, in stream order.
    """
    rows = [row for items in shifts.values() for row in items]
    order = np.random.default_rng(seed).permutation(len(rows))
    stream = [rows[i] for i in order]
    write_rows(path, stream)
    return stream


def run_method(adapter, stream: str | os.PathLike, out_dir: str | os.PathLike, hparams: dict):
    """Stream the manifest through ``adapter`` with :class:`MPolBrain`; rows and cost.

    ``hparams`` gives ``sample_rate``, ``composite`` and ``report_objective``.
    """
    with open(stream, newline="") as handle:
        ids = [row["ID"] for row in csv.DictReader(handle)]
    brain_hparams = {
        "output_folder": str(out_dir), "sample_rate": hparams["sample_rate"],
        "compare_to_source": False, "score_noisy": False, "write_audio": False, "plots": False,
        "resume": False, "report": False, "composite": hparams.get("composite", True),
        "report_objective": hparams.get("report_objective"),
    }
    brain = MPolBrain(modules={"adapter": adapter}, hparams=brain_hparams,
                      run_opts={"device": "cpu"})
    brain.evaluate(build_dataset(stream, ids, hparams["sample_rate"]),
                   test_loader_kwargs={"batch_size": 1}, progressbar=False)
    summary = brain.summary
    counts = adapter.counts
    seconds = summary["audio_seconds"]
    cost = {
        "audio_seconds": seconds,
        "wall_per_audio_second": summary["wall_seconds"] / seconds,
        "forward_per_audio_second": counts["forward"] / seconds,
        "backward_per_audio_second": counts["backward"] / seconds,
        "updates": counts["updates"],
        "rollbacks": counts["rollbacks"],
        "skipped_nonfinite": counts["skipped_nonfinite"],
    }
    return brain.rows, cost


def summarize(rows: list[dict]) -> list[dict]:
    """Means per model x shift x method with differences to Source and bootstrap intervals."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["shift"], row["method"]), []).append(row)
    table = []
    for (model, shift, method), group in groups.items():
        source = {r["ID"]: r for r in groups.get((model, shift, "source"), [])}
        entry = {"model": model, "shift": shift, "method": method, "n": len(group)}
        for metric in (*METRICS, "w1_after", "w1_source"):
            values = np.array([r.get(metric, math.nan) for r in group], dtype=float)
            if np.all(np.isnan(values)):
                continue
            entry[metric] = float(np.nanmean(values))
            if method != "source" and source and metric in METRICS:
                base = np.array(
                    [source[r["ID"]].get(metric, math.nan) for r in group], dtype=float
                )
                low, high = paired_bootstrap_ci(values, base)
                entry[f"d_{metric}"] = float(np.nanmean(values - base))
                entry[f"d_{metric}_lo"], entry[f"d_{metric}_hi"] = float(low), float(high)
        table.append(entry)
    return table


def markdown(table: list[dict], noisy: dict) -> str:
    """The summary as a markdown table (PESQ, STOI, SI-SDR, composite; deltas with 95% CI)."""

    def fmt(entry, metric, digits=3):
        if metric not in entry:
            return "n/a"
        text = f"{entry[metric]:.{digits}f}"
        if f"d_{metric}" in entry:
            text += (
                f" ({entry[f'd_{metric}']:+.{digits}f} "
                f"[{entry[f'd_{metric}_lo']:+.{digits}f}, {entry[f'd_{metric}_hi']:+.{digits}f}])"
            )
        return text

    lines = [
        "| model | shift | method | n | PESQ (delta [95% CI]) | STOI | SI-SDR | CSIG | CBAK "
        "| COVL | W1 after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in table:
        key = (entry["model"], entry["shift"])
        if key in noisy and entry["method"] == "source":
            n = noisy[key]
            lines.append(
                f"| {entry['model']} | {entry['shift']} | (noisy input) | {entry['n']} | "
                f"{n['pesq']:.3f} | {n['stoi']:.3f} | {n['si_sdr']:.2f} | | | | |"
            )
        lines.append(
            f"| {entry['model']} | {entry['shift']} | {entry['method']} | {entry['n']} | "
            f"{fmt(entry, 'pesq')} | {fmt(entry, 'stoi')} | {fmt(entry, 'si_sdr', 2)} | "
            f"{fmt(entry, 'csig', 2)} | {fmt(entry, 'cbak', 2)} | {fmt(entry, 'covl', 2)} | "
            f"{entry.get('w1_after', math.nan):.4f} |"
        )
    return "\n".join(lines) + "\n"


def headline(table: list[dict], model: str, unshifted: tuple[str, ...] = (),
             metric: str = "pesq") -> str:
    """Markdown: one model's Source per set, and each method's difference to Source, with its
    mean over the shifted sets (every set not in ``unshifted``) and how many of them improved.

    Example
    -------
    >>> t = [{"model": "m", "shift": "noise", "method": "source", "pesq": 1.5},
    ...      {"model": "m", "shift": "noise", "method": "mpol", "pesq": 1.6, "d_pesq": 0.1}]
    >>> print(headline(t, "m"))
    | m | noise | mean of 1 shifted |
    |---|---|---|
    | Source | 1.500 | |
    | mpol | +0.100 | +0.100 (1/1) |
    <BLANKLINE>
    """
    rows = [e for e in table if e["model"] == model]
    shifts = list(dict.fromkeys(e["shift"] for e in rows))
    shifted = [s for s in shifts if s not in unshifted]
    cell = {(e["method"], e["shift"]): e for e in rows}
    lines = [f"| {model} | " + " | ".join(shifts) + f" | mean of {len(shifted)} shifted |",
             "|---|" + "---|" * (len(shifts) + 1),
             "| Source | " + " | ".join(f"{cell[('source', s)][metric]:.3f}"
                                       if ("source", s) in cell else "" for s in shifts) + " | |"]
    for method in dict.fromkeys(e["method"] for e in rows if e["method"] != "source"):
        deltas = {s: cell[(method, s)].get(f"d_{metric}", math.nan) for s in shifts
                  if (method, s) in cell}
        gains = [deltas[s] for s in shifted if s in deltas]
        mean = f"{np.mean(gains):+.3f} ({sum(g > 0 for g in gains)}/{len(gains)})"
        lines.append(f"| {method} | " + " | ".join(f"{deltas[s]:+.3f}" if s in deltas else ""
                                                   for s in shifts) + f" | {mean} |")
    return "\n".join(lines) + "\n"


def gap_closure(table: list[dict], model: str, reference: str, metric: str = "pesq") -> str:
    """Markdown: share of the gap between ``model``'s Source and ``reference``'s Source that
    each method of ``model`` closes, per shift: (method - source) / (reference - source)."""
    means = {(e["model"], e["shift"], e["method"]): e.get(metric, math.nan) for e in table}
    shifts = list(dict.fromkeys(e["shift"] for e in table if e["model"] == model))
    methods = [m for m in dict.fromkeys(e["method"] for e in table if e["model"] == model)
               if m != "source"]
    lines = [f"Share of the {model} -> {reference} {metric.upper()} gap closed "
             f"((method - Source) / ({reference} - Source)):", "",
             "| shift | gap | " + " | ".join(methods) + " |",
             "|---|---|" + "---|" * len(methods)]
    for shift in shifts:
        base = means.get((model, shift, "source"), math.nan)
        gap = means.get((reference, shift, "source"), math.nan) - base
        cells = [f"{(means.get((model, shift, m), math.nan) - base) / gap:+.0%}"
                 if gap > 0.05 else "n/a" for m in methods]
        lines.append(f"| {shift} | {gap:+.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def fingerprint(**parts) -> str:
    """A short fingerprint of what a cached run was made from (plain values only)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_rows(path: str | os.PathLike) -> list[dict]:
    """A results CSV with numbers as floats."""
    def value(text: str):
        try:
            return float(text)
        except ValueError:
            return text

    with open(path, newline="") as handle:
        return [{k: value(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def cached_run(folder: Path, key: str, run):
    """``run()`` -> (rows, cost), or what an earlier run with the same key left in ``folder``."""
    if (folder / "key.json").is_file() and json.loads((folder / "key.json").read_text()) == key:
        return read_rows(folder / "rows.csv"), json.loads((folder / "cost.json").read_text())
    rows, cost = run()
    write_rows(folder / "rows.csv", rows)
    atomic_write_text(folder / "cost.json", json.dumps(cost))
    atomic_write_text(folder / "key.json", json.dumps(key))  # last: a run without it is redone
    return rows, cost


def model_diagnostics(model: dict, shifts: dict, audio: dict, hparams: dict, run_opts: dict):
    """Per shift: the source mask against the oracle; per utterance: the reporting objective
    and the gate score (the model's ``mpol_default`` objective) under the source weights.
    Returns (diagnostics rows, utterance rows)."""
    rate, objective = hparams["sample_rate"], hparams["report_objective"]
    enhancer = load_enhancer(model, run_opts)
    hook = model_hook(enhancer, model)
    diagnostics = []
    for shift, items in shifts.items():
        diag = [mask_statistics(enhancer, hook, *audio[item["ID"]], objective.noise_frames)
                for item in items]
        stats = {k: float(np.mean([d["stats"][k] for d in diag])) for k in diag[0]["stats"]}
        diagnostics.append({"model": model["name"], "shift": shift, **stats})
    source = load_method("source", model, sample_rate=rate)["adapter"](enhancer=enhancer,
                                                                       hook=hook)
    default = load_method("mpol_default", model, sample_rate=rate)["adapter"](
        enhancer=enhancer, hook=hook)
    ones = torch.ones(1)
    utterances = []
    for i, (noisy, _) in audio.items():
        w1 = float(source.measure(noisy[None], ones, objective)["w1"][0])
        gate = float(source_scores(default, noisy[None], ones)[0])
        utterances.append({"ID": i, "w1_source": w1, "gate_score": gate})
    return diagnostics, utterances


def source_histograms(model: dict, shifts: dict, audio: dict, hparams: dict,
                      run_opts: dict) -> dict[str, dict[str, np.ndarray]]:
    """Per shift, for its first utterance: the source mask, each reference gain and the oracle
    (label -> flat values), for the histogram figures (a few forward passes, never cached)."""
    enhancer = load_enhancer(model, run_opts)
    hook = model_hook(enhancer, model)
    frames = hparams["report_objective"].noise_frames  # as model_diagnostics
    return {shift: mask_statistics(enhancer, hook, *audio[items[0]["ID"]], frames)["values"]
            for shift, items in shifts.items()}


def benchmark_model(model_name: str, shifts: dict, audio: dict, stream: dict, hparams: dict,
                    run_opts: dict) -> tuple[list, list, list]:
    """Every method of one model over the stream (cached runs reused); rows, diagnostics, cost.

    ``stream`` holds the stream manifest (``csv``), its fingerprint (``key``) and each
    utterance's shift (``shift_of``).
    """
    out, rate = Path(hparams["output_folder"]), hparams["sample_rate"]
    stream_csv, stream_key, shift_of = stream["csv"], stream["key"], stream["shift_of"]
    rows, diagnostics, costs = [], [], []
    model = load_model_preset(model_name, hparams.get("shared_folder"))
    # the weights, not only the path: a retrained model at the same path is not a cached one
    weights = source_digest(model["model_source"])
    plots = hparams.get("plots", True)
    histograms = source_histograms(model, shifts, audio, hparams, run_opts) if plots else {}

    def diagnose(model=model):
        diag, utterances = model_diagnostics(model, shifts, audio, hparams, run_opts)
        return utterances, {"diagnostics": diag}

    per_utterance, extra = cached_run(
        out / "runs" / model_name / "_source_diagnostics",
        fingerprint(stream=stream_key, model=model_name, source=weights,
                default={k: v for k, v in load_method("mpol_default", model).items()
                         if k not in ("adapter", "name")}),
        diagnose)
    diagnostics.extend(extra["diagnostics"])
    before = {r["ID"]: r for r in per_utterance}
    allowed = (hparams.get("model_methods") or {}).get(model_name, hparams["methods"])
    for method in [m for m in hparams["methods"] if m in allowed]:
        # the run's own options (hparams method_options) on top of the model's
        chosen = (hparams.get("method_options") or {}).get(method, {})
        options = {k: v for k, v in load_method(method, model, sample_rate=rate,
                                                **chosen).items()
                   if k not in ("adapter", "name")}
        folder = out / "runs" / model_name / method

        def run(method=method, folder=folder, chosen=chosen):
            enhancer = load_enhancer(model, run_opts)
            hook = model_hook(enhancer, model)
            adapter = load_method(method, model, sample_rate=rate, **chosen)["adapter"](
                enhancer=enhancer, hook=hook)
            method_rows, cost = run_method(adapter, stream_csv, folder / "brain", hparams)
            if method in hparams.get("histogram_methods", []):
                # the adapted weights end with the stream: keep their masks with the run
                masks = {shift: mask_values(enhancer, hook, audio[items[0]["ID"]][0])
                         for shift, items in shifts.items()}
                with atomic_path(folder / ADAPTED_MASKS) as tmp, open(tmp, "wb") as handle:
                    np.savez_compressed(handle, **masks)
            return method_rows, cost

        try:
            method_rows, cost = cached_run(
                folder, fingerprint(stream=stream_key, source=weights,
                                method=method, options=options,
                                composite=hparams.get("composite", True)), run)
        except ValueError as err:  # e.g. BN statistics on a model without BatchNorm
            logger.warning("%s / %s: not applicable (%s)", model_name, method, err)
            continue
        if plots and (folder / ADAPTED_MASKS).is_file():
            with np.load(folder / ADAPTED_MASKS) as masks:
                for shift in histograms:
                    histograms[shift][f"adapted mask ({method})"] = masks[shift]
        for r in method_rows:
            r.update({"model": model_name, "shift": shift_of[r["ID"]], "method": method,
                      "w1_source": before[r["ID"]]["w1_source"],
                      "gate_score": before[r["ID"]]["gate_score"],
                      "w1_after": r.pop("objective_after_w1", math.nan)})
            r.pop("objective_after_sign", None)
        rows.extend(method_rows)
        costs.append({"model": model_name, "method": method, **cost})
        logger.info("%s / %s: PESQ %.3f", model_name, method,
                    np.nanmean([r["pesq"] for r in method_rows]))
    if plots:
        from speechbrain_mpol.plots import plot_mask_histograms

        for shift, values in histograms.items():
            plot_mask_histograms(values, out / f"fig_{model_name}_{shift}_hist.png",
                                 f"{model_name}, {shift}: {shifts[shift][0]['ID']}")
    return rows, diagnostics, costs


def run_benchmark(hparams: dict, run_opts: dict) -> list[dict]:
    """Run every model x method of ``hparams`` (``hparams/benchmark.yaml``); returns the table.

    Each model x method run is kept in ``runs/<model>/<method>/`` with a fingerprint of the
    stream and the method's options: a rerun (after an interruption, or with more methods)
    reuses the runs whose fingerprint matches and computes only the others.
    """
    out = Path(hparams["output_folder"])
    rate = hparams["sample_rate"]
    manifests = shift_manifests(hparams["shifts_folder"], hparams["split"], hparams["shifts"])
    shifts = read_shifts(manifests, hparams.get("max_per_shift"))
    stream_csv = out / "stream.csv"
    stream = write_stream(shifts, stream_csv, hparams.get("stream_seed", 0))
    stream_key = hashlib.sha256(stream_csv.read_bytes()).hexdigest()
    shift_of = {row["ID"]: row["shift"] for row in stream}
    audio = {row["ID"]: (read_audio(row["noisy_wav"], rate),
                         read_audio(row["clean_wav"], rate, allow_silent=True)) for row in stream}

    def noisy_scores():
        rows = [{"ID": i, **evaluate_pair(clean.numpy(), noisy.numpy(), rate, False)}
                for i, (noisy, clean) in audio.items()]
        return rows, {}

    noisy_rows, _ = cached_run(out / "runs" / "noisy", stream_key, noisy_scores)
    noisy_means = {shift: {k: float(np.nanmean([r[k] for r in noisy_rows
                                                if shift_of[r["ID"]] == shift]))
                           for k in METRICS[:4]} for shift in shifts}
    rows, diagnostics, costs = [], [], []
    for model_name in hparams["models"]:
        found = benchmark_model(model_name, shifts, audio,
                                {"csv": stream_csv, "key": stream_key, "shift_of": shift_of},
                                hparams, run_opts)
        for total, part in zip((rows, diagnostics, costs), found, strict=True):
            total.extend(part)
    noisy_means = {(m, s): v for m in hparams["models"] for s, v in noisy_means.items()}
    # in the order the YAML lists models, sets and methods (rows come in stream order)
    table = sorted(summarize(rows), key=lambda e: (
        hparams["models"].index(e["model"]), hparams["shifts"].index(e["shift"]),
        hparams["methods"].index(e["method"])))
    write_rows(out / "benchmark.csv", rows)
    write_rows(out / "summary.csv", table)
    write_rows(out / "diagnostics.csv", diagnostics)
    write_rows(out / "cost.csv", costs)
    text = "".join(headline(table, m, tuple(hparams.get("unshifted", ()))) + "\n"
                   for m in hparams["models"]) + markdown(table, noisy_means)
    for model, reference in (hparams.get("gap_references") or {}).items():
        if model in hparams["models"] and reference in hparams["models"]:
            text += "\n" + gap_closure(table, model, reference)
    (out / "summary.md").write_text(text)
    if hparams.get("plots", True):
        from speechbrain_mpol.plots import plot_deltas

        for model_name in hparams["models"]:
            plot_deltas(table, model_name, out / f"fig_{model_name}_delta.png")
    return table
