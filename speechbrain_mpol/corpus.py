"""The real-speech corpus in ``<shared_folder>/corpus``: its manifest, read and filtered.

``corpus/MANIFEST.tsv`` lists every file (speech, noise, room impulse response) with its
split, label (speaker or noise class), duration, license and whether it may be redistributed.
Source-model training, the benchmark's shifted sets and the embedded example set all select
their material through :func:`select`, so a split or license rule is applied in one place.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CorpusFile:
    """One row of ``corpus/MANIFEST.tsv``, with ``path`` made absolute."""

    path: Path
    kind: str
    split: str
    label: str
    duration: float
    license: str
    redistributable: bool
    note: str

    @property
    def name(self) -> str:
        """The file name without folder and extension (``1263-138246-0000_s1``)."""
        return self.path.stem


def read_corpus(corpus_folder: str | os.PathLike) -> list[CorpusFile]:
    """Every file of the corpus manifest, in manifest order.

    Arguments
    ---------
    corpus_folder : str or PathLike
        The folder holding ``MANIFEST.tsv`` (``<shared_folder>/corpus``).

    Returns
    -------
    list of CorpusFile

    Raises
    ------
    FileNotFoundError
        When the folder has no ``MANIFEST.tsv``, naming the path looked at.
    """
    folder = Path(corpus_folder)
    manifest = folder / "MANIFEST.tsv"
    if not manifest.is_file():
        raise FileNotFoundError(f"corpus manifest not found: {manifest}")
    with open(manifest, newline="", encoding="utf-8") as handle:
        return [
            CorpusFile(
                path=folder / row["path"],
                kind=row["kind"],
                split=row["split"],
                label=row["label"],
                duration=float(row["duration_s"]) if row["duration_s"] not in ("", "-") else 0.0,
                license=row["license"],
                redistributable=row["redistributable"].strip().lower() == "yes",
                note=row.get("note", ""),
            )
            for row in csv.DictReader(handle, delimiter="\t")
        ]


def select(
    files: list[CorpusFile],
    kind: str | None = None,
    split: str | None = None,
    redistributable: bool | None = None,
) -> list[CorpusFile]:
    """The files of one kind and split (``None`` matches anything), sorted by path.

    Example
    -------
    >>> f = [CorpusFile(Path("b.flac"), "noise", "train", "rain", 5.0, "CC0", True, ""),
    ...      CorpusFile(Path("a.flac"), "speech", "train", "103", 9.0, "CC BY", True, "")]
    >>> [x.name for x in select(f, kind="noise")]
    ['b']
    """
    chosen = [
        f for f in files
        if (kind is None or f.kind == kind)
        and (split is None or f.split == split)
        and (redistributable is None or f.redistributable == redistributable)
    ]
    return sorted(chosen, key=lambda f: str(f.path))


def source_split(
    files: list[CorpusFile], valid_every: int = 10
) -> tuple[list[CorpusFile], list[CorpusFile]]:
    """Split the source-domain speech (``speech/train``) into training and validation.

    Every ``valid_every``-th utterance (sorted by path) is held out for validation, so the
    split is fixed, covers LibriSpeech and LJSpeech alike, and never shares an utterance.

    Arguments
    ---------
    files : list of CorpusFile
        The corpus (all of it, or already selected).
    valid_every : int
        One validation utterance per this many.

    Returns
    -------
    train, valid : list of CorpusFile

    Example
    -------
    >>> f = [CorpusFile(Path(f"{i}.flac"), "speech", "train", "s", 1.0, "", True, "")
    ...      for i in range(20)]
    >>> train, valid = source_split(f)
    >>> len(train), [x.name for x in valid]
    (18, ['0', '18'])
    """
    speech = select(files, kind="speech", split="train")
    valid = speech[::valid_every]
    held = {f.path for f in valid}
    return [f for f in speech if f.path not in held], valid
