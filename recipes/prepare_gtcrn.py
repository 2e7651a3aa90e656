#!/usr/bin/env python3
"""Build SpeechBrain pretrained folders for the published GTCRN checkpoints; optionally score them.

Usage::

    python recipes/prepare_gtcrn.py                      # -> pretrained_models/gtcrn-{vctk,dns3}
    python recipes/prepare_gtcrn.py --shared_models_dir=/path/to/shared/models/gtcrn
    python recipes/prepare_gtcrn.py --evaluate           # noisy vs VCTK vs DNS3 on real audio

Each folder gets ``hyperparams.yaml`` (from ``hparams/export/gtcrn.yaml``),
``enhance_model.ckpt`` (the checkpoint's state dict, checked to load strictly into
:class:`~speechbrain_mpol.models.gtcrn.GTCRN`), the upstream ``LICENSE`` and ``source.json``
(where the weights came from). The weights are third-party (MIT, Xiaobin-Rong/gtcrn):
``pretrained_models/`` is git-ignored and must never be committed.

Authors
 * speechbrain-mpol developers
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from speechbrain_mpol.models.gtcrn import GTCRN  # noqa: E402
from speechbrain_mpol.shared import find_shared_folder  # noqa: E402

logger = logging.getLogger(__name__)

#: Pretrained folder name -> checkpoint file in the shared GTCRN folder.
CHECKPOINTS = {
    "gtcrn-vctk": "model_trained_on_vctk.tar",
    "gtcrn-dns3": "model_trained_on_dns3.tar",
}
DEFAULT_SHARED = Path(find_shared_folder()) / "models" / "gtcrn"
DEFAULT_SAVE_ROOT = REPO / "pretrained_models"
TEMPLATE = REPO / "hparams" / "export" / "gtcrn.yaml"
SAMPLE_RATE = 16000

#: Real material of ``--evaluate``: 6 speech files (cropped to EVAL_SECONDS) x 6 real noises
#: x 3 SNRs, one seeded generator for the noise offsets.
EVAL_SPEECH = (
    "single_mic_example1",
    "single_mic_example5",
    "single_mic_example6",
    "timit_spk1_snt2",
    "timit_spk2_snt1",
    "lj050_0131",
)
EVAL_NOISES = ("noise1", "noise2", "noise3", "noise4", "noise5", "diffuse_ch0")
EVAL_SNRS = (0.0, 5.0, 10.0)
EVAL_SECONDS = 4.0
EVAL_SEED = 0


def sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fin:
        for block in iter(lambda: fin.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_gtcrn_state(checkpoint: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read the state dict of a published GTCRN checkpoint and check it loads strictly.

    Arguments
    ---------
    checkpoint : str or PathLike
        A ``model_trained_on_*.tar`` file: a torch dict with a ``model`` state dict.

    Returns
    -------
    dict
        The state dict.
    """
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = ckpt["model"]
    # SpeechBrain's Pretrainer loads with strict=False and only logs mismatches; a strict
    # load here makes a wrong checkpoint or a changed network fail at build time instead.
    GTCRN().load_state_dict(state, strict=True)
    return state


def prepare_gtcrn(
    shared_models_dir: str | os.PathLike = DEFAULT_SHARED,
    save_root: str | os.PathLike = DEFAULT_SAVE_ROOT,
) -> dict[str, Path]:
    """Build ``<save_root>/gtcrn-vctk`` and ``<save_root>/gtcrn-dns3``, skipping done work.

    A folder counts as done when its ``source.json`` records the sha256 of the same
    checkpoint and hyperparameter template, and its files are present.

    Arguments
    ---------
    shared_models_dir : str or PathLike
        Folder holding ``model_trained_on_vctk.tar``, ``model_trained_on_dns3.tar`` and
        ``LICENSE`` (``../shared/models/gtcrn`` of the repository by default).
    save_root : str or PathLike
        Where the pretrained folders are written.

    Returns
    -------
    dict
        Folder name (``gtcrn-vctk``, ``gtcrn-dns3``) -> folder path.

    Example
    -------
    >>> prepare_gtcrn("/nonexistent/gtcrn", "/tmp/unused")
    Traceback (most recent call last):
    ...
    FileNotFoundError: GTCRN checkpoints missing in /nonexistent/gtcrn: ...
    """
    shared = Path(shared_models_dir)
    missing = [f for f in CHECKPOINTS.values() if not (shared / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"GTCRN checkpoints missing in {shared}: {', '.join(missing)}. Expected the "
            "published files of github.com/Xiaobin-Rong/gtcrn (checkpoints/"
            "model_trained_on_*.tar); pass their folder as shared_models_dir "
            "(--shared_models_dir)."
        )
    template_sha = sha256(TEMPLATE)
    folders = {}
    for name, filename in CHECKPOINTS.items():
        source = shared / filename
        folder = Path(save_root) / name
        record = {
            "checkpoint": str(source.resolve()),
            "checkpoint_sha256": sha256(source),
            "hparams_template_sha256": template_sha,
            "upstream": "https://github.com/Xiaobin-Rong/gtcrn (MIT)",
        }
        stamp = folder / "source.json"
        done = (
            stamp.is_file()
            and (folder / "hyperparams.yaml").is_file()
            and (folder / "enhance_model.ckpt").is_file()
            and json.loads(stamp.read_text()) == record
        )
        if done:
            logger.info("%s: up to date", folder)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            state = load_gtcrn_state(source)
            torch.save(state, folder / "enhance_model.ckpt")
            shutil.copyfile(TEMPLATE, folder / "hyperparams.yaml")
            if (shared / "LICENSE").is_file():
                shutil.copyfile(shared / "LICENSE", folder / "LICENSE")
            # Written last, so an interrupted build is redone next time.
            stamp.write_text(json.dumps(record, indent=2) + "\n")
            logger.info("%s: built from %s", folder, source)
        folders[name] = folder
    return folders


# --------------------------------------------------------------------------- evaluation
def score(clean: np.ndarray, estimate: np.ndarray, sample_rate: int = 16000) -> dict[str, float]:
    """Wide-band PESQ, STOI and SI-SDR of ``estimate`` against ``clean`` (shared metrics)."""
    from speechbrain_mpol.metrics import evaluate_pair

    n = min(len(clean), len(estimate))
    scores = evaluate_pair(clean[:n], estimate[:n], sample_rate, composite_measures=False)
    return {k: scores[k] for k in ("pesq", "stoi", "si_sdr")}



def make_mixture(
    speech_path: str | os.PathLike,
    noise_path: str | os.PathLike,
    snr: float,
    rng: np.random.Generator,
    max_seconds: float | None = None,
    level_dbfs: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Real speech + real noise at ``snr`` dB, peak-limited; returns (noisy, clean) float32.

    With ``level_dbfs`` the mixture (and the reference, by the same factor) is first scaled
    to that RMS level; otherwise the speech file's own level is kept.
    """
    from speechbrain_mpol.audio import read_audio
    from speechbrain_mpol.mixing import mix_at_snr, peak_normalize, rms

    speech = read_audio(speech_path, SAMPLE_RATE).numpy().astype(np.float64)
    if max_seconds is not None:
        speech = speech[: int(max_seconds * SAMPLE_RATE)]
    noise = read_audio(noise_path, SAMPLE_RATE).numpy().astype(np.float64)
    noisy, _ = mix_at_snr(speech, noise, snr, rng)
    if level_dbfs is not None:
        gain = 10.0 ** (level_dbfs / 20.0) / max(rms(noisy), 1e-12)
        noisy, speech = noisy * gain, speech * gain
    noisy, speech = peak_normalize(noisy, speech)
    return noisy.astype(np.float32), speech.astype(np.float32)


def evaluate(
    folders: dict[str, Path], audio_dir: str | os.PathLike, level_dbfs: float | None = None
) -> dict[str, dict]:
    """Mean PESQ-WB / STOI / SI-SDR of noisy input and each model, per SNR and overall.

    Arguments
    ---------
    folders : dict
        Output of :func:`prepare_gtcrn`.
    audio_dir : str or PathLike
        The shared audio folder (``speech/``, ``noise/``).
    level_dbfs : float, optional
        Scale every mixture to this RMS level (default: the speech files' own levels).

    Returns
    -------
    dict
        ``{snr or "all": {system: {metric: mean}}}``.
    """
    from speechbrain_mpol.models.interfaces import GTCRNEnhancement

    audio_dir = Path(audio_dir)
    enhancers = {
        name: GTCRNEnhancement.from_hparams(source=str(folder), savedir=str(folder))
        for name, folder in folders.items()
    }
    rng = np.random.default_rng(EVAL_SEED)
    rows = []
    for speech, noise, snr in itertools.product(EVAL_SPEECH, EVAL_NOISES, EVAL_SNRS):
        noisy, clean = make_mixture(
            audio_dir / "speech" / f"{speech}.wav", audio_dir / "noise" / f"{noise}.wav",
            snr, rng, EVAL_SECONDS, level_dbfs,
        )
        row = {"snr": snr, "noisy": score(clean, noisy)}
        for name, enhancer in enhancers.items():
            with torch.no_grad():
                out = enhancer.enhance_batch(torch.from_numpy(noisy)[None])[0].numpy()
            row[name] = score(clean, out)
        rows.append(row)
    systems = ["noisy", *enhancers]
    summary = {}
    for key in [*EVAL_SNRS, "all"]:
        subset = [r for r in rows if key == "all" or r["snr"] == key]
        summary[key] = {
            s: {m: float(np.mean([r[s][m] for r in subset])) for m in ("pesq", "stoi", "si_sdr")}
            for s in systems
        }
        summary[key]["n"] = len(subset)
    return summary


def print_summary(summary: dict[str, dict]) -> None:
    """Print the evaluation as a markdown table."""
    print("| SNR | system | PESQ-WB | STOI | SI-SDR (dB) |")
    print("|---|---|---|---|---|")
    for key, systems in summary.items():
        label = "all" if key == "all" else f"{key:g} dB"
        for system, metrics in systems.items():
            if system == "n":
                continue
            print(f"| {label} (n={systems['n']}) | {system} | {metrics['pesq']:.3f} | "
                  f"{metrics['stoi']:.3f} | {metrics['si_sdr']:.2f} |")


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared_models_dir", default=str(DEFAULT_SHARED),
                        help="folder with model_trained_on_{vctk,dns3}.tar")
    parser.add_argument("--save_root", default=str(DEFAULT_SAVE_ROOT),
                        help="where gtcrn-vctk/ and gtcrn-dns3/ are written")
    parser.add_argument("--evaluate", action="store_true",
                        help="score noisy / VCTK / DNS3 on real speech + real noise")
    parser.add_argument("--audio_dir", default=str(Path(find_shared_folder()) / "audio"),
                        help="shared audio folder used by --evaluate")
    parser.add_argument("--level_dbfs", type=float, default=None,
                        help="--evaluate: scale each mixture to this RMS level (dBFS)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    folders = prepare_gtcrn(args.shared_models_dir, args.save_root)
    for name, folder in folders.items():
        print(f"{name}: {folder}")
    if args.evaluate:
        print_summary(evaluate(folders, args.audio_dir, args.level_dbfs))


if __name__ == "__main__":
    main()
