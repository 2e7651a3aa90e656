"""The shift gate: adapt an utterance only when the unadapted model itself finds it unusual.

MPol helps where a model is weak and can cost a little where it is already good (its own
training domain). The gate measures, with the source weights, the method's own unsupervised
objective on the incoming utterance (how far the mask's histogram lies from the reference's)
and compares it with the model's in-domain level of it: a threshold calibrated once, without
clean references, as a quantile of the same score over audio of the model's own training
domain (:func:`calibrate_threshold`). Below the threshold the utterance is enhanced without
adaptation.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from speechbrain_mpol.weights import swapped_weights


class ShiftGate:
    """Open (adapt) when the source weights' objective exceeds ``threshold``.

    Arguments
    ---------
    threshold : float
        The calibrated in-domain level of the objective (:func:`calibrate_threshold`).

    Example
    -------
    >>> gate = ShiftGate(0.2)
    >>> gate.opens(torch.tensor([0.1, 0.3])).tolist()
    [False, True]
    """

    def __init__(self, threshold: float):
        self.threshold = float(threshold)

    def opens(self, scores: torch.Tensor) -> torch.Tensor:
        """Which utterances ``[B]`` are adapted."""
        return scores > self.threshold


@torch.no_grad()
def source_scores(adapter, wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The adapter's objective (summed parts) per utterance ``[B]`` under the source weights,
    on the adaptation crop."""
    from speechbrain_mpol.adapter import crop_batch

    wavs, lengths = crop_batch(wavs, lengths, adapter.crop_samples)
    with swapped_weights(adapter.model, adapter.source_state):
        parts = adapter.measure(wavs, lengths)
    return sum(parts.values())


def calibrate_threshold(adapter, utterances: Iterable[torch.Tensor], quantile: float) -> float:
    """The ``quantile`` of the source-weights objective over in-domain ``utterances``.

    Arguments
    ---------
    adapter : Adapter
        The method (its objective and crop are used; its weights are not changed).
    utterances : iterable of torch.Tensor
        Waveforms ``[samples]`` of the model's own domain (no clean reference needed).
    quantile : float
        In [0, 1]: the share of in-domain utterances the gate keeps closed.

    Returns
    -------
    float
        The threshold.
    """
    ones = torch.ones(1)
    scores = [float(source_scores(adapter, wav[None], ones)[0]) for wav in utterances]
    return float(np.quantile(scores, quantile))


def gated_deltas(
    rows: list[dict], threshold: float, method: str = "mpol_default", metric: str = "pesq"
) -> dict[str, float]:
    """Per set, the mean ``metric`` difference to Source of the gated method, from the rows of
    an episodic method and of Source on the same stream.

    An episodic method resets to the source weights for every utterance, so behind the gate an
    utterance's output is the method's where its ``gate_score`` exceeds ``threshold`` and the
    Source's elsewhere: exact, with no new run.

    Example
    -------
    >>> rows = [{"ID": "a", "shift": "s", "method": "source", "pesq": 2.0, "gate_score": 0.1},
    ...         {"ID": "a", "shift": "s", "method": "mpol_default", "pesq": 2.5},
    ...         {"ID": "b", "shift": "s", "method": "source", "pesq": 2.0, "gate_score": 0.3},
    ...         {"ID": "b", "shift": "s", "method": "mpol_default", "pesq": 2.5}]
    >>> gated_deltas(rows, 0.2)
    {'s': 0.25}
    """
    source = [r for r in rows if r["method"] == "source"]
    adapted = {r["ID"]: r for r in rows if r["method"] == method}
    gated = [adapted[r["ID"]] if r["gate_score"] > threshold else r for r in source]
    return set_deltas(source, gated, metric)


def choose_quantile(
    rows: list[dict],
    calibration_set: str,
    quantiles: list[float],
    max_loss: float,
    unshifted: list[str] = (),
) -> tuple[list[dict], dict | None]:
    """The gate's quantile that keeps the largest mean gain over the shifted sets (every set
    not in ``unshifted``) while no set at all loses more than ``max_loss``, chosen from dev
    rows (:func:`gated_deltas`).

    Returns the table (one row per quantile, with its threshold and per-set deltas) and the
    chosen row (None if no quantile qualifies).
    """
    scores = [r["gate_score"] for r in rows
              if r["method"] == "source" and r["shift"] == calibration_set]
    table = []
    for q in quantiles:
        threshold = float(np.quantile(scores, q))
        deltas = gated_deltas(rows, threshold)
        shifted = [d for s, d in deltas.items() if s not in unshifted]
        table.append({
            "quantile": q, "gate_threshold": threshold,
            "mean_delta_shifted": float(np.mean(shifted)),
            "worst_set": float(min(deltas.values())),
            "eligible": min(deltas.values()) >= -max_loss,
            **{f"d_{s}": d for s, d in deltas.items()},
        })
    eligible = [t for t in table if t["eligible"]]
    return table, max(eligible, key=lambda t: t["mean_delta_shifted"]) if eligible else None


def set_deltas(source_rows: list[dict], rows: list[dict], metric: str = "pesq") -> dict[str, float]:
    """Per set, the mean ``metric`` difference of ``rows`` (one method) to Source, matched by
    utterance.

    Example
    -------
    >>> source = [{"ID": "a", "shift": "s", "pesq": 2.0}, {"ID": "b", "shift": "s", "pesq": 3.0}]
    >>> round(set_deltas(source, [{"ID": "a", "pesq": 2.5}, {"ID": "b", "pesq": 2.9}])["s"], 6)
    0.2
    """
    base = {r["ID"]: r for r in source_rows}
    per_set: dict[str, list[float]] = {}
    for r in rows:
        per_set.setdefault(base[r["ID"]]["shift"], []).append(r[metric] - base[r["ID"]][metric])
    return {s: float(np.nanmean(v)) for s, v in per_set.items()}


def verify(hparams: dict, run_opts: dict, name: str, table: list[dict],
           best: dict | None, source_rows: list[dict]) -> dict | None:
    """Run the gated method itself over the dev stream, from the estimated choice ``best``
    upwards through the eligible quantiles (at most ``verify_runs`` runs), and return the first
    row whose measured sets all lose at most ``max_loss`` (None if none does).

    The estimate of :func:`choose_quantile` is exact for an episodic default only: a
    continual gated stream adapts on the opened utterances alone, so its weights differ from
    the ungated run's. Each run adds ``measured_*`` entries to its table row.
    """
    from speechbrain_mpol.benchmark import read_rows, run_benchmark

    if best is None or not hparams.get("verify_runs"):
        return best
    out = Path(hparams["output_folder"])
    candidates = [t for t in table[table.index(best):] if t["eligible"]]
    for row in candidates[:hparams["verify_runs"]]:
        folder = out / "verify" / name / f"q{row['quantile']}"
        for cached in ("noisy", f"{name}/_source_diagnostics"):  # same stream: reuse
            if not (folder / "runs" / cached).exists():
                shutil.copytree(out / "runs" / cached, folder / "runs" / cached)
        run_benchmark({**hparams, "output_folder": str(folder), "models": [name],
                       "methods": ["mpol_gated"], "plots": False,
                       "method_options": {"mpol_gated": {"gate_threshold":
                                                         row["gate_threshold"]}}}, run_opts)
        deltas = set_deltas(source_rows, read_rows(folder / "benchmark.csv"))
        shifted = [d for s, d in deltas.items() if s not in hparams["unshifted"]]
        row.update({"measured_mean_delta_shifted": float(np.mean(shifted)),
                    "measured_worst_set": float(min(deltas.values())),
                    **{f"measured_d_{s}": d for s, d in deltas.items()}})
        if row["measured_worst_set"] >= -hparams["max_loss"]:
            return row
    return None


def calibrate(hparams: dict, run_opts: dict) -> dict[str, dict | None]:
    """Run Source and each model's ``mpol_default`` over the dev sets and choose each model's
    gate (``hparams/calibrate_gate.yaml``), verified by running it (:func:`verify`); returns
    the chosen row per model."""
    from speechbrain_mpol.benchmark import read_rows, run_benchmark
    from speechbrain_mpol.manifest import write_rows
    from speechbrain_mpol.presets import load_model_preset

    if hparams["split"] != "dev":
        raise ValueError("the gate is chosen on the dev split only")
    out = Path(hparams["output_folder"])
    run_benchmark(hparams, run_opts)
    rows = read_rows(out / "benchmark.csv")
    chosen = {}
    for name in hparams["models"]:
        model = load_model_preset(name, hparams.get("shared_folder"))
        mine = [r for r in rows if r["model"] == name]
        table, best = choose_quantile(mine, model["calibration_set"], hparams["quantiles"],
                                      hparams["max_loss"], hparams["unshifted"])
        best = verify(hparams, run_opts, name, table, best,
                      [r for r in mine if r["method"] == "source"])
        write_rows(out / f"gate_{name}.csv", table)
        (out / f"gate_{name}.md").write_text(gate_markdown(
            name, model["calibration_set"], table, best, hparams["shifts"]))
        chosen[name] = best
    return chosen


def gate_markdown(model: str, calibration_set: str, table: list[dict], best: dict | None,
                  order: list[str] = ()) -> str:
    """The quantile table as markdown (estimated, then measured where run), the chosen row
    marked; sets in ``order`` first."""
    sets = [k[2:] for k in table[0] if k.startswith("d_")]
    sets = [s for s in order if s in sets] + [s for s in sets if s not in order]
    lines = [f"Gate of mpol_gated for {model} on the dev split (calibration set: "
             f"{calibration_set}); PESQ-WB difference to Source per set.", ""]
    for label, prefix in (("estimated from the ungated run", ""),
                          ("measured: the gated method run", "measured_")):
        rows = [t for t in table if f"{prefix}worst_set" in t]
        if not rows:
            continue
        lines += [f"{label}:", "",
                  "| quantile | threshold | mean shifted | worst set | " + " | ".join(sets) + " |",
                  "|---|---|---|---|" + "---|" * len(sets)]
        for t in rows:
            mark = " **chosen**" if best is not None and t is best else ""
            lines.append(f"| {t['quantile']}{mark} | {t['gate_threshold']:.4g} | "
                         f"{t[prefix + 'mean_delta_shifted']:+.4f} | "
                         f"{t[prefix + 'worst_set']:+.4f} | "
                         + " | ".join(f"{t[prefix + 'd_' + s]:+.4f}" for s in sets) + " |")
        lines.append("")
    return "\n".join(lines)
