"""The dev-split sweep that chooses each model's MPol default.

Every configuration of a grid (reference gain x mode x learning rate x steps x adapted-parameter
set x comparison domain, plus any model-specific keys) streams all dev shifts as one shuffled
stream from the source weights, exactly as the benchmark does; its score is the mean PESQ-WB
difference to Source over the shifted sets, and it is eligible only if the in-domain control
loses at most ``max_in_domain_loss``. The test split is never read here.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np

from speechbrain_mpol.benchmark import read_shifts, run_method, shift_manifests, write_stream
from speechbrain_mpol.manifest import write_rows
from speechbrain_mpol.presets import load_enhancer, load_method, load_model_preset, model_hook

logger = logging.getLogger(__name__)

#: The grid keys every sweep has; a model preset's ``sweep_grid`` may add more.
BASE_KEYS = ("reference", "mode", "lr", "steps", "params", "compare_in")

def configurations(grid: dict, param_sets: dict) -> list[dict]:
    """The Cartesian grid, without duplicates (``steps`` only matters in episodic mode).

    Example
    -------
    >>> grid = {"reference": ["self"], "mode": ["continual", "episodic"], "lr": [1e-3],
    ...         "steps": [1, 3], "compare_in": ["linear"], "noise_frames": [32]}
    >>> [(c["mode"], c["steps"]) for c in configurations(grid, {"norm": ["norm"]})]
    [('continual', 1), ('episodic', 1), ('episodic', 3)]
    """
    keys = [*BASE_KEYS, *sorted(k for k in grid if k not in BASE_KEYS)]
    values = [list(param_sets) if k == "params" else grid[k] for k in keys]
    seen, configs = set(), []
    for combo in itertools.product(*values):
        cfg = dict(zip(keys, combo, strict=True))
        if cfg["mode"] != "episodic":
            cfg["steps"] = 1
        key = tuple(cfg.values())
        if key not in seen:
            seen.add(key)
            configs.append(cfg)
    return configs


def score(pesq: dict[str, float], source: dict[str, float], max_control_loss: float,
          controls: tuple[str, ...] = ("in_domain",), unshifted: tuple[str, ...] = ()) -> dict:
    """Per-set differences to Source, their mean over the shifted sets, and eligibility.

    ``controls`` are sets without a shift where a configuration may lose at most
    ``max_control_loss``; ``unshifted`` sets are reported but count neither way.

    Example
    -------
    >>> s = score({"in_domain": 2.0, "noise": 1.6}, {"in_domain": 2.01, "noise": 1.5}, 0.02)
    >>> round(s["mean_delta_shifted"], 3), s["eligible"]
    (0.1, True)
    """
    deltas = {s: pesq[s] - source[s] for s in pesq}
    shifted = [d for s, d in deltas.items() if s not in (*controls, *unshifted)]
    controls = [d for s, d in deltas.items() if s in controls]
    return {
        "mean_delta_shifted": float(np.mean(shifted)),
        "improved_shifts": int(sum(d > 0 for d in shifted)),
        "in_domain_delta": float(min(controls)) if controls else float("nan"),
        **{f"d_{s}": d for s, d in deltas.items()},
        "eligible": bool(not (controls and min(controls) < -max_control_loss)),
    }


def markdown(ranked: list[dict], knobs: list[str], model_name: str,
             source: dict[str, float]) -> str:
    """The ranked sweep as a markdown table, one column per knob of the grid."""
    source_line = ", ".join(f"{s} {v:.3f}" for s, v in source.items())
    lines = [f"Sweep on the dev split, model {model_name}; Source PESQ: {source_line}", "",
             "| " + " | ".join(knobs) + " | mean dPESQ (shifted) | shifts improved "
             "| in-domain dPESQ | eligible |",
             "|" + "---|" * (len(knobs) + 4)]
    for e in ranked:
        lines.append("| " + " | ".join(str(e[k]) for k in knobs)
                     + f" | {e['mean_delta_shifted']:+.4f} | {e['improved_shifts']} | "
                     f"{e['in_domain_delta']:+.4f} | {e['eligible']} |")
    return "\n".join(lines) + "\n"


def run_sweep(hparams: dict, run_opts: dict) -> list[dict]:
    """Sweep ``hparams["model"]`` on the dev split; returns the configurations, best first.

    Writes ``sweep_<model>.csv`` (after every configuration) and ``sweep_<model>.md``.
    """
    split = "dev"  # never the test split
    out = Path(hparams["output_folder"])
    model = load_model_preset(hparams["model"], hparams.get("shared_folder"))
    shifts = read_shifts(shift_manifests(hparams["shifts_folder"], split, hparams["shifts"]),
                         hparams.get("max_per_shift"))
    stream_csv = out / f"sweep_{model['name']}_stream.csv"
    stream = write_stream(shifts, stream_csv, hparams.get("stream_seed", 0))
    shift_of = {row["ID"]: row["shift"] for row in stream}

    def mean_pesq(method: str, **options) -> dict[str, float]:
        enhancer = load_enhancer(model, run_opts)
        adapter = load_method(method, model, sample_rate=hparams["sample_rate"], **options)[
            "adapter"](enhancer=enhancer, hook=model_hook(enhancer, model))
        rows, _ = run_method(adapter, stream_csv, out / "sweep_runs" / model["name"],
                             {**hparams, "composite": False})
        return {s: float(np.nanmean([r["pesq"] for r in rows if shift_of[r["ID"]] == s]))
                for s in shifts}

    source = mean_pesq("source")
    param_sets = {"default": model["adapted_params"], **model.get("sweep_param_sets", {})}
    grid = {**hparams["grid"], **model.get("sweep_grid", {})}
    table = []
    configs = configurations(grid, param_sets)
    for i, cfg in enumerate(configs):
        options = {k: v for k, v in cfg.items() if k != "params"}
        pesq = mean_pesq(hparams["method"], adapted_params=param_sets[cfg["params"]], **options)
        table.append({**cfg, **score(pesq, source, hparams["max_in_domain_loss"],
                                     tuple(hparams["controls"]), tuple(hparams["unshifted"]))})
        logger.info("[%d/%d] %s: mean delta %+.4f", i + 1, len(configs), cfg,
                    table[-1]["mean_delta_shifted"])
        ranked = sorted(table, key=lambda e: (not e["eligible"], -e["mean_delta_shifted"]))
        write_rows(out / f"sweep_{model['name']}.csv", ranked)
    (out / f"sweep_{model['name']}.md").write_text(markdown(ranked, list(configs[0]), model["name"],
                                                              source))
    return ranked
