#!/usr/bin/env python3
"""Build the SpeechBrain pretrained folders of the published GTCRN checkpoints; optionally score.

This recipe produced the committed folders ``pretrained/gtcrn_vctk`` and ``pretrained/gtcrn_dns3``
(run it again to check them: an up-to-date folder is left untouched)::

    python recipes/prepare_gtcrn.py                      # -> pretrained/gtcrn_{vctk,dns3}
    python recipes/prepare_gtcrn.py --shared_models_dir=/path/to/shared/models/gtcrn \
        --save_root=/tmp/models
    python recipes/prepare_gtcrn.py --evaluate           # noisy vs VCTK vs DNS3 on real audio

Each folder gets ``hyperparams.yaml`` (a copy of ``hparams/export/gtcrn.yaml``),
``enhance_model.ckpt`` (the checkpoint's model state dict only, no optimizer state, checked to
load strictly into :class:`~speechbrain_mpol.models.gtcrn.GTCRN`) and the upstream ``LICENSE``
(MIT, Xiaobin-Rong/gtcrn). The model card ``README.md`` beside them is written by hand.

Authors
 * speechbrain-mpol developers
"""

from __future__ import annotations

import argparse
import hashlib
import io
import itertools
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from speechbrain_mpol.atomic import atomic_path
from speechbrain_mpol.models.gtcrn import GTCRN
from speechbrain_mpol.shared import REPO, find_shared_folder

logger = logging.getLogger(__name__)

#: Pretrained folder name -> checkpoint file in the shared GTCRN folder.
CHECKPOINTS = {
    "gtcrn_vctk": "model_trained_on_vctk.tar",
    "gtcrn_dns3": "model_trained_on_dns3.tar",
}
DEFAULT_SHARED = Path(find_shared_folder()) / "models" / "gtcrn"
DEFAULT_SAVE_ROOT = REPO / "pretrained"
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


def _same_state(path: Path, state: dict[str, torch.Tensor]) -> bool:
    """True if ``path`` holds exactly ``state`` (same keys, bit-identical tensors)."""
    if not path.is_file():
        return False
    saved = torch.load(path, map_location="cpu", weights_only=True)
    return saved.keys() == state.keys() and all(torch.equal(saved[k], v) for k, v in state.items())


def _same_bytes(path: Path, source: Path) -> bool:
    return path.is_file() and path.read_bytes() == source.read_bytes()


def prepare_gtcrn(
    shared_models_dir: str | os.PathLike = DEFAULT_SHARED,
    save_root: str | os.PathLike = DEFAULT_SAVE_ROOT,
) -> dict[str, Path]:
    """Build ``<save_root>/gtcrn_vctk`` and ``<save_root>/gtcrn_dns3``, keeping what is current.

    A file that already holds the right content (the same tensors, the same template or
    license bytes) is not rewritten, so checking the committed folders changes nothing;
    others are written atomically.

    Arguments
    ---------
    shared_models_dir : str or PathLike
        Folder holding ``model_trained_on_vctk.tar``, ``model_trained_on_dns3.tar`` and
        ``LICENSE`` (``../shared/models/gtcrn`` of the repository by default).
    save_root : str or PathLike
        Where the pretrained folders are written (``pretrained/`` of the repository).

    Returns
    -------
    dict
        Folder name (``gtcrn_vctk``, ``gtcrn_dns3``) -> folder path.

    Example
    -------
    >>> prepare_gtcrn("/nonexistent/gtcrn", "/tmp/unused")
    Traceback (most recent call last):
    ...
    FileNotFoundError: GTCRN checkpoints missing in /nonexistent/gtcrn: ...
    """
    shared = Path(shared_models_dir)
    missing = [f for f in [*CHECKPOINTS.values(), "LICENSE"] if not (shared / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"GTCRN checkpoints missing in {shared}: {', '.join(missing)}. Expected the "
            "published files of github.com/Xiaobin-Rong/gtcrn (checkpoints/"
            "model_trained_on_*.tar and LICENSE); pass their folder as shared_models_dir "
            "(--shared_models_dir)."
        )
    folders = {}
    for name, filename in CHECKPOINTS.items():
        folder = Path(save_root) / name
        state = load_gtcrn_state(shared / filename)
        written = []
        if not _same_state(folder / "enhance_model.ckpt", state):
            # Saved through a buffer: torch.save names the archive inside after the file it
            # writes, and the atomic temporary name is random; this keeps the bytes reproducible.
            buffer = io.BytesIO()
            torch.save(state, buffer)
            with atomic_path(folder / "enhance_model.ckpt") as tmp:
                Path(tmp).write_bytes(buffer.getvalue())
            written.append("enhance_model.ckpt")
        for target, source in (("hyperparams.yaml", TEMPLATE), ("LICENSE", shared / "LICENSE")):
            if not _same_bytes(folder / target, source):
                with atomic_path(folder / target) as tmp:
                    shutil.copyfile(source, tmp)
                written.append(target)
        logger.info("%s: %s", folder,
                    f"wrote {', '.join(written)}" if written else "up to date")
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


def shared_mixtures(
    audio_dir: str | os.PathLike, level_dbfs: float | None = None
) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """The 108 (SNR, noisy, clean) mixtures of the shared audio scored in docs/models/gtcrn.md."""
    audio_dir = Path(audio_dir)
    rng = np.random.default_rng(EVAL_SEED)
    pairs = []
    for speech, noise, snr in itertools.product(EVAL_SPEECH, EVAL_NOISES, EVAL_SNRS):
        noisy, clean = make_mixture(
            audio_dir / "speech" / f"{speech}.wav", audio_dir / "noise" / f"{noise}.wav",
            snr, rng, EVAL_SECONDS, level_dbfs,
        )
        pairs.append((snr, noisy, clean))
    return pairs


def example_pairs(example_dir: str | os.PathLike) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """The (SNR, noisy, clean) pairs of the committed example set (``examples/``)."""
    import csv

    import soundfile as sf

    example_dir = Path(example_dir)
    with open(example_dir / "examples.tsv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    pairs = []
    for row in rows:
        noisy, _ = sf.read(example_dir / "noisy" / f"{row['ID']}.flac", dtype="float32")
        clean, _ = sf.read(example_dir / "clean" / f"{row['ID']}.flac", dtype="float32")
        pairs.append((float(row["snr_db"]), noisy, clean))
    return pairs


def evaluate(
    folders: dict[str, Path], pairs: list[tuple[float, np.ndarray, np.ndarray]]
) -> dict[str, dict]:
    """Mean PESQ-WB / STOI / SI-SDR of noisy input and each model, per SNR and overall.

    Arguments
    ---------
    folders : dict
        Output of :func:`prepare_gtcrn`.
    pairs : list of (snr, noisy, clean)
        From :func:`shared_mixtures` or :func:`example_pairs`.

    Returns
    -------
    dict
        ``{snr or "all": {system: {metric: mean}}}``.
    """
    from speechbrain_mpol.models.interfaces import GTCRNEnhancement

    enhancers = {
        name: GTCRNEnhancement.from_hparams(source=str(folder), savedir=str(folder))
        for name, folder in folders.items()
    }
    rows = []
    for snr, noisy, clean in pairs:
        row = {"snr": snr, "noisy": score(clean, noisy)}
        for name, enhancer in enhancers.items():
            with torch.no_grad():
                out = enhancer.enhance_batch(torch.from_numpy(noisy)[None])[0].numpy()
            row[name] = score(clean, out)
        rows.append(row)
    systems = ["noisy", *enhancers]
    summary = {}
    for key in [*sorted({r["snr"] for r in rows}), "all"]:
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
                        help="where gtcrn_vctk/ and gtcrn_dns3/ are written")
    parser.add_argument("--evaluate", action="store_true",
                        help="score noisy / VCTK / DNS3 on real speech + real noise")
    parser.add_argument("--evaluate_examples", action="store_true",
                        help="score noisy / VCTK / DNS3 on the committed example set")
    parser.add_argument("--audio_dir", default=str(Path(find_shared_folder()) / "audio"),
                        help="shared audio folder used by --evaluate")
    parser.add_argument("--level_dbfs", type=float, default=None,
                        help="--evaluate: scale each mixture to this RMS level (dBFS)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    try:
        folders = prepare_gtcrn(args.shared_models_dir, args.save_root)
    except FileNotFoundError as err:
        folders = {name: Path(args.save_root) / name for name in CHECKPOINTS}
        if not all((f / "enhance_model.ckpt").is_file() for f in folders.values()):
            raise SystemExit(f"error: {err}") from None
        logger.warning("%s\nScoring the existing folders unchecked.", err)
    for name, folder in folders.items():
        print(f"{name}: {folder}")
    if args.evaluate:
        print_summary(evaluate(folders, shared_mixtures(args.audio_dir, args.level_dbfs)))
    if args.evaluate_examples:
        from speechbrain_mpol.example_set import example_folder

        print_summary(evaluate(folders, example_pairs(example_folder())))


if __name__ == "__main__":
    main()
