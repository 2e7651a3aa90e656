"""Figures of a run: mean scores per system, per-utterance gains, mask-value histograms."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from speechbrain_mpol.atomic import atomic_path  # noqa: E402

SYSTEMS = (("noisy", "noisy_"), ("source", "source_"), ("adapted", ""))


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_results(rows: Sequence[Mapping], out_dir: str | os.PathLike) -> list[Path]:
    """Write ``scores.png`` (mean metric per system) and ``pesq_gain.png`` (per utterance).

    Arguments
    ---------
    rows : sequence of mapping
        Per-utterance rows of ``results.csv`` (keys ``pesq``, ``source_pesq``, ...).
    out_dir : str or PathLike
        Folder for the PNG files.

    Returns
    -------
    list of Path
        The files written.
    """
    out_dir = Path(out_dir)
    written = []
    metrics = [m for m in ("pesq", "stoi", "estoi", "si_sdr") if any(m in r for r in rows)]
    if metrics:
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3))
        for ax, metric in zip(np.atleast_1d(axes), metrics, strict=False):
            names, means = [], []
            for name, prefix in SYSTEMS:
                values = [r.get(prefix + metric, math.nan) for r in rows]
                if not all(math.isnan(v) for v in values):
                    names.append(name)
                    means.append(np.nanmean(values))
            ax.bar(names, means, color=["0.6", "tab:blue", "tab:orange"][: len(names)])
            ax.set_title(metric.upper().replace("_", "-"))
        fig.suptitle("mean scores")
        _save(fig, out_dir / "scores.png")
        written.append(out_dir / "scores.png")
    if any("source_pesq" in r for r in rows):
        gain = [r.get("pesq", math.nan) - r.get("source_pesq", math.nan) for r in rows]
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.bar(range(len(gain)), gain, color=["tab:green" if g > 0 else "tab:red" for g in gain])
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel("utterance (stream order)")
        ax.set_ylabel("PESQ adapted - source")
        _save(fig, out_dir / "pesq_gain.png")
        written.append(out_dir / "pesq_gain.png")
    return written


def plot_mask_histograms(
    histograms: Mapping[str, np.ndarray], path: str | os.PathLike, title: str = ""
) -> Path:
    """Overlay value histograms of masks (e.g. source, adapted, reference, oracle).

    Arguments
    ---------
    histograms : mapping of str to numpy.ndarray
        Label -> flat array of mask values.
    path : str or PathLike
        PNG file to write.
    title : str
        Figure title.

    Returns
    -------
    Path
        The file written.
    """
    fig, ax = plt.subplots(figsize=(5, 3.2))
    bins = np.linspace(0, 1.2, 61)
    for label, values in histograms.items():
        ax.hist(np.clip(values, 0, 1.2), bins=bins, histtype="step", density=True, label=label)
    ax.set_xlabel("mask value (linear gain)")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend()
    path = Path(path)
    _save(fig, path)
    return path


def plot_deltas(table: Sequence[Mapping], model: str, path: str | os.PathLike) -> Path | None:
    """Per-shift bars of the PESQ difference to Source, one bar per method.

    Arguments
    ---------
    table : sequence of mapping
        Benchmark summary rows with ``model``, ``shift``, ``method`` and ``d_pesq``.
    model : str
        The model whose rows are drawn.
    path : str or PathLike
        PNG file to write.

    Returns
    -------
    Path or None
        The file written (None when the model has no adapted method).
    """
    rows = [e for e in table if e["model"] == model and e["method"] != "source"]
    if not rows:
        return None
    shifts = list(dict.fromkeys(e["shift"] for e in rows))
    methods = list(dict.fromkeys(e["method"] for e in rows))
    fig, ax = plt.subplots(figsize=(1.3 * len(shifts) + 2, 3.4))
    width = 0.8 / len(methods)
    for j, method in enumerate(methods):
        values = [next((e.get("d_pesq", math.nan) for e in rows
                        if e["shift"] == s and e["method"] == method), math.nan) for s in shifts]
        ax.bar(np.arange(len(shifts)) + j * width, values, width, label=method)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(shifts)) + 0.4 - width / 2, shifts)
    ax.set_ylabel("PESQ-WB, method - Source")
    ax.set_title(model)
    ax.legend(fontsize=7, ncol=2)
    path = Path(path)
    _save(fig, path)
    return path
