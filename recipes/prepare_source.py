#!/usr/bin/env python3
"""Build the synthetic source domain: TTS voices mixed with stationary synthetic noise.

Each utterance is one sentence (composed by :mod:`speechbrain_mpol.synthetic`) spoken by one
of its TTS voices, set to a random level, mixed with one synthetic noise at an SNR uniform in
0..15 dB, and scaled with ``peak_normalize(noisy, clean, peak=0.95)``. The ``train``,
``valid`` and ``test`` splits use different random streams, so they differ in sentences,
voice variation, noises and SNRs. Output layout::

    save_folder/
        train.csv valid.csv test.csv          ID,duration,noisy_wav,clean_wav (absolute)
        train_meta.csv ...                    ID,voice,noise,snr_db,level_dbfs,text
        <split>/noisy/ID.wav  <split>/clean/ID.wav
        tts_cache/                            clean TTS output, reused on rebuilds

Usage::

    python recipes/prepare_source.py --save_folder data/source

Example
-------
>>> import tempfile
>>> folder = tempfile.mkdtemp()
>>> prepare_source(folder, n_train=2, n_valid=1, n_test=1, num_workers=0)  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import multiprocessing
import os
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speechbrain_mpol.audio import write_audio  # noqa: E402
from speechbrain_mpol.manifest import write_rows  # noqa: E402
from speechbrain_mpol.mixing import mix_at_snr, peak_normalize, set_level  # noqa: E402
from speechbrain_mpol.synthetic import (  # noqa: E402
    NOISE_KINDS,
    VOICES,
    compose_sentence,
    synth_noise,
    synth_speech,
)

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
MANIFEST_HEADER = ["ID", "duration", "noisy_wav", "clean_wav"]
META_HEADER = ["ID", "voice", "noise", "snr_db", "level_dbfs", "text"]
SAMPLE_RATE = 16000
MIN_SECONDS, MAX_SECONDS = 1.5, 4.0
SNR_RANGE = (0.0, 15.0)
#: Speech level range before mixing (dBFS); the peak normalisation then caps loud mixtures.
LEVEL_RANGE = (-32.0, -20.0)


def _cached_speech(cache: Path, text: str, voice, tts_seed: int) -> np.ndarray:
    """TTS output for (text, voice, seed), synthesised once and then read from ``cache``."""
    key = hashlib.sha1(f"{voice.name}|{tts_seed}|{text}".encode()).hexdigest()[:20]
    path = cache / f"{voice.name}_{key}.wav"
    if not path.is_file():
        wav = synth_speech(text, voice, SAMPLE_RATE, np.random.default_rng(tts_seed))
        write_audio(path, wav, SAMPLE_RATE, subtype="PCM_16")
    # Always use the stored 16-bit version, so a rebuild from the cache gives identical files.
    data, _ = sf.read(str(path), dtype="float32")
    return data.astype(np.float64)


def _make_utterance(job: tuple) -> tuple[list, list]:
    """Create one noisy/clean pair; ``job`` = (save_folder, split, split_index, index, seed)."""
    folder, split, split_index, index, seed = job
    folder = Path(folder)
    # One independent stream per utterance: the result does not depend on worker scheduling.
    rng = np.random.default_rng([seed, split_index, index])
    # Round-robin keeps the voices balanced; the offset varies which voice starts each split.
    voice = VOICES[(index + split_index) % len(VOICES)]
    max_len = int(MAX_SECONDS * SAMPLE_RATE)
    texts, pieces = [], []
    while sum(len(p) for p in pieces) < MIN_SECONDS * SAMPLE_RATE:
        text = compose_sentence(rng)
        texts.append(text)
        if pieces:  # a short pause between concatenated sentences
            pieces.append(np.zeros(int(rng.uniform(0.1, 0.3) * SAMPLE_RATE)))
        pieces.append(_cached_speech(folder / "tts_cache", text, voice,
                                     int(rng.integers(2**31))))
    speech = np.concatenate(pieces)
    if len(speech) > max_len:
        start = int(rng.integers(0, len(speech) - max_len + 1))
        speech = speech[start : start + max_len]
    level = float(rng.uniform(*LEVEL_RANGE))
    speech = set_level(speech, level)
    kind = str(NOISE_KINDS[int(rng.integers(len(NOISE_KINDS)))])
    noise = synth_noise(kind, len(speech), SAMPLE_RATE, rng).astype(np.float64)
    snr = float(rng.uniform(*SNR_RANGE))
    noisy, _ = mix_at_snr(speech, noise, snr, rng)
    noisy, clean = peak_normalize(noisy, speech, peak=0.95)

    uid = f"{split}_{index:05d}_{voice.name}_{kind}"
    noisy_path = (folder / split / "noisy" / f"{uid}.wav").resolve()
    clean_path = (folder / split / "clean" / f"{uid}.wav").resolve()
    write_audio(noisy_path, noisy, SAMPLE_RATE, subtype="PCM_16")
    write_audio(clean_path, clean, SAMPLE_RATE, subtype="PCM_16")
    row = [uid, f"{len(noisy) / SAMPLE_RATE:.4f}", str(noisy_path), str(clean_path)]
    meta = [uid, voice.name, kind, f"{snr:.2f}", f"{level:.2f}", " ".join(texts)]
    return row, meta


def prepare_source(
    save_folder: str | os.PathLike,
    n_train: int = 1500,
    n_valid: int = 100,
    n_test: int = 100,
    seed: int = 1234,
    num_workers: int = 2,
) -> dict[str, Path]:
    """Create the source-domain splits and their manifests; skip splits already built.

    Arguments
    ---------
    save_folder : str or PathLike
        Output folder (created if missing).
    n_train, n_valid, n_test : int
        Number of utterances per split.
    seed : int
        Master seed; each utterance uses the stream ``(seed, split, index)``.
    num_workers : int
        Size of the multiprocessing pool; 0 runs in this process.

    Returns
    -------
    dict
        Split name -> path of its CSV manifest.

    Example
    -------
    >>> manifests = prepare_source("data/source", 4, 2, 2)  # doctest: +SKIP
    >>> sorted(manifests)  # doctest: +SKIP
    ['test', 'train', 'valid']
    """
    folder = Path(save_folder)
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {"train": n_train, "valid": n_valid, "test": n_test}
    manifests = {split: folder / f"{split}.csv" for split in SPLITS}
    for split_index, split in enumerate(SPLITS):
        if manifests[split].is_file():
            logger.info("%s exists, skipping the %s split", manifests[split], split)
            continue
        jobs = [(str(folder), split, split_index, i, seed) for i in range(sizes[split])]
        if num_workers > 0:
            with multiprocessing.Pool(num_workers) as pool:
                results = list(pool.imap(_make_utterance, jobs, chunksize=8))
        else:
            results = [_make_utterance(job) for job in jobs]
        write_rows(folder / f"{split}_meta.csv", [m for _, m in results], META_HEADER)
        write_rows(manifests[split], [r for r, _ in results], MANIFEST_HEADER)
        hours = sum(float(r[1]) for r, _ in results) / 3600
        logger.info("%s: %d utterances, %.2f h", split, len(results), hours)
    return manifests


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--save_folder", default="data/source")
    parser.add_argument("--n_train", type=int, default=1500)
    parser.add_argument("--n_valid", type=int, default=100)
    parser.add_argument("--n_test", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--num_workers", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    prepare_source(args.save_folder, args.n_train, args.n_valid, args.n_test, args.seed,
                   args.num_workers)


if __name__ == "__main__":
    main()
