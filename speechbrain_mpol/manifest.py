"""Datasets in: SpeechBrain CSV manifests from a folder, a parallel noisy/clean layout, or a CSV.

A manifest has the columns ``ID, duration, noisy_wav, clean_wav`` (``clean_wav`` empty when
there is no reference). Accepted inputs for ``data_folder``:

- a ``.csv`` manifest with those columns;
- the VoiceBank-DEMAND test layout (``noisy_testset_wav[_16k]/`` + ``clean_testset_wav[_16k]/``);
- a folder with ``noisy/`` (and optionally ``clean/``) subfolders of same-named files;
- any folder of audio files (no references), optionally with a parallel ``clean_folder``.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from speechbrain_mpol.atomic import atomic_path
from speechbrain_mpol.audio import duration_seconds

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
FIELDS = ["ID", "duration", "noisy_wav", "clean_wav"]


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)


def _pick_layout(folder: Path, clean_folder: Path | None) -> tuple[Path, Path | None]:
    for noisy_name, clean_name in (
        ("noisy_testset_wav_16k", "clean_testset_wav_16k"),
        ("noisy_testset_wav", "clean_testset_wav"),
        ("noisy", "clean"),
    ):
        if (folder / noisy_name).is_dir():
            clean = folder / clean_name
            return folder / noisy_name, clean_folder or (clean if clean.is_dir() else None)
    return folder, clean_folder


def write_manifest(
    noisy_files: list[Path], clean_folder: Path | None, csv_path: str | os.PathLike
) -> Path:
    """Write a manifest for ``noisy_files``; a clean file of the same name is the reference.

    Arguments
    ---------
    noisy_files : list of Path
        The files to enhance.
    clean_folder : Path, optional
        Folder with same-named clean references (missing ones stay empty).
    csv_path : str or PathLike
        Output CSV.

    Returns
    -------
    Path
        The CSV path.
    """
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    seen: dict[str, int] = {}
    rows = []
    for path in noisy_files:
        uid = path.stem
        seen[uid] = seen.get(uid, 0) + 1
        if seen[uid] > 1:  # same stem, other extension
            uid = f"{uid}_{seen[uid]}"
        clean = clean_folder / path.name if clean_folder else None
        rows.append(
            {
                "ID": uid,
                "duration": f"{duration_seconds(path):.3f}",
                "noisy_wav": str(path.resolve()),
                "clean_wav": str(clean.resolve()) if clean and clean.is_file() else "",
            }
        )
    return write_rows(csv_path, rows, FIELDS)


def write_rows(
    path: str | os.PathLike, rows: list, fields: list[str] | None = None
) -> Path:
    """Write rows as CSV atomically (a temporary file beside it, then a rename).

    An interrupted write leaves the previous file, or none, never a partial one.

    Arguments
    ---------
    path : str or PathLike
        Target CSV; its folder is created if missing.
    rows : list of dict or list of list
        The rows; lists are matched to ``fields`` by position.
    fields : list of str, optional
        Columns; by default the union of the dict rows' keys in first-seen order.

    Returns
    -------
    Path
        ``path``.

    Example
    -------
    >>> import tempfile
    >>> out = write_rows(Path(tempfile.mkdtemp()) / "t.csv", [[1, "a"]], ["n", "s"])
    >>> out.read_text().split()
    ['n,s', '1,a']
    """
    path = Path(path)
    if fields is None:
        fields = []
        for row in rows:
            fields.extend(k for k in row if k not in fields)
    rows = [row if isinstance(row, dict) else dict(zip(fields, row, strict=True))
            for row in rows]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def resolve_manifest(
    data_folder: str | os.PathLike,
    save_folder: str | os.PathLike,
    clean_folder: str | os.PathLike | None = None,
) -> Path:
    """Turn any accepted ``data_folder`` into a manifest CSV (see the module docstring).

    Arguments
    ---------
    data_folder : str or PathLike
        A manifest, a folder in one of the accepted layouts, or a single audio file.
    save_folder : str or PathLike
        Where a generated manifest is written.
    clean_folder : str or PathLike, optional
        Parallel folder of clean references, for a plain folder of noisy files.

    Returns
    -------
    Path
        The manifest to read with ``DynamicItemDataset.from_csv``.
    """
    data = Path(data_folder)
    clean = Path(clean_folder) if clean_folder else None
    if data.suffix.lower() == ".csv":
        if not data.is_file():
            raise FileNotFoundError(f"{data}: manifest not found")
        with open(data, newline="") as handle:
            header = next(csv.reader(handle), [])
        missing = {"ID", "noisy_wav"} - set(header)
        if missing:
            raise ValueError(f"{data}: manifest lacks the column(s) {sorted(missing)}")
        return data
    if data.is_file() and data.suffix.lower() in AUDIO_SUFFIXES:
        return write_manifest([data], clean, Path(save_folder) / "manifest.csv")
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: no such folder, audio file or manifest")
    noisy_dir, clean_dir = _pick_layout(data, clean)
    files = _audio_files(noisy_dir)
    if not files:
        raise FileNotFoundError(f"{noisy_dir}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return write_manifest(files, clean_dir, Path(save_folder) / "manifest.csv")
