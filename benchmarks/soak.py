#!/usr/bin/env python3
"""Soak test of continual MPol: a long stream of shifted utterances, PESQ over time vs Source.

Usage::

    python benchmarks/soak.py [--utterances 1000] [--model gtcrn_vctk] [--method mpol_paper]
                              [--options "{reference: noisy_wiener, lr: 0.001}"]
                              [--shared_folder ../shared] [--out results/soak]

Utterances are drawn on the fly (seeded) from the benchmark's set definitions
(``speechbrain_mpol/shift_sets.py``: the shifted sets of the test split's speech, noises and
rooms) and streamed once through a continual method (default: the authors' MPol with the
project's guards: non-finite updates skipped, rollback when the objective under the adapted
weights exceeds the source's by 50%, EMA pull-back 0.2) and through the source model. Model and
method are presets of ``hparams/models/`` and ``hparams/methods/``. Written: ``soak.csv`` (per
utterance: shift, PESQ source/MPol, objective) and ``soak.json`` (means over windows of 100,
last-100 difference, NaN count, guard events); a table is printed. Target: no NaN, and the last
100 utterances not worse than Source by more than 0.05 PESQ on average.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import ruamel.yaml
import torch

from speechbrain_mpol.corpus import read_corpus
from speechbrain_mpol.manifest import write_rows
from speechbrain_mpol.metrics import pesq_wb
from speechbrain_mpol.presets import build_adapter, load_enhancer, load_model_preset
from speechbrain_mpol.shared import find_shared_folder
from speechbrain_mpol.shift_sets import SETS, mix_utterance, split_material

SHIFTS = ("noise", "household", "low_snr", "reverb", "level", "bandlimit", "speaker")


def stream(shared_folder: str, count: int, seconds: float, seed: int):
    """Yield ``(shift, noisy, clean)`` for ``count`` seeded utterances of the test material."""
    corpus = Path(shared_folder) / "corpus"
    material = split_material(read_corpus(corpus), corpus, "test")
    rng = np.random.default_rng(seed)
    for i in range(count):
        shift = SHIFTS[i % len(SHIFTS)] if i < len(SHIFTS) else SHIFTS[rng.integers(len(SHIFTS))]
        pool = material.speech[SETS[shift].speech]
        speech = pool[int(rng.integers(len(pool)))]
        mix = mix_utterance(SETS[shift], speech, material, np.random.default_rng([seed, i]),
                            seconds)
        yield shift, torch.from_numpy(mix.noisy).float(), mix.clean


def main() -> dict:
    """Run the soak test; returns the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--utterances", type=int, default=1000)
    parser.add_argument("--model", default="gtcrn_vctk", help="a preset of hparams/models/")
    parser.add_argument("--method", default="mpol_paper", help="a preset of hparams/methods/")
    parser.add_argument("--options", default="{rollback_threshold: 0.5}",
                        help="method options (YAML), e.g. \"{reference: noisy_wiener}\"")
    parser.add_argument("--shared_folder", default=find_shared_folder())
    parser.add_argument("--seconds", type=float, default=3.0, help="speech crop per utterance")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/soak")
    args = parser.parse_args()
    torch.set_num_threads(1)
    options = ruamel.yaml.YAML(typ="safe").load(args.options) or {}
    model = load_model_preset(args.model, args.shared_folder)
    adapter = build_adapter(load_enhancer(model), model, args.method, **options)
    rows = []
    start = time.perf_counter()
    ones = torch.ones(1)
    for i, (shift, noisy, clean) in enumerate(
        stream(args.shared_folder, args.utterances, args.seconds, args.seed)
    ):
        source = adapter.predict_source(noisy[None], ones)[0].numpy()
        adapted = adapter(noisy[None], ones)[0].numpy()
        rows.append({
            "index": i, "shift": shift,
            "pesq_source": pesq_wb(clean, source), "pesq_mpol": pesq_wb(clean, adapted),
            "finite": bool(np.isfinite(adapted).all()),
            "w1": float(adapter.last_parts.get("w1", torch.tensor([math.nan]))[0]),
        })
        if (i + 1) % 100 == 0:
            window = rows[-100:]
            print(f"{i + 1:5d}  source {np.nanmean([r['pesq_source'] for r in window]):.3f}  "
                  f"mpol {np.nanmean([r['pesq_mpol'] for r in window]):.3f}  "
                  f"rollbacks {adapter.counts['rollbacks']}  {time.perf_counter() - start:.0f} s",
                  flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_rows(out / "soak.csv", rows)
    windows = []
    for k in range(0, len(rows), 100):
        w = rows[k:k + 100]
        windows.append({
            "utterances": f"{k + 1}-{k + len(w)}",
            "pesq_source": float(np.nanmean([r["pesq_source"] for r in w])),
            "pesq_mpol": float(np.nanmean([r["pesq_mpol"] for r in w])),
        })
    last = rows[-100:]
    summary = {
        "model": args.model, "method": args.method, "options": options,
        "utterances": len(rows),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "non_finite_outputs": sum(not r["finite"] for r in rows),
        "nan_pesq": sum(math.isnan(r["pesq_mpol"]) for r in rows),
        "last100_delta": float(np.nanmean([r["pesq_mpol"] - r["pesq_source"] for r in last])),
        "overall_delta": float(np.nanmean([r["pesq_mpol"] - r["pesq_source"] for r in rows])),
        "guard_events": {k: adapter.counts[k] for k in ("updates", "rollbacks",
                                                        "skipped_nonfinite")},
        "windows": windows,
    }
    summary["target_met"] = bool(summary["non_finite_outputs"] == 0
                                 and summary["last100_delta"] >= -0.05)
    (out / "soak.json").write_text(json.dumps(summary, indent=2))
    print("\n| utterances | PESQ Source | PESQ MPol | delta |\n|---|---|---|---|")
    for w in windows:
        print(f"| {w['utterances']} | {w['pesq_source']:.3f} | {w['pesq_mpol']:.3f} | "
              f"{w['pesq_mpol'] - w['pesq_source']:+.3f} |")
    print(json.dumps({k: v for k, v in summary.items() if k != "windows"}, indent=2))
    return summary


if __name__ == "__main__":
    main()
