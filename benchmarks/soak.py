#!/usr/bin/env python3
"""Soak test of continual MPol: a long stream of shifted utterances, PESQ over time vs Source.

Usage::

    python benchmarks/soak.py [--utterances 1000] [--model gtcrn_vctk|metricgan_source]
                              [--shared_folder ../shared] [--out results/soak]

Utterances are drawn on the fly (seeded) from the benchmark's shift builders
(``recipes/prepare_shifts.py``: speaker, noise, low_snr, reverb, level, bandlimit on the test
split's speech, noises and rooms) and streamed once through continual MPol (the authors'
schedule, with the project's guards: non-finite updates skipped, rollback when the objective
under the adapted weights exceeds the source's by 50%, EMA pull-back 0.2) and through the
source model. Written: ``soak.csv`` (per utterance: shift, PESQ source/MPol, objective) and
``soak.json`` (means over windows of 100, last-100 difference, NaN count, guard events); a
table is printed. Target: no NaN, and the last 100 utterances not worse than Source by more
than 0.05 PESQ on average.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "recipes"))

from prepare_shifts import SHIFT_FUNCTIONS, audio_folder, split_material  # noqa: E402

from speechbrain_mpol.adapter import MPolAdapter  # noqa: E402
from speechbrain_mpol.hooks import attach_hook  # noqa: E402
from speechbrain_mpol.manifest import write_rows  # noqa: E402
from speechbrain_mpol.metrics import pesq_wb  # noqa: E402
from speechbrain_mpol.shared import find_shared_folder  # noqa: E402

SHIFTS = ("speaker", "noise", "low_snr", "reverb", "level", "bandlimit")
MODELS = {
    "gtcrn_vctk": {
        "model_prepare": "gtcrn", "model_type": "gtcrn",
        "enhancer_class": "speechbrain_mpol.models.interfaces.GTCRNEnhancement",
        "model_source": "pretrained_models/gtcrn-vctk", "savedir": "pretrained_models/gtcrn-vctk",
        "params": [r"bn\d?\.", r"_ln\.", r"de_convs\.4\."],
    },
    "metricgan_source": {
        "model_type": "metricgan",
        "enhancer_class": "speechbrain.inference.enhancement.SpectralMaskEnhancement",
        "model_source": "pretrained/metricgan_source", "savedir": "pretrained/metricgan_source",
        "params": ["linear2", "Learnable_sigmoid"],
    },
}


def stream(shared_folder: str, count: int, seconds: float, seed: int):
    """Yield ``(shift, noisy, clean)`` for ``count`` seeded utterances of the test material."""
    material = split_material(audio_folder(shared_folder), "test")
    rng = np.random.default_rng(seed)
    for i in range(count):
        shift = SHIFTS[i % len(SHIFTS)] if i < len(SHIFTS) else SHIFTS[rng.integers(len(SHIFTS))]
        speech = material.speech[int(rng.integers(len(material.speech)))]
        mix = SHIFT_FUNCTIONS[shift](speech, material, np.random.default_rng([seed, i]), seconds)
        yield shift, torch.from_numpy(mix.noisy).float(), mix.clean


def main() -> dict:
    """Run the soak test; returns the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--utterances", type=int, default=1000)
    parser.add_argument("--model", choices=sorted(MODELS), default="gtcrn_vctk")
    parser.add_argument("--shared_folder", default=find_shared_folder())
    parser.add_argument("--seconds", type=float, default=3.0, help="speech crop per utterance")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--reference", default="self", help="self | noisy_wiener | ...")
    parser.add_argument("--rollback_threshold", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/soak")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from adapt import load_model

    cfg = {**MODELS[args.model], "shared_folder": args.shared_folder,
           "pretrained_root": "pretrained_models"}
    enhancer = load_model(cfg, {})
    adapter = MPolAdapter(
        enhancer, attach_hook(enhancer, cfg["model_type"]), params=cfg["params"],
        reference=args.reference, mode="continual", accumulation=8, clip_grad_norm=0.1,
        source_pull=0.2,
        opt_class=lambda p: torch.optim.AdamW(p, lr=args.lr),
        rollback_threshold=args.rollback_threshold,
    )
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
        "model": args.model, "reference": args.reference, "lr": args.lr,
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
