#!/usr/bin/env python3
"""Build seeded domain-shifted test sets with clean references from the real material.

The real material in ``<shared_folder>/audio`` (``speech/``, ``noise/``, ``rir/``, 16 kHz mono)
is split into a ``dev`` split (for choosing configurations) and a ``test`` split (for
reporting) that share no utterance, speaker, noise recording or room (see :data:`SPLITS`).
Every set is one (split, shift) pair; the shifts are:

``in_domain``
    Synthetic TTS voices + synthetic stationary noise at 0..15 dB, made exactly like the
    source training material of ``prepare_source.py`` (same lengths and speech levels) but
    from seeds >= 10_000, which that recipe never uses. The "must not hurt" control.
``speaker``
    Real speech + synthetic noise, 0..15 dB (new speakers and recording conditions only).
``noise``
    Real speech + real noise, 0..15 dB.
``low_snr``
    Real speech + real noise, -5..0 dB.
``reverb``
    Real speech convolved with a real RIR (direct-path aligned, the RIR scaled so that its
    direct path has unit gain) + real noise at 5..15 dB relative to the reverberant speech.
    The clean reference is the DRY speech: the models denoise, they do not dereverberate, so
    this shift measures robustness to rooms, and the reverberation counts as distortion.
``level``
    The ``noise`` mixtures (same draws, so the two sets are paired), with mixture and clean
    scaled by one common factor to put the mixture at exactly -40 dBFS RMS.
``bandlimit``
    The ``noise`` mixtures (same draws), mixture and clean band-limited to 300-3400 Hz.

Real speech is cropped to its first ``max_seconds`` and peak-normalised to 0.5 before mixing;
every mixture (except ``level``, whose level is the point) is then scaled with
``peak_normalize(noisy, clean, peak=0.95)``, which keeps the SNR. Output layout::

    save_folder/<split>/<shift>/noisy/ID.wav
    save_folder/<split>/<shift>/clean/ID.wav
    save_folder/<split>/<shift>/<split>_<shift>.csv

The CSV has the SpeechBrain columns ``ID,duration,noisy_wav,clean_wav`` (absolute paths,
seconds) followed by the mixing parameters ``speech,noise,snr_db,rir,noise_offset,text``:
files relative to the audio folder (``synthetic:<kind>`` / ``tts:<voice>`` for synthetic
material), the SNR in dB at mixing time relative to the speech as it is in the mixture (for
``reverb`` the reverberant speech, so noisy - clean also holds the reverberation; for
``bandlimit`` the broadband SNR before band-limiting, which changes the in-band SNR), the
noise crop offset in samples and, for TTS speech, the text.

Every utterance draws from its own random stream ``(10_000 + seed, split, shift, index)``,
so a set does not depend on which other sets are built. A set whose manifest exists with the
requested number of rows is skipped; audio and manifests are written atomically.

Usage::

    python recipes/prepare_shifts.py [--shared_folder ../shared] [--save_folder data/shifts]
        [--splits dev test] [--shifts noise level ...] [--per_shift N]

Example
-------
>>> manifests = prepare_shifts("../shared", "data/shifts", shifts=("noise",))  # doctest: +SKIP
>>> sorted(manifests)  # doctest: +SKIP
[('dev', 'noise'), ('test', 'noise')]

Authors
 * speechbrain-mpol developers
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
if str(REPO / "recipes") not in sys.path:  # in_domain reuses prepare_source's constants
    sys.path.insert(1, str(REPO / "recipes"))

from speechbrain_mpol.audio import CLIP_LEVEL, read_audio, write_audio  # noqa: E402
from speechbrain_mpol.manifest import write_rows  # noqa: E402
from speechbrain_mpol.mixing import (  # noqa: E402
    apply_rir,
    band_limit,
    level_dbfs,
    mix_at_snr,
    peak_normalize,
    set_level,
)
from speechbrain_mpol.shared import find_shared_folder  # noqa: E402

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
MANIFEST_HEADER = ["ID", "duration", "noisy_wav", "clean_wav"]
PARAM_HEADER = ["speech", "noise", "snr_db", "rir", "noise_offset", "text"]
#: Offset of every random stream here; the source training material uses seeds below it.
SEED_OFFSET = 10_000
#: Peak of the clean speech before mixing.
SPEECH_PEAK = 0.5
#: Peak of the mixture after mixing (``peak_normalize``).
MIX_PEAK = 0.95
#: RMS level of the ``level`` mixtures, dBFS.
LEVEL_DBFS = -40.0

#: Disjoint material of the two splits (file stems under speech/, noise/, rir/).
SPLITS: dict[str, dict[str, tuple[str, ...]]] = {
    "dev": {
        "speech": tuple(f"timit_spk2_snt{i}" for i in range(1, 7))
        + ("single_mic_example5", "single_mic_example6"),
        "noise": ("noise4", "noise5"),
        "rir": ("rir4",),
    },
    "test": {
        "speech": tuple(f"timit_spk1_snt{i}" for i in range(1, 7))
        + ("single_mic_example1", "single_mic_example2", "lj050_0131",
           "multimic_speech_a_ch0", "multimic_speech_b_ch0"),
        "noise": ("noise1", "noise2", "noise3", "diffuse_ch0"),
        "rir": ("rir1", "rir2", "rir3"),
    },
}


@dataclass
class Material:
    """The real files of one split, resolved to paths under the audio folder."""

    audio_folder: Path
    speech: list[Path]
    noise: list[Path]
    rir: list[Path]

    def rel(self, path: Path) -> str:
        """Path relative to the audio folder, as recorded in the manifests."""
        return path.relative_to(self.audio_folder).as_posix()


@dataclass
class Mixture:
    """One noisy/clean pair and the parameters that made it (the extra CSV columns)."""

    noisy: np.ndarray
    clean: np.ndarray
    params: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------- material


def audio_folder(shared_folder: str | os.PathLike) -> Path:
    """The folder with ``speech/``, ``noise/`` and ``rir/``: ``<shared_folder>/audio``.

    ``shared_folder`` is resolved by :func:`~speechbrain_mpol.shared.find_shared_folder` (the
    default ``../shared`` then works from any working directory and from a clone); a folder
    that itself holds ``speech/`` is accepted as well.
    """
    shared = Path(find_shared_folder(shared_folder))
    for folder in (shared / "audio", shared):
        if (folder / "speech").is_dir() and (folder / "noise").is_dir():
            return folder
    raise FileNotFoundError(
        f"shared audio folder not found: expected {shared / 'audio'} with speech/, noise/ "
        f"and rir/ (pass --shared_folder)"
    )


def split_material(folder: Path, split: str) -> Material:
    """Resolve the files of ``split``; a missing one is an error that names it."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    paths = {}
    for kind, stems in SPLITS[split].items():
        paths[kind] = [folder / kind / f"{stem}.wav" for stem in stems]
        for path in paths[kind]:
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing from the shared audio folder")
    return Material(folder, paths["speech"], paths["noise"], paths["rir"])


@lru_cache(maxsize=64)
def _read(path: Path) -> np.ndarray:
    # Every file is read a few times per split; float64 keeps the SNR arithmetic exact.
    wav = read_audio(path, SAMPLE_RATE).numpy().astype(np.float64)
    wav.setflags(write=False)
    return wav


def load_speech(path: Path, max_seconds: float) -> np.ndarray:
    """First ``max_seconds`` of a speech file, peak-normalised to :data:`SPEECH_PEAK`."""
    wav = _read(path)[: int(round(max_seconds * SAMPLE_RATE))]
    return wav * (SPEECH_PEAK / max(float(np.max(np.abs(wav))), 1e-12))


def load_rir(path: Path) -> np.ndarray:
    """A RIR scaled so that its direct path (the peak ``apply_rir`` aligns on) is +1.

    The dry reference then equals the direct-path part of the reverberant speech in level
    and polarity; the raw files range from 0.01 to 0.99 in peak.
    """
    rir = _read(path)
    return rir / rir[int(np.argmax(np.abs(rir)))]


def noise_segment(
    noise: np.ndarray, length: int, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """A random ``length``-sample stretch of ``noise`` and its offset.

    Like :func:`speechbrain_mpol.mixing.fit_length`, but the offset is returned so that it
    can be recorded; a noise shorter than ``length`` is looped from a random offset.
    """
    if len(noise) >= length:
        offset = int(rng.integers(0, len(noise) - length + 1))
        return noise[offset : offset + length], offset
    offset = int(rng.integers(0, len(noise)))
    reps = int(np.ceil((offset + length) / len(noise)))
    return np.tile(noise, reps)[offset : offset + length], offset


# ------------------------------------------------------------------------------- shifts
# Each shift maps (speech file or None, split material, per-utterance rng, max_seconds) to a
# Mixture. The speech file is assigned by the builder so that every file is used equally.


def _real_mixture(speech_path: Path, material: Material, rng: np.random.Generator,
                  max_seconds: float, snr_range: tuple[float, float]) -> Mixture:
    """Real speech + a random real noise at an SNR uniform in ``snr_range`` (not normalised)."""
    clean = load_speech(speech_path, max_seconds)
    noise_path = material.noise[int(rng.integers(len(material.noise)))]
    snr = float(rng.uniform(*snr_range))
    segment, offset = noise_segment(_read(noise_path), len(clean), rng)
    noisy, _ = mix_at_snr(clean, segment, snr, rng)
    params = {"speech": material.rel(speech_path), "noise": material.rel(noise_path),
              "snr_db": snr, "rir": "", "noise_offset": offset, "text": ""}
    return Mixture(noisy, clean, params)


def _normalized(mix: Mixture) -> Mixture:
    mix.noisy, mix.clean = peak_normalize(mix.noisy, mix.clean, peak=MIX_PEAK)
    return mix


def in_domain(speech_path: Path | None, material: Material, rng: np.random.Generator,
              max_seconds: float) -> Mixture:
    """Synthetic TTS speech + synthetic noise at 0..15 dB: the source domain, new seeds.

    Follows ``prepare_source.py`` (one voice per utterance, sentences joined with short
    pauses until ``MIN_SECONDS``, speech level uniform in ``LEVEL_RANGE`` dBFS rather than a
    0.5 peak), so that this set is drawn from the training distribution; the voice is drawn
    at random. ``speech_path`` and ``material`` are unused.
    """
    from prepare_source import LEVEL_RANGE, MAX_SECONDS, MIN_SECONDS

    from speechbrain_mpol.synthetic import (
        NOISE_KINDS,
        VOICES,
        compose_sentence,
        synth_noise,
        synth_speech,
    )

    voice = VOICES[int(rng.integers(len(VOICES)))]
    texts, pieces = [], []
    while sum(len(p) for p in pieces) < MIN_SECONDS * SAMPLE_RATE:
        texts.append(compose_sentence(rng))
        if pieces:
            pieces.append(np.zeros(int(rng.uniform(0.1, 0.3) * SAMPLE_RATE)))
        pieces.append(synth_speech(texts[-1], voice, SAMPLE_RATE, rng).astype(np.float64))
    speech = np.concatenate(pieces)[: int(min(MAX_SECONDS, max_seconds) * SAMPLE_RATE)]
    speech = set_level(speech, float(rng.uniform(*LEVEL_RANGE)))
    kind = str(NOISE_KINDS[int(rng.integers(len(NOISE_KINDS)))])
    snr = float(rng.uniform(0.0, 15.0))
    noisy, _ = mix_at_snr(speech, synth_noise(kind, len(speech), SAMPLE_RATE, rng), snr, rng)
    params = {"speech": f"tts:{voice.name}", "noise": f"synthetic:{kind}", "snr_db": snr,
              "rir": "", "noise_offset": 0, "text": " ".join(texts)}
    return _normalized(Mixture(noisy, speech, params))


def speaker(speech_path: Path, material: Material, rng: np.random.Generator,
            max_seconds: float) -> Mixture:
    """Real speech + synthetic noise (a random kind) at 0..15 dB."""
    from speechbrain_mpol.synthetic import NOISE_KINDS, synth_noise

    clean = load_speech(speech_path, max_seconds)
    kind = str(NOISE_KINDS[int(rng.integers(len(NOISE_KINDS)))])
    snr = float(rng.uniform(0.0, 15.0))
    noisy, _ = mix_at_snr(clean, synth_noise(kind, len(clean), SAMPLE_RATE, rng), snr, rng)
    params = {"speech": material.rel(speech_path), "noise": f"synthetic:{kind}",
              "snr_db": snr, "rir": "", "noise_offset": 0, "text": ""}
    return _normalized(Mixture(noisy, clean, params))


def noise(speech_path: Path, material: Material, rng: np.random.Generator,
          max_seconds: float) -> Mixture:
    """Real speech + real noise at 0..15 dB."""
    return _normalized(_real_mixture(speech_path, material, rng, max_seconds, (0.0, 15.0)))


def low_snr(speech_path: Path, material: Material, rng: np.random.Generator,
            max_seconds: float) -> Mixture:
    """Real speech + real noise at -5..0 dB."""
    return _normalized(_real_mixture(speech_path, material, rng, max_seconds, (-5.0, 0.0)))


def reverb(speech_path: Path, material: Material, rng: np.random.Generator,
           max_seconds: float) -> Mixture:
    """Reverberant real speech + real noise at 5..15 dB; the reference is the DRY speech."""
    dry = load_speech(speech_path, max_seconds)
    rir_path = material.rir[int(rng.integers(len(material.rir)))]
    wet = apply_rir(dry, load_rir(rir_path))
    noise_path = material.noise[int(rng.integers(len(material.noise)))]
    snr = float(rng.uniform(5.0, 15.0))
    segment, offset = noise_segment(_read(noise_path), len(wet), rng)
    noisy, _ = mix_at_snr(wet, segment, snr, rng)
    params = {"speech": material.rel(speech_path), "noise": material.rel(noise_path),
              "snr_db": snr, "rir": material.rel(rir_path), "noise_offset": offset, "text": ""}
    return _normalized(Mixture(noisy, dry, params))


def level(speech_path: Path, material: Material, rng: np.random.Generator,
          max_seconds: float) -> Mixture:
    """The ``noise`` mixture with mixture and clean scaled together to -40 dBFS (mixture RMS)."""
    mix = _real_mixture(speech_path, material, rng, max_seconds, (0.0, 15.0))
    gain = 10.0 ** (LEVEL_DBFS / 20.0) / np.sqrt(np.mean(np.square(mix.noisy)))
    mix.noisy, mix.clean = mix.noisy * gain, mix.clean * gain
    assert abs(level_dbfs(mix.noisy) - LEVEL_DBFS) < 0.01, level_dbfs(mix.noisy)
    # No peak normalisation here (it would move the level); a clipped file would be a bug.
    peak = float(max(np.max(np.abs(mix.noisy)), np.max(np.abs(mix.clean))))
    if peak >= CLIP_LEVEL:
        raise RuntimeError(f"level shift of {mix.params['speech']} would clip (peak {peak:.3f})")
    return mix


def bandlimit(speech_path: Path, material: Material, rng: np.random.Generator,
              max_seconds: float) -> Mixture:
    """The ``noise`` mixture with mixture and clean band-limited to 300-3400 Hz."""
    mix = _real_mixture(speech_path, material, rng, max_seconds, (0.0, 15.0))
    mix.noisy = band_limit(mix.noisy, SAMPLE_RATE)
    mix.clean = band_limit(mix.clean, SAMPLE_RATE)
    return _normalized(mix)


ShiftFn = Callable[[Path | None, Material, np.random.Generator, float], Mixture]
#: The shifts, in the order of their random streams (do not reorder: it changes the sets).
SHIFT_FUNCTIONS: dict[str, ShiftFn] = {
    "in_domain": in_domain,
    "speaker": speaker,
    "noise": noise,
    "low_snr": low_snr,
    "reverb": reverb,
    "level": level,
    "bandlimit": bandlimit,
}
SHIFTS: tuple[str, ...] = tuple(SHIFT_FUNCTIONS)
#: ``level`` and ``bandlimit`` reuse the random stream of ``noise``: the same speech, noise,
#: SNR and offset, so that their difference from ``noise`` is only the level / band change.
STREAM_OF = {"level": "noise", "bandlimit": "noise"}


# ------------------------------------------------------------------------------- building


def _manifest_rows(path: Path) -> int | None:
    """Number of rows of an existing manifest whose audio files all exist, else None."""
    if not path.is_file():
        return None
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not all(Path(r["noisy_wav"]).is_file() and Path(r["clean_wav"]).is_file() for r in rows):
        return None
    return len(rows)


def _write_pair(folder: Path, uid: str, mix: Mixture) -> list:
    """Write one pair; returns its manifest row (required columns, then parameters)."""
    noisy_path = (folder / "noisy" / f"{uid}.wav").resolve()
    clean_path = (folder / "clean" / f"{uid}.wav").resolve()
    write_audio(noisy_path, mix.noisy, SAMPLE_RATE, subtype="PCM_16")
    write_audio(clean_path, mix.clean, SAMPLE_RATE, subtype="PCM_16")
    params = dict(mix.params)
    params["snr_db"] = f"{params['snr_db']:.4f}"
    return [uid, f"{len(mix.noisy) / SAMPLE_RATE:.4f}", str(noisy_path), str(clean_path),
            *(params[k] for k in PARAM_HEADER)]


def build_set(material: Material, split: str, shift: str, folder: Path, count: int,
              max_seconds: float, seed: int) -> Path:
    """Build one (split, shift) set of ``count`` pairs in ``folder``; returns its manifest."""
    split_index = list(SPLITS).index(split)
    stream = SHIFTS.index(STREAM_OF.get(shift, shift))
    # The speech files in a seeded order, cycled: each file is used equally often, and the
    # first rows (which a benchmark subset takes) mix speakers instead of one after another.
    order_rng = np.random.default_rng([SEED_OFFSET + seed, split_index, stream])
    order = [material.speech[i] for i in order_rng.permutation(len(material.speech))]
    shift_fn = SHIFT_FUNCTIONS[shift]
    rows = []
    for index in range(count):
        rng = np.random.default_rng([SEED_OFFSET + seed, split_index, stream, index])
        speech_path = order[index % len(order)]
        mix = shift_fn(speech_path, material, rng, max_seconds)
        name = mix.params["speech"].split("/")[-1].split(":")[-1].removesuffix(".wav")
        rows.append(_write_pair(folder, f"{split}_{shift}_{index:03d}_{name}", mix))
    manifest = folder / f"{split}_{shift}.csv"
    write_rows(manifest, rows, MANIFEST_HEADER + PARAM_HEADER)
    return manifest


def prepare_shifts(
    shared_folder: str | os.PathLike = "../shared",
    save_folder: str | os.PathLike = "data/shifts",
    splits: Sequence[str] = ("dev", "test"),
    shifts: Sequence[str] = SHIFTS,
    per_shift: int | None = None,
    max_seconds: float = 6.0,
    seed: int = 0,
) -> dict[tuple[str, str], Path]:
    """Create the shifted test sets; skip those already built.

    Arguments
    ---------
    shared_folder : str or PathLike
        Folder holding ``audio/speech``, ``audio/noise``, ``audio/rir``; a relative path is
        taken relative to the repository root.
    save_folder : str or PathLike
        Output root; each set goes to ``<save_folder>/<split>/<shift>/``.
    splits : sequence of str
        Any of ``"dev"``, ``"test"``.
    shifts : sequence of str
        Any of :data:`SHIFTS`.
    per_shift : int, optional
        Utterances per set; by default one per speech file of the split (``in_domain``: the
        same count), each with its own random noise, SNR and RIR.
    max_seconds : float
        Speech is cropped to its first ``max_seconds``.
    seed : int
        Master seed; the streams used are ``(10_000 + seed, split, shift, index)``.

    Returns
    -------
    dict
        ``(split, shift)`` -> path of the set's CSV manifest.

    Example
    -------
    >>> prepare_shifts("../shared", "data/shifts", ("dev",), ("level",))  # doctest: +SKIP
    {('dev', 'level'): PosixPath('data/shifts/dev/level/dev_level.csv')}
    """
    unknown = sorted(set(shifts) - set(SHIFTS))
    if unknown:
        raise ValueError(f"unknown shift(s) {unknown}; expected some of {list(SHIFTS)}")
    folder = audio_folder(shared_folder)
    manifests = {}
    for split in splits:
        material = split_material(folder, split)
        count = per_shift if per_shift is not None else len(material.speech)
        for shift in shifts:
            set_folder = Path(save_folder) / split / shift
            manifest = set_folder / f"{split}_{shift}.csv"
            if _manifest_rows(manifest) == count:
                logger.info("%s exists, skipping %s/%s", manifest, split, shift)
            else:
                manifest = build_set(material, split, shift, set_folder, count, max_seconds,
                                     seed)
                logger.info("%s/%s: %d utterances -> %s", split, shift, count, manifest)
            manifests[(split, shift)] = manifest
    return manifests


def prepare_example(
    shared_folder: str | os.PathLike = "../shared",
    save_folder: str | os.PathLike = "data/example",
    n: int = 12,
    seed: int = 0,
) -> Path:
    """The default example set of ``recipes/adapt.py``: real speech + real noise, with refs.

    Test-split speech (first 4 s, peak 0.5) and test-split noises at 0, 5 and 10 dB in turn,
    then ``peak_normalize(noisy, clean, 0.95)``. Skipped if already built with ``n`` rows.

    Arguments
    ---------
    shared_folder : str or PathLike
        Folder holding ``audio/speech`` and ``audio/noise`` (relative: to the repository root).
    save_folder : str or PathLike
        The set goes to ``<save_folder>/example/`` (``noisy/``, ``clean/``, ``example.csv``).
    n : int
        Number of pairs (the test speech files are cycled in a seeded order).
    seed : int
        Seed of the speech order, noise choice and noise offsets.

    Returns
    -------
    pathlib.Path
        The CSV manifest (``ID,duration,noisy_wav,clean_wav`` + mixing parameters).

    Example
    -------
    >>> manifest = prepare_example("../shared", "data/example")  # doctest: +SKIP
    >>> manifest.name  # doctest: +SKIP
    'example.csv'
    """
    material = split_material(audio_folder(shared_folder), "test")
    folder = Path(save_folder) / "example"
    manifest = folder / "example.csv"
    if _manifest_rows(manifest) == n:
        return manifest
    rng = np.random.default_rng([SEED_OFFSET + seed, 99])
    order = [material.speech[i] for i in rng.permutation(len(material.speech))]
    rows = []
    for index in range(n):
        speech_path = order[index % len(order)]
        clean = load_speech(speech_path, 4.0)
        noise_path = material.noise[int(rng.integers(len(material.noise)))]
        snr = (0.0, 5.0, 10.0)[index % 3]
        segment, offset = noise_segment(_read(noise_path), len(clean), rng)
        noisy, _ = mix_at_snr(clean, segment, snr, rng)
        mix = _normalized(Mixture(noisy, clean, {
            "speech": material.rel(speech_path), "noise": material.rel(noise_path),
            "snr_db": snr, "rir": "", "noise_offset": offset, "text": ""}))
        uid = f"example_{index:02d}_{speech_path.stem}_{int(snr)}dB"
        rows.append(_write_pair(folder, uid, mix))
    write_rows(manifest, rows, MANIFEST_HEADER + PARAM_HEADER)
    return manifest


def main(argv: list[str] | None = None) -> dict[tuple[str, str], Path]:
    """Command-line entry point; prints one line per set (utterances, seconds)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared_folder", default="../shared",
                        help="folder with audio/{speech,noise,rir} (relative: to the repo root)")
    parser.add_argument("--save_folder", default="data/shifts")
    parser.add_argument("--splits", nargs="+", default=["dev", "test"], choices=list(SPLITS))
    parser.add_argument("--shifts", nargs="+", default=list(SHIFTS), choices=list(SHIFTS))
    parser.add_argument("--per_shift", type=int, default=None)
    parser.add_argument("--max_seconds", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    manifests = prepare_shifts(args.shared_folder, args.save_folder, args.splits, args.shifts,
                               args.per_shift, args.max_seconds, args.seed)
    for (split, shift), path in manifests.items():
        with open(path, newline="") as handle:
            seconds = [float(r["duration"]) for r in csv.DictReader(handle)]
        print(f"{split:5s} {shift:10s} {len(seconds):3d} utterances {sum(seconds):7.1f} s  {path}")
    return manifests


if __name__ == "__main__":
    main()
