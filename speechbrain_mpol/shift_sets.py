"""The benchmark's shifted test sets, mixed from the real corpus (``<shared_folder>/corpus``).

Each set is one (split, shift) pair. The **dev** split is for sweeps and every choice of
configuration; the **test** split is for reporting only. Their material is chosen through
:mod:`speechbrain_mpol.corpus` and is disjoint in speech, noise files and rooms, with one
stated exception (``easy_source``):

==============  =============================================  ============================
set             dev                                            test
==============  =============================================  ============================
``in_domain``   ``speech/dev`` + half of ``noise/train``       ``speech/test`` + the other
                (every other file), 0..15 dB                   half, 0..15 dB
``noise``       ``speech/dev`` + ``noise/dev``, 0..15 dB       ``speech/test`` +
                                                               ``noise/test``, 0..15 dB
``household``   ``speech/dev`` + ``noise/nonspeech100``        ``speech/test`` +
                                                               ``noise/household``, 0..15 dB
``low_snr``     as ``noise``, -5..0 dB                         as ``noise``, -5..0 dB
``reverb``      rooms bedroom, bathroom; held-out noise        rooms classroom, dining room,
                at 5..15 dB                                    office meeting room, office
                                                               lobby; held-out noise, 5..15 dB
``level``       the ``noise`` mixtures at -45 dBFS             same
``bandlimit``   the ``noise`` mixtures, 300-3400 Hz            same
``speaker``     ``speech/test_other`` speakers 367, 533,       speakers 1998, 2414, 2609,
                1688, 2033, 3005 (46 files) + held-out         3080, 3331 (45 files) +
                noise, 0..15 dB                                held-out noise, 0..15 dB
``easy_source`` the 16 validation utterances of                the same 16 utterances with
                :func:`~speechbrain_mpol.corpus.source_split`  other noises, SNRs and crops
                + dev half of ``noise/train``, 0..15 dB        (test half of ``noise/train``)
``easy_vctk``   ``speech/vctk``: 22 speakers, 35 clips (12     the other 23 speakers, 35
                of VoiceBank-DEMAND training speakers) +       clips (12) + test half of
                dev half of ``noise/train``, 5..15 dB          ``noise/train``, 5..15 dB
==============  =============================================  ============================

With the default 48 utterances per set, speech pools smaller than 48 files (``speaker``,
``easy_source``: 16 files, each mixed 3 times, ``easy_vctk``) are cycled: a file comes back
with another noise, SNR, level and (for speech longer than 6 s) crop.

- ``in_domain`` is the new source models' domain (training noise classes, LibriSpeech read
  speech) with unseen speakers; ``easy_source`` is their own validation domain (the held-out
  utterances of ``speech/train``, so dev and test share those 16 utterances, drawn with
  different seeds: the one exception to disjointness); ``easy_vctk`` is GTCRN-VCTK's training
  domain (VCTK speech, some of whose speakers are VoiceBank-DEMAND training speakers: a set
  that measures harm where such a model is already good). ``noise/train`` files alternate
  between dev and test in path order, so both splits see all 38 training classes.
- Speakers of ``speech/test_other`` and ``speech/vctk`` are split by :func:`split_labels`
  (greedy balance of the files per split, in order of falling file count); VCTK speakers that
  are VoiceBank-DEMAND training speakers (``WARNING`` in the corpus note) are balanced apart.
- Rooms: dev gets one short and one long room (bedroom, T25 about 0.09 s; bathroom, about
  0.17 s with a low direct-to-reverberant ratio); test gets the other four (0.07-0.24 s).

**Mixing conventions.** Speech longer than ``max_seconds`` (6 s) is cropped at a random
offset. Its RMS level is then set to a level uniform in :data:`SPEECH_LEVEL_RANGE`
(-32..-20 dBFS, whole-utterance RMS, as the synthetic source domain used); the old builder
peak-normalised speech to 0.5 instead, which ties the level to one loud sample. The noise is
a random stretch of a random file of the pool (looped from a random offset when shorter) added
at an SNR uniform in the set's range, relative to the speech as it is in the mixture
(:func:`~speechbrain_mpol.mixing.mix_at_snr`; for ``reverb`` the reverberant speech, while
the clean reference stays the DRY speech: the models denoise, they do not dereverberate). The
RIR is scaled to a unit direct path and aligned on it. Mixture and clean are then scaled by
one common factor so that both peak at most at :data:`MIX_PEAK` (``level``: so that the
mixture is at :data:`LEVEL_DBFS` RMS, with an error if anything would clip). ``level`` and
``bandlimit`` draw exactly what ``noise`` draws, so the three are paired row by row.

**Random streams.** With ``key = [SEED_OFFSET + seed, k, stream(s)]`` for set ``s`` in split
``k``, utterance ``i`` draws everything from its own stream
``numpy.random.default_rng([*key, 2, i])``; the speech files are taken in the seeded order
``default_rng([*key, 1]).permutation``, cycled, so that every file is used equally often and
the first rows (a subset) mix speakers; and the SNRs are stratified in blocks of
:data:`SNR_BLOCK` consecutive utterances (block ``b`` gives its utterances the eighths of the
SNR range in the order ``default_rng([*key, 3, b]).permutation``, each utterance then draws
its SNR uniformly within its eighth), so that every set and every subset of whole blocks
covers the range evenly and the mean SNR of a set is not left to chance (with independent
uniform draws, a first build had 48-utterance 0..15 dB sets with means from 6.3 to 9.0 dB).
The tags 1, 2, 3 keep the three kinds of stream apart (numpy pads a short key with zeros:
``[a, b, c]`` and ``[a, b, c, 0]`` are the same stream). A set therefore never depends on
which other sets are built or how many rows they have, and a larger ``per_shift`` keeps the
first rows identical.

**Layout.** ``<save_folder>/<split>/<shift>/{noisy,clean}/<ID>.wav`` and
``<save_folder>/<split>/<shift>/<split>_<shift>.csv`` with the SpeechBrain columns
``ID,duration,noisy_wav,clean_wav`` (absolute paths, seconds) followed by :data:`PARAM_HEADER`:
corpus files relative to the corpus folder, the speaker and noise class, the mixing SNR in dB
(for ``bandlimit`` the broadband SNR before band-limiting), the crop offsets in samples and
the RMS level of the clean reference as written. Audio and manifests are written atomically,
the manifest last; a set whose manifest lists the requested rows, with this header and all
its files present, is skipped. ``<split>_<shift>.json`` records what a set was built with
(seed, crop length, the set's definition, :data:`FORMAT`); a folder built with anything else
is an error rather than silently reused or overwritten.

Usage (``corpus_folder``: the shared corpus, as ``recipes/prepare_benchmark.py`` finds it;
``tests/test_shift_sets.py`` runs it on the real one)::

    manifests = prepare_benchmark(corpus_folder, "data/benchmark", ("dev",), ("noise",),
                                  per_shift=4)
    # {('dev', 'noise'): PosixPath('data/benchmark/dev/noise/dev_noise.csv')}

Authors
 * speechbrain-mpol developers
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from speechbrain.processing.signal_processing import dB_to_amplitude

from speechbrain_mpol.atomic import atomic_path
from speechbrain_mpol.audio import CLIP_LEVEL, read_audio, write_audio
from speechbrain_mpol.corpus import CorpusFile, read_corpus, select, source_split
from speechbrain_mpol.manifest import write_rows
from speechbrain_mpol.mixing import (
    apply_rir,
    band_limit,
    level_dbfs,
    mix_at_snr,
    noise_segment,
    peak_amplitude,
    rms,
    set_level,
    snr_db,
)

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
#: The splits, in the order of their random streams.
SPLITS: tuple[str, ...] = ("dev", "test")
#: Offset of every random stream here (the retired first builder used 10_000).
SEED_OFFSET = 20_000
#: Consecutive utterances whose SNRs cover the SNR range in equal strata.
SNR_BLOCK = 8
#: Version of the mixing recipe; bump it when a change here changes the audio of a set.
FORMAT = 1
#: Tags of the speech-order, utterance and SNR-strata streams.
_ORDER, _UTTERANCE, _SNR_STRATA = 1, 2, 3
#: RMS level of the speech before mixing, dBFS, uniform in this range.
SPEECH_LEVEL_RANGE = (-32.0, -20.0)
#: Largest peak of mixture and clean after the common scaling.
MIX_PEAK = 0.95
#: RMS level of the ``level`` mixtures, dBFS.
LEVEL_DBFS = -45.0
#: Pass band of ``bandlimit``, Hz.
BAND_HZ = (300.0, 3400.0)
#: Rooms (corpus labels of ``rir/``) of the dev split; test gets every other room.
DEV_ROOMS = ("bedroom", "bathroom")
#: Noise split standing in for ``household`` (test only) on dev.
HOUSEHOLD_SPLIT = {"dev": "nonspeech100", "test": "household"}
MANIFEST_HEADER = ["ID", "duration", "noisy_wav", "clean_wav"]
PARAM_HEADER = ["speech", "speaker", "noise", "noise_class", "snr_db", "rir", "speech_offset",
                "noise_offset", "speech_level_dbfs"]


@dataclass(frozen=True)
class ShiftSet:
    """How the utterances of one set are drawn.

    Arguments
    ---------
    stream : int
        Id of the set's random streams; sets with the same id draw the same speech, noise,
        SNR and offsets (``level`` and ``bandlimit`` use the stream of ``noise``).
    speech : str
        Speech pool: ``librispeech``, ``test_other``, ``source_valid`` or ``vctk``.
    noise : str
        Noise pool: ``train``, ``held_out`` or ``household``.
    snr_range : tuple of float
        SNR in dB, uniform in this range.
    reverb : bool
        Convolve the speech with a room of the split (dry clean reference).
    level_dbfs : float, optional
        Scale mixture and clean together to put the mixture at this RMS level.
    band_hz : tuple of float, optional
        Band-limit mixture and clean to this pass band.
    """

    stream: int
    speech: str
    noise: str
    snr_range: tuple[float, float]
    reverb: bool = False
    level_dbfs: float | None = None
    band_hz: tuple[float, float] | None = None


#: The sets. Stream ids are fixed per set: changing one changes that set's audio.
SETS: dict[str, ShiftSet] = {
    "in_domain": ShiftSet(0, "librispeech", "train", (0.0, 15.0)),
    "noise": ShiftSet(1, "librispeech", "held_out", (0.0, 15.0)),
    "household": ShiftSet(2, "librispeech", "household", (0.0, 15.0)),
    "low_snr": ShiftSet(3, "librispeech", "held_out", (-5.0, 0.0)),
    "reverb": ShiftSet(4, "librispeech", "held_out", (5.0, 15.0), reverb=True),
    "level": ShiftSet(1, "librispeech", "held_out", (0.0, 15.0), level_dbfs=LEVEL_DBFS),
    "bandlimit": ShiftSet(1, "librispeech", "held_out", (0.0, 15.0), band_hz=BAND_HZ),
    "speaker": ShiftSet(5, "test_other", "held_out", (0.0, 15.0)),
    "easy_source": ShiftSet(6, "source_valid", "train", (0.0, 15.0)),
    "easy_vctk": ShiftSet(7, "vctk", "train", (5.0, 15.0)),
}
SHIFTS: tuple[str, ...] = tuple(SETS)


@dataclass
class SplitMaterial:
    """The corpus files one split may draw from: speech and noise pools, rooms."""

    corpus_folder: Path
    speech: dict[str, list[CorpusFile]]
    noise: dict[str, list[CorpusFile]]
    rooms: list[CorpusFile]

    def rel(self, item: CorpusFile) -> str:
        """Path relative to the corpus folder, as recorded in the manifests."""
        return item.path.relative_to(self.corpus_folder).as_posix()


@dataclass
class Mixture:
    """One noisy/clean pair and the parameters that made it (the extra CSV columns)."""

    noisy: np.ndarray
    clean: np.ndarray
    params: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------- material


def split_labels(
    files: list[CorpusFile], split: str, stratum: Callable[[CorpusFile], str] = lambda f: ""
) -> list[CorpusFile]:
    """The files whose label (speaker) falls to ``split`` when labels are shared out.

    Within each stratum, labels are taken in order of falling file count (then by name) and
    each goes to the split that has fewer files so far (dev on a tie), so that the two
    splits get about as many files and never share a label.

    Arguments
    ---------
    files : list of CorpusFile
        The files to share out.
    split : str
        ``"dev"`` or ``"test"``.
    stratum : callable
        Maps a file to its stratum; strata are balanced separately.

    Returns
    -------
    list of CorpusFile
        The files of ``split``, in their input order.

    Example
    -------
    >>> from pathlib import Path
    >>> f = [CorpusFile(Path(f"{s}_{i}.flac"), "speech", "x", s, 1.0, "", True, "")
    ...      for s, n in (("a", 3), ("b", 2), ("c", 1)) for i in range(n)]
    >>> sorted({x.label for x in split_labels(f, "dev")}), len(split_labels(f, "test"))
    (['a'], 3)
    """
    counts: dict[str, dict[str, int]] = {}
    for item in files:
        stratum_counts = counts.setdefault(stratum(item), {})
        stratum_counts[item.label] = stratum_counts.get(item.label, 0) + 1
    owner = {}
    for stratum_counts in counts.values():
        sizes = dict.fromkeys(SPLITS, 0)
        for label, count in sorted(stratum_counts.items(), key=lambda kv: (-kv[1], kv[0])):
            chosen = min(SPLITS, key=lambda s: sizes[s])
            owner[label] = chosen
            sizes[chosen] += count
    return [item for item in files if owner[item.label] == split]


def _is_voicebank_speaker(item: CorpusFile) -> bool:
    return "WARNING" in item.note


def split_material(
    files: list[CorpusFile], corpus_folder: str | os.PathLike, split: str
) -> SplitMaterial:
    """Resolve the pools of one split; an empty pool is an error naming it.

    Arguments
    ---------
    files : list of CorpusFile
        The corpus (:func:`~speechbrain_mpol.corpus.read_corpus`).
    corpus_folder : str or PathLike
        The corpus folder (manifest paths are recorded relative to it).
    split : str
        ``"dev"`` or ``"test"``.

    Returns
    -------
    SplitMaterial
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    index = SPLITS.index(split)
    _, source_valid = source_split(files)
    speech = {
        "librispeech": select(files, kind="speech", split=split),
        "test_other": split_labels(select(files, kind="speech", split="test_other"), split),
        "source_valid": source_valid,
        "vctk": split_labels(select(files, kind="speech", split="vctk"), split,
                             _is_voicebank_speaker),
    }
    noise = {
        "train": select(files, kind="noise", split="train")[index::2],
        "held_out": select(files, kind="noise", split=split),
        "household": select(files, kind="noise", split=HOUSEHOLD_SPLIT[split]),
    }
    rooms = [f for f in select(files, kind="rir") if (f.label in DEV_ROOMS) == (split == "dev")]
    folder = Path(corpus_folder)
    for kind, pools in (("speech", speech), ("noise", noise), ("rir", {"rooms": rooms})):
        for name, pool in pools.items():
            if not pool:
                raise ValueError(f"{folder / 'MANIFEST.tsv'}: no {kind} files for the {split} "
                                 f"pool {name!r}")
    return SplitMaterial(folder, speech, noise, rooms)


@lru_cache(maxsize=64)
def _read(path: Path) -> np.ndarray:
    # Noise and rooms are read many times per set; float64 keeps the level arithmetic exact.
    wav = read_audio(path, SAMPLE_RATE).numpy().astype(np.float64)
    wav.setflags(write=False)
    return wav


def load_rir(path: Path) -> np.ndarray:
    """A RIR scaled so that its direct path (the peak ``apply_rir`` aligns on) is +1.

    The dry reference then equals the direct-path part of the reverberant speech in level
    and polarity.
    """
    rir = _read(path)
    return rir / rir[int(np.argmax(np.abs(rir)))]


# ------------------------------------------------------------------------------- mixing


def _draw(pool: list[CorpusFile], rng: np.random.Generator) -> CorpusFile:
    return pool[int(rng.integers(len(pool)))]


def mix_utterance(
    spec: ShiftSet, speech_file: CorpusFile, material: SplitMaterial,
    rng: np.random.Generator, max_seconds: float = 6.0, snr_stratum: tuple[int, int] = (0, 1),
) -> Mixture:
    """Mix one utterance of a set (the conventions of the module docstring).

    Arguments
    ---------
    spec : ShiftSet
        The set.
    speech_file : CorpusFile
        The speech (chosen by the builder, so that every file is used equally often).
    material : SplitMaterial
        The split's pools.
    rng : numpy.random.Generator
        The utterance's own stream; every draw comes from it, in a fixed order.
    max_seconds : float
        Longer speech is cropped to this, at a random offset.
    snr_stratum : tuple of int
        ``(j, n)``: the SNR is drawn uniformly within the ``j``-th of ``n`` equal parts of
        the set's SNR range (``(0, 1)``: anywhere in it).

    Returns
    -------
    Mixture
    """
    speech = _read(speech_file.path)
    length = min(len(speech), int(round(max_seconds * SAMPLE_RATE)))
    speech_offset = int(rng.integers(0, len(speech) - length + 1))
    speech = set_level(speech[speech_offset : speech_offset + length],
                       float(rng.uniform(*SPEECH_LEVEL_RANGE)))
    noise_file = _draw(material.noise[spec.noise], rng)
    low, high = spec.snr_range
    part, parts = snr_stratum
    snr = float(low + (high - low) * (part + rng.uniform()) / parts)
    room = _draw(material.rooms, rng) if spec.reverb else None
    target = apply_rir(speech, load_rir(room.path)) if room is not None else speech
    segment, noise_offset = noise_segment(_read(noise_file.path), len(target), rng)
    try:
        noisy, _ = mix_at_snr(target, segment, snr, rng)
    except ValueError as err:
        raise ValueError(f"{noise_file.path} at offset {noise_offset}: {err}") from None
    clean = speech
    if spec.band_hz is not None:
        noisy = band_limit(noisy, SAMPLE_RATE, *spec.band_hz)
        clean = band_limit(clean, SAMPLE_RATE, *spec.band_hz)
    if spec.level_dbfs is not None:
        gain = dB_to_amplitude(spec.level_dbfs) / rms(noisy)
    else:
        gain = min(1.0, MIX_PEAK / max(peak_amplitude(noisy), peak_amplitude(clean)))
    noisy, clean = noisy * gain, clean * gain
    top = max(peak_amplitude(noisy), peak_amplitude(clean))
    if top >= CLIP_LEVEL:  # only a -45 dBFS mixture with a 45 dB crest factor gets here
        raise RuntimeError(f"{speech_file.path}: the mixture would clip (peak {top:.3f})")
    params = {
        "speech": material.rel(speech_file), "speaker": speech_file.label,
        "noise": material.rel(noise_file), "noise_class": noise_file.label,
        "snr_db": f"{snr:.4f}", "rir": material.rel(room) if room is not None else "",
        "speech_offset": speech_offset, "noise_offset": noise_offset,
        "speech_level_dbfs": f"{level_dbfs(clean):.2f}",
    }
    return Mixture(noisy, clean, params)


# ------------------------------------------------------------------------------- building


def complete_rows(manifest: Path) -> int | None:
    """Rows of an existing manifest with this module's header and all its audio, else None."""
    if not manifest.is_file():
        return None
    with open(manifest, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    if reader.fieldnames != MANIFEST_HEADER + PARAM_HEADER:
        return None
    if not all(Path(r["noisy_wav"]).is_file() and Path(r["clean_wav"]).is_file() for r in rows):
        return None
    return len(rows)


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    # The mixing arithmetic is a few reductions per utterance; intra-op threads only add
    # latency there (on a busy 2-core machine 100 utterances took 21 s instead of 4 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def build_set(
    material: SplitMaterial, split: str, shift: str, folder: str | os.PathLike, count: int,
    seed: int = 0, max_seconds: float = 6.0,
) -> Path:
    """Build one (split, shift) set of ``count`` pairs in ``folder``; returns its manifest.

    Arguments
    ---------
    material : SplitMaterial
        The pools of ``split``.
    split : str
        ``"dev"`` or ``"test"`` (selects the random streams).
    shift : str
        A key of :data:`SETS`.
    folder : str or PathLike
        Output folder of the set.
    count : int
        Number of pairs.
    seed : int
        Master seed (the streams are described in the module docstring).
    max_seconds : float
        Speech crop length.

    Returns
    -------
    pathlib.Path
        The CSV manifest, written after all its audio.
    """
    spec = SETS[shift]
    folder = Path(folder)
    key = [SEED_OFFSET + seed, SPLITS.index(split), spec.stream]
    pool = material.speech[spec.speech]
    order = [pool[i] for i in np.random.default_rng([*key, _ORDER]).permutation(len(pool))]
    rows = []
    for index in range(count):
        speech_file = order[index % len(order)]
        block, position = divmod(index, SNR_BLOCK)
        strata = np.random.default_rng([*key, _SNR_STRATA, block]).permutation(SNR_BLOCK)
        with _one_torch_thread():
            mix = mix_utterance(spec, speech_file, material,
                                np.random.default_rng([*key, _UTTERANCE, index]), max_seconds,
                                (int(strata[position]), SNR_BLOCK))
        uid = f"{split}_{shift}_{index:03d}_{speech_file.name}"
        noisy_path = (folder / "noisy" / f"{uid}.wav").resolve()
        clean_path = (folder / "clean" / f"{uid}.wav").resolve()
        write_audio(noisy_path, mix.noisy, SAMPLE_RATE, subtype="PCM_16")
        write_audio(clean_path, mix.clean, SAMPLE_RATE, subtype="PCM_16")
        rows.append([uid, f"{len(mix.noisy) / SAMPLE_RATE:.4f}", str(noisy_path),
                     str(clean_path), *(mix.params[k] for k in PARAM_HEADER)])
    return write_rows(folder / f"{split}_{shift}.csv", rows, MANIFEST_HEADER + PARAM_HEADER)


def build_record(shift: str, seed: int, max_seconds: float) -> dict:
    """What a set is built with, as stored in its ``<split>_<shift>.json``."""
    record = {"format": FORMAT, "seed": seed, "max_seconds": max_seconds,
              "set": asdict(SETS[shift])}
    return json.loads(json.dumps(record))  # tuples as lists, as read back


def _claim_folder(folder: Path, record_path: Path, record: dict) -> None:
    """Write the build record, or refuse a folder built with another one."""
    if record_path.is_file():
        found = json.loads(record_path.read_text())
        if found != record:
            raise ValueError(f"{folder} was built with {found}, not {record}: remove it or "
                             f"choose another save_folder")
        return
    if any(folder.glob("*.csv")):
        raise ValueError(f"{folder} holds a set without its build record {record_path.name}: "
                         f"remove it or choose another save_folder")
    with atomic_path(record_path) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=1) + "\n")


def prepare_benchmark(
    corpus_folder: str | os.PathLike,
    save_folder: str | os.PathLike = "data/benchmark",
    splits: Sequence[str] = SPLITS,
    shifts: Sequence[str] = SHIFTS,
    per_shift: int = 48,
    seed: int = 0,
    max_seconds: float = 6.0,
) -> dict[tuple[str, str], Path]:
    """Create the benchmark's sets; skip those already complete.

    Arguments
    ---------
    corpus_folder : str or PathLike
        The corpus (``<shared_folder>/corpus``, holding ``MANIFEST.tsv``).
    save_folder : str or PathLike
        Output root; each set goes to ``<save_folder>/<split>/<shift>/``.
    splits : sequence of str
        Any of :data:`SPLITS`.
    shifts : sequence of str
        Any of :data:`SHIFTS`.
    per_shift : int
        Utterances per set.
    seed : int
        Master seed.
    max_seconds : float
        Speech crop length.

    Returns
    -------
    dict
        ``(split, shift)`` -> path of the set's CSV manifest.

    Raises
    ------
    ValueError
        For an unknown split or shift, or a set folder built with other parameters.
    """
    unknown = sorted(set(shifts) - set(SETS)) + sorted(set(splits) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown split(s)/shift(s) {unknown}; expected some of "
                         f"{list(SPLITS)} and {list(SHIFTS)}")
    if per_shift < 1:
        raise ValueError(f"per_shift must be at least 1, got {per_shift}")
    files = read_corpus(corpus_folder)
    manifests = {}
    for split in splits:
        material = split_material(files, corpus_folder, split)
        for shift in shifts:
            folder = Path(save_folder) / split / shift
            manifest = folder / f"{split}_{shift}.csv"
            _claim_folder(folder, folder / f"{split}_{shift}.json",
                          build_record(shift, seed, max_seconds))
            if complete_rows(manifest) == per_shift:
                logger.info("%s is complete, skipping %s/%s", manifest, split, shift)
            else:
                manifest = build_set(material, split, shift, folder, per_shift, seed,
                                     max_seconds)
                logger.info("%s/%s: %d utterances -> %s", split, shift, per_shift, manifest)
            manifests[(split, shift)] = manifest
    return manifests


def describe_set(manifest: str | os.PathLike) -> dict[str, float]:
    """Size and difficulty of a built set, measured on its audio.

    Returns
    -------
    dict
        ``utterances``, ``minutes``, ``pesq_noisy`` (mean PESQ-WB of the noisy input against
        the clean reference), ``snr_db`` (mean mixing SNR as recorded), ``snr_measured_db``
        (mean SNR of clean against noisy - clean as written: for ``reverb`` the reverberation
        counts as noise, for ``bandlimit`` it is the in-band SNR) and ``level_dbfs`` (mean RMS
        level of the mixtures).
    """
    from speechbrain_mpol.metrics import pesq_wb

    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    pesq, snrs, levels = [], [], []
    for row in rows:
        noisy = read_audio(row["noisy_wav"], SAMPLE_RATE).numpy().astype(np.float64)
        clean = read_audio(row["clean_wav"], SAMPLE_RATE).numpy().astype(np.float64)
        pesq.append(pesq_wb(clean, noisy, SAMPLE_RATE))
        snrs.append(snr_db(clean, noisy - clean))
        levels.append(level_dbfs(noisy))
    return {
        "utterances": len(rows),
        "minutes": sum(float(r["duration"]) for r in rows) / 60.0,
        "pesq_noisy": float(np.nanmean(pesq)),
        "snr_db": float(np.mean([float(r["snr_db"]) for r in rows])),
        "snr_measured_db": float(np.mean(snrs)),
        "level_dbfs": float(np.mean(levels)),
    }
