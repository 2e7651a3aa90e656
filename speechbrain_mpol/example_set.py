"""The embedded example set ``examples/``: a dozen short real noisy/clean pairs, in the repository.

``recipes/adapt.py`` enhances it when no ``--data_folder`` is given, so a fresh clone runs
without the shared folder, and the tests use it as their real audio. It is built by
``recipes/prepare_example.py`` from the corpus material that may be redistributed
(``speechbrain_mpol.corpus``): LibriSpeech speech (CC BY 4.0) from ``speech/dev``, one speaker
per pair, cropped to its first :data:`MAX_SECONDS`; ESC-50 noise clips whose own Freesound
license is CC0 or CC BY (never CC BY-NC, never an unlicensed recording) from ``noise/dev``, one
noise class per pair; mixed at 0, 5 and 10 dB in turn. Layout::

    examples/noisy/<ID>.flac   mixture, 16 kHz mono 16-bit FLAC
    examples/clean/<ID>.flac   its clean reference (same length, same scale)
    examples/examples.tsv      how each pair was made (sources, crops, SNR, licenses)
    examples/ATTRIBUTION.md    the same for people: source, author, license, changes
    examples/LICENSE           the license of the audio (CC BY 4.0, with the attributions)

``noisy/`` + ``clean/`` is a layout :func:`speechbrain_mpol.manifest.resolve_manifest` reads.

Example
-------
>>> from speechbrain_mpol.manifest import resolve_manifest
>>> import tempfile
>>> manifest = resolve_manifest(example_folder(), tempfile.mkdtemp())
>>> len(manifest.read_text().splitlines())  # header + 12 pairs
13
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from speechbrain_mpol.atomic import atomic_path
from speechbrain_mpol.audio import read_audio
from speechbrain_mpol.corpus import CorpusFile, select
from speechbrain_mpol.mixing import mix_at_snr, peak_normalize, snr_db
from speechbrain_mpol.shared import REPO

#: The committed example set.
EXAMPLE_FOLDER = REPO / "examples"
SAMPLE_RATE = 16000
#: SNRs (dB) given to the pairs in turn.
SNRS = (0.0, 5.0, 10.0)
#: Speech is cropped to its first MAX_SECONDS; clips shorter than MIN_SECONDS are not used.
MIN_SECONDS, MAX_SECONDS = 3.0, 4.0
#: Peak of the clean speech before mixing and of the mixture after.
SPEECH_PEAK, MIX_PEAK = 0.5, 0.95
#: Per-clip licenses that may be shipped: CC0 or plain CC BY (no NC / ND / SA clause).
SHIPPABLE_LICENSE = re.compile(r"^(CC0 1\.0|CC BY \d\.\d)(\s|$)")
#: Two decoded files count as the same audio when no sample differs by more than one
#: 16-bit step (a library update may move a rounding, never the content).
SAME_AUDIO_TOLERANCE = 1.5 / 32768
TSV_FIELDS = ["ID", "duration_s", "snr_db", "speech", "speaker", "utterance",
              "utterance_crop_s", "speech_crop_s",
              "speech_license", "noise", "noise_class", "noise_crop_s", "noise_license",
              "noise_attribution", "gain"]


def example_folder() -> str:
    """Absolute path of the committed example set (``<repository>/examples``).

    Raises
    ------
    FileNotFoundError
        When the folder or its ``noisy/`` subfolder is missing (a broken checkout).
    """
    if not (EXAMPLE_FOLDER / "noisy").is_dir():
        raise FileNotFoundError(
            f"example set not found: {EXAMPLE_FOLDER / 'noisy'} (part of the repository; "
            "rebuild it with `python recipes/prepare_example.py`)"
        )
    return str(EXAMPLE_FOLDER)


def clip_license(entry: CorpusFile) -> str:
    """The license of the clip itself, without the collection note in parentheses.

    Example
    -------
    >>> f = CorpusFile(Path("n.flac"), "noise", "dev", "cat", 5.0,
    ...                "CC0 1.0 (per-clip, Freesound original; ESC-50 ...)", True, "")
    >>> clip_license(f)
    'CC0 1.0'
    """
    return entry.license.split(" (", 1)[0].strip()


def shippable(entry: CorpusFile) -> bool:
    """True when the manifest marks the file redistributable and its license is CC0 / CC BY.

    Example
    -------
    >>> row = lambda lic, ok: CorpusFile(Path("x.flac"), "noise", "dev", "c", 5.0, lic, ok, "")
    >>> [shippable(row(lic, ok)) for lic, ok in [("CC BY 3.0 (per-clip)", True),
    ...     ("CC BY-NC 3.0 (per-clip)", True), ("CC0 1.0", False), ("CC BY 4.0", True)]]
    [True, False, False, True]
    """
    return entry.redistributable and SHIPPABLE_LICENSE.match(clip_license(entry)) is not None


@dataclass(frozen=True)
class ExamplePlan:
    """One pair to build: which speech, which noise, at which SNR, under which ID."""

    uid: str
    speech: CorpusFile
    noise: CorpusFile
    snr: float
    index: int


def _one_per_label(files: list[CorpusFile], rng: np.random.Generator) -> list[CorpusFile]:
    """One file per label (speaker or noise class), drawn at random, in label order."""
    labels = sorted({f.label for f in files})
    chosen = []
    for label in labels:
        group = [f for f in files if f.label == label]
        chosen.append(group[int(rng.integers(len(group)))])
    return chosen


def plan_examples(corpus: list[CorpusFile], n: int = 12, seed: int = 0) -> list[ExamplePlan]:
    """Choose the material of ``n`` pairs: distinct speakers, distinct noise classes.

    Speech: shippable ``speech/dev`` clips of at least :data:`MIN_SECONDS`, one per speaker,
    ``n`` speakers drawn at random. Noise: shippable ``noise/dev`` clips at least
    :data:`MAX_SECONDS` long (so no noise is looped), one per class, classes cycled if
    ``n`` exceeds them. SNRs follow :data:`SNRS` in turn.

    Arguments
    ---------
    corpus : list of CorpusFile
        The corpus manifest (:func:`speechbrain_mpol.corpus.read_corpus`).
    n : int
        Number of pairs.
    seed : int
        Seed of every random choice.

    Returns
    -------
    list of ExamplePlan

    Raises
    ------
    ValueError
        When the corpus has fewer usable speakers than ``n`` or no usable noise.
    """
    rng = np.random.default_rng(seed)
    speech = [f for f in select(corpus, kind="speech", split="dev")
              if shippable(f) and f.duration >= MIN_SECONDS]
    noise = [f for f in select(corpus, kind="noise", split="dev")
             if shippable(f) and f.duration >= MAX_SECONDS]
    speakers = _one_per_label(speech, rng)
    classes = _one_per_label(noise, rng)
    if len(speakers) < n or not classes:
        raise ValueError(
            f"the corpus has {len(speakers)} shippable dev speakers and {len(classes)} shippable "
            f"dev noise classes; {n} pairs need {n} speakers and at least one noise class"
        )
    speakers = [speakers[i] for i in sorted(rng.choice(len(speakers), n, replace=False))]
    noise_order = [classes[i] for i in rng.permutation(len(classes))]
    plans = []
    for index, clip in enumerate(speakers):
        noise_clip = noise_order[index % len(noise_order)]
        snr = SNRS[index % len(SNRS)]
        uid = f"ex{index + 1:02d}_{clip.name}_{noise_clip.label}_{snr:g}dB"
        plans.append(ExamplePlan(uid, clip, noise_clip, snr, index))
    return plans


def mix_example(
    speech: np.ndarray, noise: np.ndarray, snr: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, int, float]:
    """Crop, level and mix one pair.

    The speech is cut to its first :data:`MAX_SECONDS` and scaled to a peak of
    :data:`SPEECH_PEAK`; a stretch of the noise as long as the speech, from a random offset,
    is added at ``snr`` dB (whole-utterance RMS); mixture and reference are then scaled by
    one common factor so the mixture peaks at most at :data:`MIX_PEAK` (the SNR is kept).

    Arguments
    ---------
    speech, noise : numpy.ndarray
        Clean speech and a noise at least as long as the cropped speech, float64.
    snr : float
        SNR in dB.
    rng : numpy.random.Generator
        Source of the noise offset.

    Returns
    -------
    noisy, clean : numpy.ndarray
        The pair.
    offset : int
        First noise sample used.
    gain : float
        Common factor applied after mixing (1.0 when the mixture did not need scaling).

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> noisy, clean, offset, gain = mix_example(np.sin(np.arange(80000) / 7.0),
    ...                                          rng.standard_normal(80000), 5.0, rng)
    >>> len(noisy) == len(clean) == 64000, round(snr_db(clean, noisy - clean), 6)
    (True, 5.0)
    """
    clean = np.asarray(speech, dtype=np.float64)[: int(MAX_SECONDS * SAMPLE_RATE)]
    clean = clean * (SPEECH_PEAK / max(float(np.max(np.abs(clean))), 1e-12))
    if len(noise) < len(clean):
        raise ValueError(f"noise of {len(noise)} samples is shorter than the speech "
                         f"({len(clean)}); choose a longer noise clip")
    offset = int(rng.integers(0, len(noise) - len(clean) + 1))
    segment = np.asarray(noise, dtype=np.float64)[offset : offset + len(clean)]
    noisy, _ = mix_at_snr(clean, segment, snr, rng)
    scaled_noisy, scaled_clean = peak_normalize(noisy, clean, peak=MIX_PEAK)
    gain = float(np.max(np.abs(scaled_noisy)) / max(float(np.max(np.abs(noisy))), 1e-12))
    return scaled_noisy, scaled_clean, offset, gain


def _crop_of(note: str) -> str:
    """The crop bounds a corpus note records (``crop 0.130-4.420 s``), or ''."""
    found = re.search(r"crop ([\d.]+)-([\d.]+) s", note)
    return f"{found.group(1)}-{found.group(2)}" if found else ""


def _utterance_of(note: str) -> str:
    """The LibriSpeech utterance ID a corpus note records (``utt 1263-138246-0000``), or ''."""
    found = re.search(r"utt ([\w-]+)", note)
    return found.group(1) if found else ""


def _attribution_of(note: str) -> str:
    """The ``attribution: author, url`` part of a corpus note, or ''."""
    found = re.search(r"attribution: ([^;]+)", note)
    return found.group(1).strip() if found else ""


def build_pair(plan: ExamplePlan, corpus_folder: str | os.PathLike,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """Read, mix and describe one planned pair; returns (noisy, clean, tsv row)."""
    speech = read_audio(plan.speech.path, SAMPLE_RATE).numpy().astype(np.float64)
    noise = read_audio(plan.noise.path, SAMPLE_RATE).numpy().astype(np.float64)
    rng = np.random.default_rng([seed, plan.index])
    noisy, clean, offset, gain = mix_example(speech, noise, plan.snr, rng)
    folder = Path(corpus_folder)
    row = {
        "ID": plan.uid,
        "duration_s": f"{len(clean) / SAMPLE_RATE:.3f}",
        "snr_db": f"{plan.snr:g}",
        "speech": plan.speech.path.relative_to(folder).as_posix(),
        "speaker": plan.speech.label,
        "utterance": _utterance_of(plan.speech.note),
        "utterance_crop_s": _crop_of(plan.speech.note),
        "speech_crop_s": f"0.000-{len(clean) / SAMPLE_RATE:.3f}",
        "speech_license": clip_license(plan.speech),
        "noise": plan.noise.path.relative_to(folder).as_posix(),
        "noise_class": plan.noise.label,
        "noise_crop_s": f"{offset / SAMPLE_RATE:.3f}-{(offset + len(clean)) / SAMPLE_RATE:.3f}",
        "noise_license": clip_license(plan.noise),
        "noise_attribution": _attribution_of(plan.noise.note),
        "gain": f"{gain:.6f}",
    }
    return noisy, clean, row


def same_audio(path: str | os.PathLike, wav: np.ndarray) -> bool:
    """True if the file at ``path`` decodes to ``wav`` within :data:`SAME_AUDIO_TOLERANCE`."""
    data, rate = sf.read(str(path), dtype="float64")
    return rate == SAMPLE_RATE and data.shape == wav.shape and bool(
        np.max(np.abs(data - np.clip(wav, -1.0, 1.0)), initial=0.0) <= SAME_AUDIO_TOLERANCE
    )


def write_flac(path: str | os.PathLike, wav: np.ndarray) -> None:
    """Write mono 16 kHz 16-bit FLAC atomically (temporary file beside it, then rename)."""
    with atomic_path(path) as tmp:
        sf.write(tmp, np.clip(wav, -1.0, 1.0 - 1.0 / 32768), SAMPLE_RATE, format="FLAC",
                 subtype="PCM_16")


def measured_snr(noisy_path: str | os.PathLike, clean_path: str | os.PathLike) -> float:
    """SNR in dB of a written pair: clean versus (noisy - clean), as decoded."""
    noisy, _ = sf.read(str(noisy_path), dtype="float64")
    clean, _ = sf.read(str(clean_path), dtype="float64")
    return snr_db(clean, noisy - clean)


LICENSE_TEXT = """\
The audio files in this folder (noisy/*.flac, clean/*.flac) are not covered by the
repository's Apache-2.0 code license.

Each file is an adaptation (crop, level change, mixture) of the works listed for it in
ATTRIBUTION.md:
  - speech from the LibriSpeech ASR corpus, "LibriSpeech (c) 2014 by Vassil Panayotov",
    licensed CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/);
  - noise clips of the ESC-50 dataset (K. J. Piczak) used under the license of each
    original Freesound clip: CC0 1.0 (https://creativecommons.org/publicdomain/zero/1.0/)
    or CC BY 3.0 (https://creativecommons.org/licenses/by/3.0/). Clips whose own license is
    CC BY-NC are not used; the ESC-50 collection's CC BY-NC 3.0 is not relied on.

The adapted files are distributed under CC BY 4.0. When you redistribute them, keep
ATTRIBUTION.md (or an equivalent credit of every author and license listed there) with them.
The files are provided as is, without warranties.
"""

ATTRIBUTION_HEADER = """\
# Attribution of the example audio

Built by `python recipes/prepare_example.py` (`speechbrain_mpol/example_set.py`) from the
project's shared corpus (its `corpus/` folder and `MANIFEST.tsv`); `examples.tsv` holds the same
facts in machine-readable form. License of the adapted files: see `LICENSE` (CC BY 4.0).

- **Speech**: LibriSpeech ASR corpus (V. Panayotov, G. Chen, D. Povey, S. Khudanpur,
  ICASSP 2015, https://www.openslr.org/12), "LibriSpeech (c) 2014 by Vassil Panayotov",
  CC BY 4.0. Readers are LibriVox volunteers, identified by their LibriSpeech speaker number.
  The corpus clips of `speech/dev/` are crops of train-clean-100 utterances, re-encoded as
  FLAC.
- **Noise**: clips of the ESC-50 dataset (K. J. Piczak, ACM MM 2015,
  https://github.com/karolpiczak/ESC-50), each an excerpt of a Freesound recording used under
  that recording's own license (CC0 1.0 or CC BY 3.0, author and URL below); the corpus
  trimmed their leading and trailing silence.
- **Changes made here**, for every pair: the speech clip cut to its first seconds (at most
  4 s) and scaled to a peak of 0.5; a stretch of the noise as long as the speech added at the
  stated SNR (whole-utterance RMS); mixture and reference scaled by one common gain so the
  mixture peaks at most at 0.95; written as 16 kHz mono 16-bit FLAC.
"""


def attribution_text(rows: list[dict]) -> str:
    """ATTRIBUTION.md for the pairs described by ``rows`` (the rows of ``examples.tsv``)."""
    parts = [ATTRIBUTION_HEADER]
    for row in rows:
        author = row["noise_attribution"] or "not named in the corpus manifest"
        parts.append(
            f"\n## {row['ID']}\n\n"
            f"- `clean/{row['ID']}.flac`: LibriSpeech utterance {row['utterance']} (speaker "
            f"{row['speaker']}), {row['speech_license']}; corpus file `{row['speech']}` "
            f"(crop {row['utterance_crop_s']} s of the utterance), its first "
            f"{row['duration_s']} s, peak 0.5, common gain {row['gain']}.\n"
            f"- `noisy/{row['ID']}.flac`: that speech plus seconds {row['noise_crop_s']} of "
            f"ESC-50 clip `{Path(row['noise']).stem}` (class {row['noise_class']}; corpus file "
            f"`{row['noise']}`), by {author}, {row['noise_license']}; at {row['snr_db']} dB "
            f"SNR, common gain {row['gain']}.\n"
        )
    return "".join(parts)


def tsv_text(rows: list[dict]) -> str:
    """``examples.tsv``: one row per pair, the columns of :data:`TSV_FIELDS`."""
    lines = ["\t".join(TSV_FIELDS)]
    lines += ["\t".join(str(row[k]) for k in TSV_FIELDS) for row in rows]
    return "\n".join(lines) + "\n"


def _put_text(path: Path, text: str, overwrite: bool) -> str:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return "kept"
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists with other content (pass overwrite to replace)")
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return "written"


def _put_audio(path: Path, wav: np.ndarray, overwrite: bool) -> str:
    if path.is_file() and same_audio(path, wav):
        return "kept"
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists with other audio (pass overwrite to replace)")
    write_flac(path, wav)
    return "written"


def write_example_set(
    plans: list[ExamplePlan],
    corpus_folder: str | os.PathLike,
    output_folder: str | os.PathLike = EXAMPLE_FOLDER,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, int]:
    """Build every planned pair into ``output_folder`` with its attribution and license.

    A file that already holds the same content is kept (so a rebuild of the committed set
    changes nothing); one with other content, or a stray file in ``noisy/`` / ``clean/``, is
    an error unless ``overwrite``. Every file is written atomically.

    Arguments
    ---------
    plans : list of ExamplePlan
        From :func:`plan_examples`.
    corpus_folder : str or PathLike
        ``<shared_folder>/corpus`` (the paths recorded are relative to it).
    output_folder : str or PathLike
        Where ``noisy/``, ``clean/``, ``examples.tsv``, ``ATTRIBUTION.md`` and ``LICENSE`` go.
    seed : int
        Seed of the noise offsets (one stream per pair).
    overwrite : bool
        Replace files whose content differs.

    Returns
    -------
    dict
        ``{"written": n, "kept": m, "removed": k}`` file counts.
    """
    folder = Path(output_folder)
    counts = {"written": 0, "kept": 0, "removed": 0}
    expected = {f"{plan.uid}.flac" for plan in plans}
    strays = [p for sub in ("noisy", "clean") if (folder / sub).is_dir()
              for p in sorted((folder / sub).iterdir()) if p.name not in expected]
    if strays and not overwrite:
        raise FileExistsError(f"{strays[0]}: not part of the planned set (pass overwrite to "
                              f"remove it and {len(strays) - 1} other stray file(s))")
    for stray in strays:
        stray.unlink()
        counts["removed"] += 1
    rows = []
    for plan in plans:
        noisy, clean, row = build_pair(plan, corpus_folder, seed)
        counts[_put_audio(folder / "clean" / f"{plan.uid}.flac", clean, overwrite)] += 1
        counts[_put_audio(folder / "noisy" / f"{plan.uid}.flac", noisy, overwrite)] += 1
        rows.append(row)
    for name, text in (("examples.tsv", tsv_text(rows)),
                       ("ATTRIBUTION.md", attribution_text(rows)),
                       ("LICENSE", LICENSE_TEXT)):
        counts[_put_text(folder / name, text, overwrite)] += 1
    return counts
