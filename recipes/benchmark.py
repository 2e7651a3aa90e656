#!/usr/bin/env python3
"""Domain-shift benchmark: every model x shift x method, scored against clean references.

Usage::

    python recipes/benchmark.py hparams/benchmark.yaml
    python recipes/benchmark.py hparams/benchmark.yaml --max_per_shift=4 \
        --methods_to_run=[source,mpol_default]

For each model (YAML ``models``) and each method (``methods``: Source, MPol variants,
baselines), the utterances of all shifted test sets built by ``recipes/prepare_shifts.py``
(``split``/``shifts``) are streamed through the method as one seeded, shuffled stream starting
from the source weights (continual adaptation needs more than one small set), and scored
(PESQ-WB, STOI, ESTOI, SI-SDR, CSIG/CBAK/COVL). Written to ``output_folder``:

- ``benchmark.csv``: one row per model x shift x method x utterance, with the MPol objective
  (W1 to the reference) under the source weights and after adaptation;
- ``summary.csv`` / ``summary.md``: means, difference to Source with 95% paired-bootstrap
  intervals;
- ``diagnostics.csv``: per model x shift, the source mask's mean, its share of values in
  (0.2, 0.8), W1(mask, oracle) and W1(reference, oracle) for every reference gain, with the
  oracle |clean| / |noisy| clipped to 1;
- ``cost.csv``: forward and backward passes and wall time per second of audio, per method;
- ``fig_<model>_delta.png`` (per-shift bars) and ``fig_<model>_<shift>_hist.png`` (mask,
  adapted mask, references and oracle histograms for the first utterance of a shift).
"""

from __future__ import annotations

import copy
import csv
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "recipes"))

from adapt import load_model  # noqa: E402

from speechbrain_mpol.adapter import MPolObjective, measure  # noqa: E402
from speechbrain_mpol.audio import read_audio  # noqa: E402
from speechbrain_mpol.hooks import attach_hook, run_enhancer  # noqa: E402
from speechbrain_mpol.manifest import write_rows  # noqa: E402
from speechbrain_mpol.metrics import evaluate_pair, paired_bootstrap_ci  # noqa: E402
from speechbrain_mpol.objective import REFERENCES, reference_gain, wasserstein_1d  # noqa: E402

logger = logging.getLogger(__name__)

METRICS = ("pesq", "stoi", "estoi", "si_sdr", "csig", "cbak", "covl")


def build_stream(data: dict[str, list[dict]], seed: int = 0) -> list[dict]:
    """All shifted sets as one shuffled stream (what a deployed enhancer meets).

    Continual adaptation needs a stream longer than one small set (the authors accumulate
    gradients over 8 utterances); each row keeps its ``shift`` so results are read per shift.
    """
    stream = [{**item, "shift": shift} for shift, items in data.items() for item in items]
    order = np.random.default_rng(seed).permutation(len(stream))
    return [stream[i] for i in order]


def load_shift(manifest: Path, sample_rate: int, limit: int | None) -> list[dict]:
    """Read the utterances of one shifted set: ``[{"id", "noisy", "clean"}]``."""
    items = []
    with open(manifest, newline="") as handle:
        for row in csv.DictReader(handle):
            items.append(
                {
                    "id": f"{manifest.stem}/{row['ID']}",
                    "noisy": read_audio(row["noisy_wav"], sample_rate),
                    "clean": read_audio(row["clean_wav"], sample_rate, allow_silent=True),
                }
            )
            if limit and len(items) >= limit:
                break
    return items


@torch.no_grad()
def mask_statistics(enhancer, hook, objective: MPolObjective, noisy, clean) -> dict:
    """Source-model diagnostics of one utterance, and the value arrays for histograms."""
    ones = torch.ones(1)
    run_enhancer(enhancer, noisy[None], ones)
    view = hook.view()
    view.lengths = ones
    gain = view.linear_gain()
    run_enhancer(enhancer, clean[None], ones)
    clean_mag = hook.view().noisy  # the same analysis applied to the clean reference
    hook.clear()
    oracle = (clean_mag / view.noisy.clamp(min=1e-8)).clamp(0.0, 1.0)
    stats = {
        "mask_mean": float(gain.mean()),
        "mask_mid_share": float(((gain > 0.2) & (gain < 0.8)).float().mean()),
        "oracle_mean": float(oracle.mean()),
        "w1_mask_oracle": float(wasserstein_1d(gain, oracle)[0]),
    }
    values = {"source mask": gain.flatten().numpy(), "oracle": oracle.flatten().numpy()}
    for name in REFERENCES:
        ref = reference_gain(name, view.noisy, view.enhanced, ones, k=objective.noise_frames)
        stats[f"w1_{name}_oracle"] = float(wasserstein_1d(ref, oracle)[0])
        stats[f"{name}_mean"] = float(ref.mean())
        values[f"reference {name}"] = ref.flatten().numpy()
    return {"stats": stats, "values": values}


@torch.no_grad()
def mask_values(enhancer, hook, noisy) -> np.ndarray:
    """Flat linear-gain mask values of one utterance with the current weights."""
    run_enhancer(enhancer, noisy[None], torch.ones(1))
    values = hook.view().linear_gain().flatten().numpy()
    hook.clear()
    return values


def run_stream(adapter, objective, items, sample_rate, composite) -> tuple[list[dict], dict]:
    """Stream a shift's utterances through an adapter; rows and cost of the stream."""
    rows = []
    audio_seconds = 0.0
    start = time.perf_counter()
    for item in items:
        wavs, lens = item["noisy"][None], torch.ones(1)
        enhanced = adapter(wavs, lens)[0]
        after = measure(adapter.enhancer, adapter.hook, objective, wavs, lens)
        audio_seconds += wavs.shape[1] / sample_rate
        scores = evaluate_pair(
            item["clean"].numpy(), enhanced.numpy(), sample_rate, composite_measures=composite
        )
        rows.append({"ID": item["id"], **scores, "w1_after": float(after["w1"][0])})
    wall = time.perf_counter() - start
    return rows, {"audio_seconds": audio_seconds, "wall_seconds": wall}


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


def plot_deltas(table: list[dict], model: str, path: Path) -> None:
    """Per-shift bars of the PESQ difference to Source, one bar per method."""
    from speechbrain_mpol.plots import plt

    rows = [e for e in table if e["model"] == model and e["method"] != "source"]
    shifts = sorted({e["shift"] for e in rows}, key=[e["shift"] for e in rows].index)
    methods = sorted({e["method"] for e in rows}, key=[e["method"] for e in rows].index)
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(1.3 * len(shifts) + 2, 3.4))
    width = 0.8 / len(methods)
    for j, method in enumerate(methods):
        values = [
            next((e.get("d_pesq", math.nan) for e in rows
                  if e["shift"] == s and e["method"] == method), math.nan)
            for s in shifts
        ]
        ax.bar(np.arange(len(shifts)) + j * width, values, width, label=method)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(shifts)) + 0.4 - width / 2, shifts)
    ax.set_ylabel("PESQ-WB, method - Source")
    ax.set_title(model)
    ax.legend(fontsize=7, ncol=2)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str]) -> list[dict]:
    """Run the benchmark; returns the summary table."""
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    with open(hparams_file) as handle:
        hparams = load_hyperpyyaml(handle, overrides)
    torch.set_num_threads(hparams.get("num_threads", 1))
    out = Path(hparams["output_folder"])
    out.mkdir(parents=True, exist_ok=True)
    from prepare_shifts import prepare_shifts

    manifests = prepare_shifts(
        hparams["shared_folder"], hparams["shifts_folder"], splits=(hparams["split"],),
        shifts=tuple(hparams["shifts"]),
    )
    rate = hparams["sample_rate"]
    objective = hparams["objective"]
    rows, diagnostics, costs, noisy_means = [], [], [], {}
    wanted = hparams.get("methods_to_run") or list(hparams["methods"])
    data = {shift: load_shift(manifests[(hparams["split"], shift)], rate,
                              hparams.get("max_per_shift")) for shift in hparams["shifts"]}
    stream = build_stream(data, hparams.get("stream_seed", 0))
    for model_name, model_cfg in hparams["models"].items():
        model_hp = {**hparams, **model_cfg}
        methods = [m for m in wanted if m in model_cfg.get("methods", wanted)]
        enhancer = load_model(model_hp, run_opts)
        hook = attach_hook(enhancer, model_cfg["model_type"])
        histograms = {}
        for shift, items in data.items():
            noisy_scores = [evaluate_pair(i["clean"].numpy(), i["noisy"].numpy(), rate, False)
                            for i in items]
            noisy_means[(model_name, shift)] = {
                k: float(np.nanmean([s[k] for s in noisy_scores])) for k in METRICS[:4]
            }
            diag = [mask_statistics(enhancer, hook, objective, i["noisy"], i["clean"])
                    for i in items]
            stats = {k: float(np.mean([d["stats"][k] for d in diag])) for k in diag[0]["stats"]}
            diagnostics.append({"model": model_name, "shift": shift, **stats})
            histograms[shift] = dict(diag[0]["values"])
        source_w1 = {i["id"]: float(measure(enhancer, hook, objective, i["noisy"][None],
                                            torch.ones(1))["w1"][0]) for i in stream}
        for method in methods:
            enhancer = load_model(model_hp, run_opts)
            hook = attach_hook(enhancer, model_cfg["model_type"])
            options = dict(model_cfg.get("method_options", {}).get(method, {}))
            try:
                adapter = hparams["methods"][method](
                    enhancer=enhancer, hook=hook, params=model_cfg["params"],
                    sample_rate=rate, **options,
                )
            except ValueError as err:  # e.g. BN statistics on a model without BatchNorm
                logger.warning("%s / %s: not applicable (%s)", model_name, method, err)
                continue
            stream_rows, cost = run_stream(adapter, objective, stream, rate,
                                           hparams.get("composite", True))
            for r, item in zip(stream_rows, stream, strict=True):
                r.update({"model": model_name, "shift": item["shift"], "method": method,
                          "w1_source": source_w1[item["id"]]})
            rows.extend(stream_rows)
            counts = copy.copy(adapter.counts)
            costs.append({
                "model": model_name, "method": method,
                "audio_seconds": cost["audio_seconds"],
                "wall_per_audio_second": cost["wall_seconds"] / cost["audio_seconds"],
                "forward_per_audio_second": counts["forward"] / cost["audio_seconds"],
                "backward_per_audio_second": counts["backward"] / cost["audio_seconds"],
                "updates": counts["updates"],
                "rollbacks": counts["rollbacks"],
                "skipped_nonfinite": counts["skipped_nonfinite"],
            })
            if method in hparams.get("histogram_methods", []):
                for shift, items in data.items():
                    histograms[shift][f"adapted mask ({method})"] = mask_values(
                        enhancer, hook, items[0]["noisy"])
            logger.info("%s / %s: PESQ %.3f", model_name, method,
                        np.nanmean([r["pesq"] for r in stream_rows]))
            write_rows(out / "benchmark.csv", rows)  # progress survives an interruption
        if hparams.get("plots", True):
            from speechbrain_mpol.plots import plot_mask_histograms

            for shift, values in histograms.items():
                plot_mask_histograms(values, out / f"fig_{model_name}_{shift}_hist.png",
                                     f"{model_name}, {shift}: {data[shift][0]['id']}")
    table = summarize(rows)
    write_rows(out / "benchmark.csv", rows)
    write_rows(out / "summary.csv", table)
    write_rows(out / "diagnostics.csv", diagnostics)
    write_rows(out / "cost.csv", costs)
    text = markdown(table, noisy_means)
    for model, reference in hparams.get("gap_references", {}).items():
        if model in hparams["models"] and reference in hparams["models"]:
            text += "\n" + gap_closure(table, model, reference)
    (out / "summary.md").write_text(text)
    if hparams.get("plots", True):
        for model_name in hparams["models"]:
            plot_deltas(table, model_name, out / f"fig_{model_name}_delta.png")
    print(text)
    return table


if __name__ == "__main__":
    main(sys.argv[1:])
