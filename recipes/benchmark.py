#!/usr/bin/env python3
"""Domain-shift benchmark: every model x shift x method, scored against clean references.

Usage::

    python recipes/prepare_benchmark.py              # the shifted dev and test sets, once
    python recipes/benchmark.py hparams/benchmark.yaml
    python recipes/benchmark.py hparams/benchmark.yaml --max_per_shift=4 \
        --methods=[source,mpol_default] --models=[gtcrn_vctk]

What is run and written: ``speechbrain_mpol/benchmark.py``. Configurations are chosen on the
dev split (``recipes/sweep.py``); the test split is for reporting.

Authors
 * speechbrain-mpol developers
"""

from __future__ import annotations

import sys
from pathlib import Path

from speechbrain_mpol.benchmark import run_benchmark
from speechbrain_mpol.presets import load_run_hparams


def main(argv: list[str]) -> list[dict]:
    """Run the benchmark; returns the summary table."""
    hparams, run_opts = load_run_hparams(argv)
    try:
        table = run_benchmark(hparams, run_opts)
    except (OSError, ValueError) as err:
        sys.exit(f"error: {err}")
    print((Path(hparams["output_folder"]) / "summary.md").read_text())
    return table


if __name__ == "__main__":
    main(sys.argv[1:])
