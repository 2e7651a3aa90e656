#!/usr/bin/env python3
"""Sweep MPol configurations on the DEV split only, to choose each model's default.

Usage::

    python recipes/sweep.py hparams/sweep.yaml [--model=gtcrn_vctk] [--max_per_shift=8]

What is swept and written: ``speechbrain_mpol/sweep.py``. The winner goes into the model's
preset (``method_options: mpol_default`` in ``hparams/models/<model>.yaml``).

Authors
 * speechbrain-mpol developers
"""

from __future__ import annotations

import sys
from pathlib import Path

from speechbrain_mpol.presets import load_run_hparams
from speechbrain_mpol.sweep import run_sweep


def main(argv: list[str]) -> list[dict]:
    """Run the sweep; returns the ranked table."""
    hparams, run_opts = load_run_hparams(argv)
    try:
        ranked = run_sweep(hparams, run_opts)
    except (OSError, ValueError) as err:
        sys.exit(f"error: {err}")
    print((Path(hparams["output_folder"]) / f"sweep_{hparams['model']}.md").read_text())
    return ranked


if __name__ == "__main__":
    main(sys.argv[1:])
