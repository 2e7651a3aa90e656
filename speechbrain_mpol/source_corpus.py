"""The source domain of the project's source models, from the real corpus: manifests and fixed sets.

:func:`prepare_corpus` reads ``<shared_folder>/corpus`` and writes SpeechBrain CSV manifests::

    save_folder/
        speech_train.csv    ID,duration,wav,speaker        clean training speech (mixed on the fly)
        noise_train.csv     ID,duration,wav,label          the training noise clips
        valid.csv           ID,duration,noisy_wav,clean_wav,speech,noise,noise_start,snr_db,
        test.csv            level_db,gain                  fixed mixtures, written once
        valid/{noisy,clean}/ID.wav   test/{noisy,clean}/ID.wav
        options.json        what the folder was prepared with

- training speech: ``speech/train`` minus every 10th utterance (:func:`corpus.source_split`);
- validation: the held-out 10th utterances, cut into consecutive segments of at most
  ``segment_seconds`` (a last piece shorter than ``min_segment_seconds`` is dropped), each mixed
  once with a training noise clip;
- test (in-domain): ``speech/test`` (unseen LibriSpeech speakers, crops of at most 6 s), each
  mixed once with a training noise clip (the training noise classes: in-domain noise).

Mixing is :meth:`speechbrain_mpol.dynamic_mixing.DynamicMixer.draw`, the same as in training,
with its own seed per set.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from speechbrain_mpol.atomic import atomic_path
from speechbrain_mpol.audio import write_audio
from speechbrain_mpol.corpus import CorpusFile, read_corpus, select, source_split
from speechbrain_mpol.dynamic_mixing import DynamicMixer, read_segment
from speechbrain_mpol.manifest import write_rows

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
SPEECH_FIELDS = ["ID", "duration", "wav", "speaker"]
NOISE_FIELDS = ["ID", "duration", "wav", "label"]
MIXTURE_FIELDS = ["ID", "duration", "noisy_wav", "clean_wav", "speech", "noise", "noise_start",
                  "snr_db", "level_db", "gain"]
MANIFESTS = ("speech_train", "noise_train", "valid", "test")


def segments(wav: torch.Tensor, length: int, min_length: int) -> list[torch.Tensor]:
    """Consecutive pieces of ``length`` samples; a last piece under ``min_length`` is dropped.

    Example
    -------
    >>> [len(s) for s in segments(torch.zeros(25), 10, 4)]
    [10, 10, 5]
    >>> [len(s) for s in segments(torch.zeros(23), 10, 4)]
    [10, 10]
    """
    pieces = [wav[i : i + length] for i in range(0, len(wav), length)]
    return [p for p in pieces if len(p) >= min_length]


def _file_rows(files: list[CorpusFile]) -> list[list]:
    return [[f.name, f"{f.duration:.3f}", str(f.path), f.label] for f in files]


def _mix_set(
    name: str,
    pieces: list[tuple[str, str, torch.Tensor]],
    mixer: DynamicMixer,
    folder: Path,
) -> list[dict]:
    """Mix and write every ``(ID, speech file, segment)``; return the manifest rows."""
    rows = []
    for uid, speech_path, speech in pieces:
        mixture = mixer.draw(speech)
        noisy_path = folder / name / "noisy" / f"{uid}.wav"
        clean_path = folder / name / "clean" / f"{uid}.wav"
        write_audio(noisy_path, mixture.noisy, SAMPLE_RATE, subtype="PCM_16")
        write_audio(clean_path, mixture.clean, SAMPLE_RATE, subtype="PCM_16")
        rows.append({
            "ID": uid,
            "duration": f"{len(speech) / SAMPLE_RATE:.3f}",
            "noisy_wav": str(noisy_path.resolve()),
            "clean_wav": str(clean_path.resolve()),
            "speech": speech_path,
            "noise": mixture.noise,
            "noise_start": mixture.noise_start,
            "snr_db": f"{mixture.snr_db:.3f}",
            "level_db": f"{mixture.level_db:.3f}",
            "gain": f"{mixture.gain:.4f}",
        })
    return rows


def prepare_corpus(
    corpus_folder: str | os.PathLike,
    save_folder: str | os.PathLike,
    *,
    snr_range: tuple[float, float],
    level_range: tuple[float, float],
    max_peak: float,
    segment_seconds: float,
    min_segment_seconds: float,
    valid_every: int,
    valid_seed: int,
    test_seed: int,
) -> dict[str, Path]:
    """Write the source-domain manifests and the fixed validation and test mixtures.

    The options have no defaults here: they are set once, in ``hparams/source_corpus.yaml``.

    A folder already prepared with the same options is left as it is; one prepared with other
    options is an error (outputs are never overwritten).

    Arguments
    ---------
    corpus_folder : str or PathLike
        ``<shared_folder>/corpus`` (with ``MANIFEST.tsv``).
    save_folder : str or PathLike
        Output folder.
    snr_range, level_range : (float, float)
        SNR (dB) and speech RMS level (dBFS) ranges of the fixed mixtures (and of training).
    max_peak : float
        Peak limit of a mixture.
    segment_seconds, min_segment_seconds : float
        Validation segment length, and the shortest last segment kept.
    valid_every : int
        One validation utterance per this many (:func:`speechbrain_mpol.corpus.source_split`).
    valid_seed, test_seed : int
        Seeds of the two fixed sets.

    Returns
    -------
    dict
        ``speech_train``, ``noise_train``, ``valid``, ``test`` -> CSV path.

    Raises
    ------
    FileNotFoundError
        When the corpus manifest is missing or lists no files of a needed split.
    FileExistsError
        When ``save_folder`` was prepared with other options.
    """
    folder = Path(save_folder)
    options = {
        "corpus_folder": str(Path(corpus_folder).resolve()), "snr_range": list(snr_range),
        "level_range": list(level_range), "max_peak": max_peak,
        "segment_seconds": segment_seconds, "min_segment_seconds": min_segment_seconds,
        "valid_every": valid_every, "valid_seed": valid_seed, "test_seed": test_seed,
    }
    manifests = {name: folder / f"{name}.csv" for name in MANIFESTS}
    options_file = folder / "options.json"
    if options_file.is_file():
        done = json.loads(options_file.read_text())
        if done != options:
            raise FileExistsError(f"{folder} was prepared with other options ({options_file}); "
                             "use another save_folder")
        if all(p.is_file() for p in manifests.values()):
            logger.info("%s is prepared, skipping", folder)
            return manifests

    corpus = read_corpus(corpus_folder)
    train, valid = source_split(corpus, valid_every)
    noise = select(corpus, kind="noise", split="train")
    test = select(corpus, kind="speech", split="test")
    for what, files in (("speech/train", train), ("noise/train", noise), ("speech/test", test)):
        if not files:
            raise FileNotFoundError(f"{corpus_folder}: the corpus manifest lists no {what} files")

    def mixer(seed: int) -> DynamicMixer:
        return DynamicMixer([f.path for f in noise], snr_range, level_range,
                            max_peak=max_peak, seed=seed, sample_rate=SAMPLE_RATE)

    length = int(segment_seconds * SAMPLE_RATE)
    min_length = int(min_segment_seconds * SAMPLE_RATE)
    valid_pieces = [
        (f"{f.name}_seg{k}", str(f.path), piece)
        for f in valid
        for k, piece in enumerate(segments(read_segment(f.path), length, min_length))
    ]
    test_pieces = [(f.name, str(f.path), read_segment(f.path)) for f in test]
    valid_rows = _mix_set("valid", valid_pieces, mixer(valid_seed), folder)
    test_rows = _mix_set("test", test_pieces, mixer(test_seed), folder)

    write_rows(manifests["speech_train"], _file_rows(train), SPEECH_FIELDS)
    write_rows(manifests["noise_train"], _file_rows(noise), NOISE_FIELDS)
    write_rows(manifests["valid"], valid_rows, MIXTURE_FIELDS)
    write_rows(manifests["test"], test_rows, MIXTURE_FIELDS)
    with atomic_path(options_file) as tmp:  # written last: it marks a complete folder
        Path(tmp).write_text(json.dumps(options, indent=2) + "\n")
    logger.info("%s: %d training utterances, %d noise clips, %d valid and %d test mixtures",
                folder, len(train), len(noise), len(valid_rows), len(test_rows))
    return manifests
