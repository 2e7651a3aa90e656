#!/usr/bin/env python3
"""Speed and memory of the adaptation methods, side by side, plus chunked long-file memory.

Usage::

    python benchmarks/speed.py [--shared_folder ../shared] [--utterances 20] [--seconds 4]
                               [--device cpu|cuda] [--models metricgan,sepformer,gtcrn_vctk]
                               [--long_minutes 1,30] [--out results/speed]

Audio: ``--utterances`` mixtures of ``--seconds`` each, built (seeded) from the real speech in
``<shared>/audio/speech`` and noise in ``<shared>/audio/noise`` at 0-10 dB SNR; the same audio
for every model and method. Models: presets of ``hparams/models/`` (default: the project's
MetricGAN+ and SepFormer source models and GTCRN-VCTK). Methods: presets of
``hparams/methods/``: Source (no adaptation), MPol continual (``mpol_paper``, the authors'
schedule: accumulation 8, AdamW 5e-4, clip 0.1, source pull 0.2, crop 4 s), the same MPol
episodic with 1 and 5 steps, RemixIT (buffer 4). Each (model, method) runs in its own
subprocess, so its peak RSS (``VmHWM``: ``ru_maxrss`` of a child starts at its parent's peak on
Linux) is its own; one untimed utterance warms the model up first. Reported: real-time factor
(wall / audio seconds), audio seconds per wall second, forward and backward passes per
utterance (``adapter.counts``), peak RSS, wall time / Source's (wall: the fastest of
``--repeats`` passes over the audio, each from the source weights, as the machine may be
shared), and on CUDA the peak ``torch.cuda.max_memory_allocated`` and a batched MPol row (batch
16). Memory rows: peak RSS of ``enhance_file_chunked`` (10 s chunks, 1 s overlap) with
MetricGAN+ on a 1-minute and a 30-minute synthetic file.

Written: ``<out>/speed.csv`` and ``<out>/speed.json``; a table is printed with the two targets:
"CPU, MetricGAN+: continual MPol wall <= 2.5x Source" and "chunked peak memory flat within 10%
between a 1-minute and a 30-minute file".
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from speechbrain_mpol.atomic import atomic_path
from speechbrain_mpol.presets import load_enhancer, load_method, load_model_preset, model_hook

REPO = Path(__file__).resolve().parents[1]
SR = 16000
METHODS = ("source", "mpol_continual", "mpol_episodic_1", "mpol_episodic_5", "remixit")
#: The method each row runs: (preset of hparams/methods/, options).
METHOD_PRESETS = {
    "source": ("source", {}),
    "mpol_continual": ("mpol_paper", {}),
    "mpol_batched": ("mpol_paper", {}),
    "mpol_episodic_1": ("mpol_paper", {"mode": "episodic", "steps": 1}),
    "mpol_episodic_5": ("mpol_paper", {"mode": "episodic", "steps": 5}),
    "remixit": ("remixit", {}),
}
COLUMNS = ["model", "weights", "method", "device", "batch", "utterances", "audio_s", "wall_s",
           "rtf", "audio_s_per_wall_s", "forward_per_utt", "backward_per_utt", "peak_rss_mib",
           "cuda_peak_mib", "wall_vs_source"]


def peak_rss_mib() -> float:
    """This process's peak resident set in MiB (``VmHWM``; ``ru_maxrss`` where /proc is absent)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024 if sys.platform == "darwin" else 1024)


# --------------------------------------------------------------------------- material
def build_audio(shared: Path, count: int, seconds: float, seed: int = 0) -> list[torch.Tensor]:
    """``count`` noisy mixtures of ``seconds`` from the shared speech and noise recordings."""
    from speechbrain_mpol.audio import read_audio
    from speechbrain_mpol.mixing import mix_at_snr, peak_normalize

    speech_files = sorted((shared / "audio" / "speech").glob("*.wav"))
    noise_files = sorted((shared / "audio" / "noise").glob("*.wav"))
    if not speech_files or not noise_files:
        raise FileNotFoundError(f"no speech or noise wavs under {shared / 'audio'}")
    rng = np.random.default_rng(seed)
    size = int(seconds * SR)
    noises = [read_audio(p, SR).numpy() for p in noise_files]
    out = []
    for i in range(count):
        speech = read_audio(speech_files[i % len(speech_files)], SR).numpy()
        if len(speech) < size:
            speech = np.tile(speech, size // len(speech) + 1)
        start = int(rng.integers(0, len(speech) - size + 1))
        speech = speech[start:start + size]
        noisy, _ = mix_at_snr(speech, noises[i % len(noises)], float(rng.uniform(0, 10)), rng)
        (noisy,) = peak_normalize(noisy)
        out.append(torch.from_numpy(np.asarray(noisy, dtype=np.float32)))
    return out


def load_model(model: str, shared: Path, device: str):
    """The enhancer of model preset ``model`` and its preset."""
    preset = load_model_preset(model, shared)
    return load_enhancer(preset, {"device": device}), preset


def build_adapter(method: str, enhancer, preset: dict):
    """The adapter of one row's method (:data:`METHOD_PRESETS`)."""
    name, options = METHOD_PRESETS[method]
    return load_method(name, preset, sample_rate=SR, **options)["adapter"](
        enhancer=enhancer, hook=model_hook(enhancer, preset))


# --------------------------------------------------------------------------- workers
def run_method(args) -> dict:
    """One (model, method) configuration, timed; runs in its own process."""
    torch.set_num_threads(args.threads)
    shared = Path(args.shared_folder)
    audio = build_audio(shared, args.utterances, args.seconds)
    enhancer, preset = load_model(args.model, shared, args.device)
    weights = enhancer.model_source
    from speechbrain_mpol.inference import run_enhancer

    with torch.no_grad():  # warm-up (allocator, first-call overheads), before any snapshot
        run_enhancer(enhancer, audio[0][None].to(args.device), torch.ones(1, device=args.device),
                     SR)
    adapter = build_adapter(args.method, enhancer, preset)
    batch = 16 if args.method == "mpol_batched" else 1
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    wavs = [a.to(args.device) for a in audio]
    walls = []
    for _ in range(args.repeats):  # fastest of the repeats: the machine may be shared
        adapter.reset()
        adapter.counts.clear()
        start = time.perf_counter()
        for i in range(0, len(wavs), batch):
            group = torch.stack(wavs[i:i + batch])
            adapter(group, torch.ones(group.shape[0], device=args.device))
        if args.device == "cuda":
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - start)
    wall = min(walls)
    audio_s = len(audio) * args.seconds
    counts = adapter.counts
    return {
        "model": args.model, "weights": weights, "method": args.method, "device": args.device,
        "batch": batch, "utterances": len(audio), "audio_s": audio_s, "wall_s": round(wall, 3),
        "rtf": round(wall / audio_s, 4), "audio_s_per_wall_s": round(audio_s / wall, 2),
        "forward_per_utt": round(counts["forward"] / len(audio), 2),
        "backward_per_utt": round(counts["backward"] / len(audio), 2),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "cuda_peak_mib": (round(torch.cuda.max_memory_allocated() / 2**20, 1)
                          if args.device == "cuda" else ""),
    }


def write_long_file(path: Path, minutes: float, seed: int = 0) -> None:
    """A synthetic noisy file (amplitude-modulated tones in noise), written block by block."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    left, done = int(minutes * 60 * SR), 0
    with sf.SoundFile(path, "w", samplerate=SR, channels=1, subtype="PCM_16") as sink:
        while left > 0:
            n = min(left, 30 * SR)
            t = (done + np.arange(n)) / SR
            speechy = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
            sink.write((speechy + 0.05 * rng.standard_normal(n)).astype(np.float32))
            left, done = left - n, done + n


def run_chunked(args) -> dict:
    """Peak RSS of streaming a ``--minutes`` file through MetricGAN+ with enhance_file_chunked."""
    torch.set_num_threads(args.threads)
    from speechbrain_mpol.chunking import enhance_file_chunked
    from speechbrain_mpol.inference import run_enhancer

    enhancer, _ = load_model(args.model, Path(args.shared_folder), args.device)
    weights = enhancer.model_source
    with tempfile.TemporaryDirectory() as folder:
        noisy = Path(folder) / "long.wav"
        write_long_file(noisy, args.minutes)

        def enhance(wavs):
            return run_enhancer(enhancer, wavs.to(args.device),
                                torch.ones(1, device=args.device), SR).cpu()

        start = time.perf_counter()
        enhance_file_chunked(enhance, noisy, Path(folder) / "enhanced.wav")
        wall = time.perf_counter() - start
    audio_s = args.minutes * 60
    return {
        "model": args.model, "weights": weights,
        "method": f"chunked_file_{args.minutes:g}min", "device": args.device, "batch": 1,
        "utterances": 1, "audio_s": audio_s, "wall_s": round(wall, 3),
        "rtf": round(wall / audio_s, 4), "audio_s_per_wall_s": round(audio_s / wall, 2),
        "forward_per_utt": "", "backward_per_utt": "", "peak_rss_mib": round(peak_rss_mib(), 1),
        "cuda_peak_mib": (round(torch.cuda.max_memory_allocated() / 2**20, 1)
                          if args.device == "cuda" else ""),
    }


def in_subprocess(args, **worker) -> dict | None:
    """Run one worker configuration in a fresh interpreter; its JSON result, or None."""
    command = [sys.executable, __file__, "--worker", "--shared_folder", args.shared_folder,
               "--utterances", str(args.utterances), "--seconds", str(args.seconds),
               "--device", args.device, "--threads", str(args.threads),
               "--repeats", str(args.repeats)]
    for key, value in worker.items():
        command += [f"--{key}", str(value)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        print(f"  failed: {worker}\n{result.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- report
def print_table(rows: list[dict]) -> None:
    if not rows:
        print("nothing measured")
        return
    shown = ["model", "weights", "method", "batch", "rtf", "audio_s_per_wall_s",
             "forward_per_utt", "backward_per_utt", "peak_rss_mib", "cuda_peak_mib",
             "wall_vs_source"]
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in shown}
    print("  ".join(c.ljust(widths[c]) for c in shown))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in shown))


def targets(rows: list[dict], long_minutes: list[float], model: str) -> dict:
    """The two acceptance targets, measured on ``model`` (a MetricGAN+ preset)."""
    out = {}
    by = {(r["model"], r["method"]): r for r in rows}
    src, mpol = by.get((model, "source")), by.get((model, "mpol_continual"))
    if src and mpol:
        ratio = mpol["wall_s"] / src["wall_s"]
        out["metricgan_continual_vs_source"] = {
            "device": src["device"], "ratio": round(ratio, 3), "target": 2.5,
            "met": bool(ratio <= 2.5),
        }
    if len(long_minutes) < 2:
        return out
    short = by.get((model, f"chunked_file_{min(long_minutes):g}min"))
    long = by.get((model, f"chunked_file_{max(long_minutes):g}min"))
    if short and long:
        growth = long["peak_rss_mib"] / short["peak_rss_mib"] - 1
        out["chunked_peak_rss_growth"] = {
            "minutes": [min(long_minutes), max(long_minutes)],
            "peak_rss_mib": [short["peak_rss_mib"], long["peak_rss_mib"]],
            "growth": round(growth, 4), "target": 0.10, "met": bool(growth <= 0.10),
        }
    return out


def write_results(out: Path, rows: list[dict], args: argparse.Namespace,
                  long_minutes: list[float], models: list[str]) -> dict:
    """Write ``speed.csv`` and ``speed.json`` for ``rows`` (each file atomically).

    ``wall_vs_source`` is filled in for the method rows whose model's Source row is there.

    Returns
    -------
    dict
        The summary written to ``speed.json``.
    """
    source_wall = {r["model"]: r["wall_s"] for r in rows if r["method"] == "source"}
    for row in rows:
        ref = source_wall.get(row["model"])
        is_method = not row["method"].startswith("chunked")
        row["wall_vs_source"] = round(row["wall_s"] / ref, 2) if ref and is_method else ""
    with atomic_path(out / "speed.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    summary = {
        "settings": {k: getattr(args, k) for k in ("utterances", "seconds", "device", "threads",
                                                   "repeats", "shared_folder")},
        "torch": torch.__version__, "rows": rows,
        "targets": targets(rows, long_minutes, models[0] if models else ""),
    }
    with atomic_path(out / "speed.json") as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared_folder", default=None,
                        help="default: ../shared, found as in speechbrain_mpol.shared")
    parser.add_argument("--utterances", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed passes over the audio per configuration (fastest kept)")
    parser.add_argument("--models", default="metricgan_libri,sepformer_libri,gtcrn_vctk",
                        help="presets of hparams/models/; the first also runs the long files")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--long_minutes", default="1,30")
    parser.add_argument("--out", default=str(REPO / "results" / "speed"))
    # worker mode (one configuration per process)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--minutes", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from speechbrain_mpol.shared import find_shared_folder

    args.shared_folder = find_shared_folder(args.shared_folder or "../shared")

    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here; nothing measured (use --device cpu)")
        return None
    if args.worker:
        result = run_chunked(args) if args.minutes else run_method(args)
        print(json.dumps(result))
        return result

    models = [m for m in args.models.split(",") if m]
    methods = [m for m in args.methods.split(",") if m]
    if args.device == "cuda":
        methods.append("mpol_batched")
    long_minutes = [float(m) for m in args.long_minutes.split(",") if m]
    jobs = [{"model": model, "method": method} for model in models for method in methods]
    jobs += [{"model": models[0], "minutes": minutes} for minutes in long_minutes if models]
    rows, out = [], Path(args.out)
    for job in jobs:
        what = f"chunked file {job['minutes']:g} min" if "minutes" in job else job["method"]
        print(f"{job['model']} / {what} ...", flush=True)
        row = in_subprocess(args, **job)
        if row:
            rows.append(row)
            # after every row: a run cut short (a time-limited GPU lease) keeps what it measured
            write_results(out, rows, args, long_minutes, models)
    summary = write_results(out, rows, args, long_minutes, models)
    print()
    print_table(rows)
    for name, target in summary["targets"].items():
        print(f"{name}: {target}")
    print(f"written: {out / 'speed.csv'}, {out / 'speed.json'}")
    return summary


if __name__ == "__main__":
    main()
