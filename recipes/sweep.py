#!/usr/bin/env python3
"""Sweep MPol configurations on the DEV split only, to choose the project's defaults.

Usage::

    python recipes/sweep.py hparams/sweep.yaml [--model=gtcrn_vctk] [--max_per_shift=8]

Grid (YAML ``grid``): reference gain x mode (continual, episodic) x learning rate x steps
(episodic) x adapted-parameter set x comparison domain. Every configuration streams all dev
shifts as one shuffled stream from the source weights (as the benchmark does); the score is the
mean PESQ-WB difference to Source over the shifted sets, and a configuration is eligible only
if the in-domain control loses at most ``max_in_domain_loss``. Writes
``results/sweep_<model>.csv`` and ``.md`` (best first). The test split is never read here."""

from __future__ import annotations

import itertools
import logging
import sys
from pathlib import Path

import numpy as np
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "recipes"))

from adapt import load_model  # noqa: E402
from benchmark import build_stream, load_shift, run_stream  # noqa: E402

from speechbrain_mpol.adapter import MPolAdapter  # noqa: E402
from speechbrain_mpol.baselines import SourceAdapter  # noqa: E402
from speechbrain_mpol.hooks import attach_hook  # noqa: E402
from speechbrain_mpol.manifest import write_rows  # noqa: E402

logger = logging.getLogger(__name__)


#: The grid keys every sweep has; a model's ``grid`` may add more (e.g. ``noise_frames``).
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


def main(argv: list[str]) -> list[dict]:
    """Run the sweep; returns the ranked table."""
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    with open(hparams_file) as handle:
        hparams = load_hyperpyyaml(handle, overrides)
    torch.set_num_threads(hparams.get("num_threads", 1))
    from prepare_shifts import prepare_shifts

    split = "dev"  # never the test split
    manifests = prepare_shifts(hparams["shared_folder"], hparams["shifts_folder"],
                               splits=(split,), shifts=tuple(hparams["shifts"]))
    model_name = hparams["model"]
    model_cfg = hparams["models"][model_name]
    model_hp = {**hparams, **model_cfg}
    rate = hparams["sample_rate"]
    objective = hparams["objective"]
    data = {s: load_shift(manifests[(split, s)], rate, hparams.get("max_per_shift"))
            for s in hparams["shifts"]}

    items = build_stream(data, hparams.get("stream_seed", 0))

    def stream(factory) -> dict[str, float]:
        enhancer = load_model(model_hp, run_opts)
        adapter = factory(enhancer, attach_hook(enhancer, model_cfg["model_type"]))
        rows, _ = run_stream(adapter, objective, items, rate, composite=False)
        return {shift: float(np.nanmean([r["pesq"] for r, i in zip(rows, items, strict=True)
                                         if i["shift"] == shift])) for shift in data}

    source = stream(lambda e, h: SourceAdapter(e, h))
    table = []
    grid = {**hparams["grid"], **model_cfg.get("grid", {})}
    configs = configurations(grid, model_cfg["param_sets"])
    for i, cfg in enumerate(configs):
        def factory(enhancer, hook, cfg=cfg):
            extra = {k: v for k, v in cfg.items() if k not in BASE_KEYS}
            return MPolAdapter(
                enhancer, hook, reference=cfg["reference"], compare_in=cfg["compare_in"],
                params=model_cfg["param_sets"][cfg["params"]], mode=cfg["mode"],
                steps=cfg["steps"], opt_class=lambda p, lr=cfg["lr"]: torch.optim.AdamW(p, lr=lr),
                **{**hparams["schedule"], **model_cfg.get("adapter_options", {}), **extra},
            )

        pesq = stream(factory)
        deltas = {s: pesq[s] - source[s] for s in pesq}
        shifted = [d for s, d in deltas.items() if s != "in_domain"]
        entry = {**cfg, "mean_delta_shifted": float(np.mean(shifted)),
                 "improved_shifts": int(sum(d > 0 for d in shifted)),
                 "in_domain_delta": deltas.get("in_domain", float("nan")),
                 **{f"d_{s}": d for s, d in deltas.items()}}
        entry["eligible"] = bool(not entry["in_domain_delta"] < -hparams["max_in_domain_loss"])
        table.append(entry)
        logger.info("[%d/%d] %s: mean delta %.3f", i + 1, len(configs), cfg,
                    entry["mean_delta_shifted"])
        print(f"[{i + 1}/{len(configs)}] {cfg} -> {entry['mean_delta_shifted']:+.4f}", flush=True)
        ranked = sorted(table, key=lambda e: (not e["eligible"], -e["mean_delta_shifted"]))
        out = Path(hparams["output_folder"])
        out.mkdir(parents=True, exist_ok=True)
        write_rows(out / f"sweep_{model_name}.csv", ranked)
    source_line = ", ".join(f"{s} {v:.3f}" for s, v in source.items())
    knobs = [*BASE_KEYS, *[k for k in configs[0] if k not in BASE_KEYS]]
    lines = [f"Sweep on the dev split, model {model_name}; Source PESQ: {source_line}", "",
             "| " + " | ".join(knobs) + " | mean dPESQ (shifted) | shifts improved "
             "| in-domain dPESQ | eligible |",
             "|" + "---|" * (len(knobs) + 4)]
    for e in ranked:
        lines.append(
            "| " + " | ".join(str(e[k]) for k in knobs)
            + f" | {e['mean_delta_shifted']:+.4f} | {e['improved_shifts']} | "
            f"{e['in_domain_delta']:+.4f} | {e['eligible']} |")
    text = "\n".join(lines) + "\n"
    (out / f"sweep_{model_name}.md").write_text(text)
    print(text)
    return ranked


if __name__ == "__main__":
    main(sys.argv[1:])
