#!/usr/bin/env python3
"""Build the embedded example set ``examples/`` from the redistributable corpus material.

Usage::

    python recipes/prepare_example.py                        # rebuilds examples/ in place
    python recipes/prepare_example.py --output_folder=/tmp/examples --shared_folder=/data/shared

Twelve real noisy/clean pairs (LibriSpeech dev speech, CC BY 4.0; ESC-50 dev noises whose own
license is CC0 or CC BY; 0/5/10 dB; at most 4 s; 16 kHz FLAC) with ``examples.tsv``,
``ATTRIBUTION.md`` and ``LICENSE``: see ``speechbrain_mpol/example_set.py``. Deterministic:
rebuilding the committed set keeps every file; a file with other content is an error unless
``--overwrite``.

Authors
 * speechbrain-mpol developers
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from speechbrain_mpol.corpus import read_corpus
from speechbrain_mpol.example_set import EXAMPLE_FOLDER, plan_examples, write_example_set
from speechbrain_mpol.shared import find_shared_folder


def main(argv: list[str] | None = None) -> dict[str, int]:
    """Parse the arguments, plan the pairs, write them; returns the file counts."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared_folder", default="../shared",
                        help="folder holding corpus/ (default: ../shared beside the checkout)")
    parser.add_argument("--output_folder", default=str(EXAMPLE_FOLDER))
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files whose content differs, remove stray files")
    args = parser.parse_args(argv)
    corpus_folder = Path(find_shared_folder(args.shared_folder)) / "corpus"
    try:
        plans = plan_examples(read_corpus(corpus_folder), args.pairs, args.seed)
        counts = write_example_set(plans, corpus_folder, args.output_folder, args.seed,
                                   args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        sys.exit(f"error: {err}")
    print(f"{args.output_folder}: {len(plans)} pairs; files written {counts['written']}, "
          f"kept {counts['kept']}, removed {counts['removed']}")
    return counts


if __name__ == "__main__":
    main()
