#!/usr/bin/env python3
"""Build the benchmark's shifted dev and test sets from the real corpus.

The sets, the material of each split and the mixing conventions are described in
:mod:`speechbrain_mpol.shift_sets`. Configurations are chosen on ``dev`` only; ``test`` is
for reporting. Sets already complete are skipped.

Usage::

    python recipes/prepare_benchmark.py [--corpus_folder <shared>/corpus]
        [--save_folder data/benchmark] [--splits dev test] [--shifts noise level ...]
        [--per_shift 48] [--seed 0] [--describe]

``--describe`` also prints, per set, the mean PESQ-WB of the noisy input, the mean mixing SNR
and the mean mixture level (a check that the sets are sensible; it takes a few minutes).

Authors
 * speechbrain-mpol developers
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import time

import torch

from speechbrain_mpol.audio import AudioError
from speechbrain_mpol.shared import find_shared_folder
from speechbrain_mpol.shift_sets import SHIFTS, SPLITS, describe_set, prepare_benchmark


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point; prints one line per set."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus_folder", default=None,
                        help="folder with MANIFEST.tsv (default: <shared folder>/corpus)")
    parser.add_argument("--save_folder", default="data/benchmark")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    parser.add_argument("--shifts", nargs="+", default=list(SHIFTS), choices=list(SHIFTS))
    parser.add_argument("--per_shift", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_seconds", type=float, default=6.0)
    parser.add_argument("--describe", action="store_true",
                        help="print noisy PESQ-WB, SNR and level per set")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    corpus = args.corpus_folder or os.path.join(find_shared_folder(), "corpus")
    start = time.perf_counter()
    try:
        manifests = prepare_benchmark(corpus, args.save_folder, args.splits, args.shifts,
                                      args.per_shift, args.seed, args.max_seconds)
    except (FileNotFoundError, ValueError, AudioError) as err:
        sys.exit(f"prepare_benchmark: {err}")
    print(f"built or found {len(manifests)} sets in {time.perf_counter() - start:.1f} s")
    for (split, shift), path in manifests.items():
        if args.describe:
            d = describe_set(path)
            print(f"{split:5s} {shift:12s} {d['utterances']:4d} utt {d['minutes']:5.2f} min  "
                  f"PESQ-WB noisy {d['pesq_noisy']:.3f}  SNR {d['snr_db']:5.2f} dB "
                  f"(measured {d['snr_measured_db']:5.2f})  "
                  f"level {d['level_dbfs']:6.2f} dBFS  {path}")
        else:
            with open(path, newline="") as handle:
                seconds = [float(r["duration"]) for r in csv.DictReader(handle)]
            print(f"{split:5s} {shift:12s} {len(seconds):4d} utt {sum(seconds) / 60:5.2f} min  "
                  f"{path}")
    return manifests


if __name__ == "__main__":
    main()
