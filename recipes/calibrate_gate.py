#!/usr/bin/env python3
"""Calibrate and choose the shift gate of ``mpol_gated`` on the DEV split.

Usage::

    python recipes/calibrate_gate.py hparams/calibrate_gate.yaml [--models=[gtcrn_vctk]]

What is run and chosen: ``hparams/calibrate_gate.yaml`` and ``speechbrain_mpol/gate.py``.
Writes ``<output_folder>/gate_<model>.md`` and ``.csv`` and prints, per model, the line to put
in its preset.

Authors
 * speechbrain-mpol developers
"""

from __future__ import annotations

import sys

from speechbrain_mpol.gate import calibrate
from speechbrain_mpol.presets import load_run_hparams


def main(argv: list[str]) -> dict:
    """Run the calibration; returns the chosen quantile and threshold per model."""
    hparams, run_opts = load_run_hparams(argv)
    try:
        chosen = calibrate(hparams, run_opts)
    except (OSError, ValueError) as err:
        sys.exit(f"error: {err}")
    for model, best in chosen.items():
        line = ("no quantile qualifies" if best is None else
                f"method_options: mpol_gated: {{gate_threshold: {best['gate_threshold']:.6g}}}"
                f"  (quantile {best['quantile']})")
        print(f"{model}: {line}")
    return chosen


if __name__ == "__main__":
    main(sys.argv[1:])
