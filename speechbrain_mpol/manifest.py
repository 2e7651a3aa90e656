"""Datasets in: SpeechBrain CSV manifests from a folder, a parallel noisy/clean layout, or a CSV.

A manifest has the columns ``ID, duration, noisy_wav, clean_wav``: ``ID`` and ``noisy_wav``
are required; ``clean_wav`` is optional and an empty value means "no reference";
``duration`` is optional (seconds; filled in from the audio header when the column is
missing). Accepted inputs for ``data_folder``:

- a ``.csv`` manifest with those columns;
- the VoiceBank-DEMAND test layout (``noisy_testset_wav[_16k]/`` + ``clean_testset_wav[_16k]/``);
- a folder with ``noisy/`` (and optionally ``clean/``) subfolders of same-named files;
- any folder of audio files (no references), optionally with a parallel ``clean_folder``.

Every manifest is checked before any audio is read (:func:`check_manifest`): a problem is a
:class:`ManifestError` whose one-line message names the file, the line, the ID and the
problem. IDs become output file names (``enhanced/<name>.wav``) through
:func:`safe_output_name`; an ID that would leave the output folder (``../x``, ``/abs``,
``a/b``), is empty, reserved (``CON``, ``NUL``, ...), too long, or writes the same file as
another ID once sanitized (``a b`` and ``a_b``; ``A`` and ``a``, which are one file on
case-insensitive disks) is refused.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
import stat
from pathlib import Path

from speechbrain_mpol.atomic import atomic_path
from speechbrain_mpol.audio import duration_seconds

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
FIELDS = ["ID", "duration", "noisy_wav", "clean_wav"]
REQUIRED = ("ID", "noisy_wav")

#: Longest output name in characters (file systems allow 255 bytes; UTF-8 and ``.wav`` need
#: room).
MAX_NAME = 200
#: Device names that Windows reserves in every folder and with any extension.
RESERVED_NAMES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{base}{i}" for base in ("COM", "LPT") for i in range(1, 10)]
)
#: Characters kept in output names: letters and digits of any script, ``_ - . +``.
_UNSAFE = re.compile(r"[^\w.+-]")
#: ``$name`` in a value: SpeechBrain's ``load_data_csv`` reads it as a variable to replace.
_VARIABLE = re.compile(r"\$([\w.]+)")


class ManifestError(ValueError):
    """A manifest that cannot be used; the message is one line naming the file, row and ID."""


# ------------------------------------------------------------------------- output names
def safe_output_name(uid: str) -> str:
    """The file name (without suffix) an ID is written under.

    Characters other than letters, digits, ``_``, ``-``, ``.`` and ``+`` become ``_``, and
    so does a leading dot (no hidden files, no ``.`` or ``..``). Use
    :func:`output_name_problem` to refuse IDs that must not be written at all.

    Arguments
    ---------
    uid : str
        The utterance ID.

    Returns
    -------
    str
        A name that contains no path separator.

    Example
    -------
    >>> safe_output_name("p232_001"), safe_output_name("a b:c?"), safe_output_name(".hidden")
    ('p232_001', 'a_b_c_', '_hidden')
    >>> safe_output_name("../../x")
    '_._.._x'
    """
    name = _UNSAFE.sub("_", uid)
    return "_" + name[1:] if name.startswith(".") else name


def output_name_problem(uid: str) -> str | None:
    """Why ``uid`` cannot name an output file, or None if it can.

    Example
    -------
    >>> output_name_problem("p232_001") is None
    True
    >>> output_name_problem("../../other/b")
    "ID '../../other/b' contains a path separator and would be written outside the output folder"
    >>> output_name_problem("nul.txt")
    "ID 'nul.txt' is a reserved device name (NUL)"
    """
    if not uid.strip():
        return f"ID {uid!r} is empty"
    if "/" in uid or "\\" in uid or os.path.isabs(uid):
        return (f"ID {uid!r} contains a path separator and would be written outside the "
                "output folder")
    if uid in (".", ".."):
        return f"ID {uid!r} names a folder, not a file"
    if "\x00" in uid:
        return f"ID {uid!r} contains a NUL character"
    base = safe_output_name(uid).split(".")[0].upper()
    if base in RESERVED_NAMES:
        return f"ID {uid!r} is a reserved device name ({base})"
    if len(safe_output_name(uid)) > MAX_NAME:
        return f"ID {uid[:40]!r}... is longer than {MAX_NAME} characters"
    return None


def _name_key(uid: str) -> str:
    """Two IDs with the same key would write the same file (also on case-insensitive disks)."""
    return safe_output_name(uid).casefold()


def output_path(folder: str | os.PathLike, uid: str, suffix: str = ".wav") -> Path:
    """Where the output of ``uid`` goes; always a file inside ``folder``.

    Arguments
    ---------
    folder : str or PathLike
        The output folder (e.g. ``<output_folder>/enhanced``).
    uid : str
        The utterance ID (checked with :func:`output_name_problem`).
    suffix : str
        File suffix.

    Returns
    -------
    pathlib.Path
        ``folder / (safe_output_name(uid) + suffix)``.

    Raises
    ------
    ValueError
        If the ID cannot name a file, or the path resolves outside ``folder`` (e.g. through
        a symbolic link planted in it).

    Example
    -------
    >>> output_path("out", "p232 001").as_posix()
    'out/p232_001.wav'
    """
    problem = output_name_problem(uid)
    if problem:
        raise ValueError(problem)
    folder = Path(folder)
    path = folder / (safe_output_name(uid) + suffix)
    try:
        inside = path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError) as err:  # a symbolic-link loop
        raise ValueError(f"{path}: cannot resolve the output path ({err})") from None
    if not inside:
        raise ValueError(f"{path}: resolves outside {folder} (symbolic link?); refusing to "
                         "write there")
    return path


# ------------------------------------------------------------------------- validation
def _read_header(path: Path, reader) -> list[str]:
    try:
        header = next(reader)
    except StopIteration:
        raise ManifestError(f"{path}: empty manifest (no header line)") from None
    if header and header[0].startswith("\ufeff"):
        raise ManifestError(f"{path}: the header starts with a byte-order mark; save the CSV "
                            "as UTF-8 without BOM")
    seen = set()
    for name in header:
        if name in seen:
            raise ManifestError(f"{path}: column {name!r} appears twice in the header")
        seen.add(name)
    missing = [name for name in REQUIRED if name not in header]
    if missing:
        raise ManifestError(f"{path}: manifest lacks the column(s) {missing} (header: "
                            f"{','.join(header)})")
    return header


def _row_problems(row: dict, header: list[str], fields: list[str]) -> list[str]:
    if len(fields) != len(header):
        return [f"{len(fields)} fields where the header has {len(header)}"]
    problems = []
    if not row["noisy_wav"]:
        problems.append("noisy_wav is empty")
    duration = row.get("duration")
    if duration is not None:
        try:
            seconds = float(duration)
        except ValueError:
            problems.append(f"duration {duration!r} is not a number")
        else:
            if seconds < 0:
                problems.append(f"duration {duration!r} is negative")
    for key, value in row.items():
        match = _VARIABLE.search(value)
        if match:
            problems.append(f"{key} contains {match.group(0)!r}, which SpeechBrain reads as "
                            "a variable to replace")
    return problems


def manifest_problems(
    path: str | os.PathLike, output_dir: str | os.PathLike | None = None
) -> tuple[list[dict[str, str]], list[str]]:
    """Read a manifest and list every problem, one line each; no audio is read.

    The CSV is parsed as SpeechBrain's ``load_data_csv`` parses it (UTF-8,
    ``skipinitialspace``); blank lines are ignored.

    Arguments
    ---------
    path : str or PathLike
        The CSV manifest.
    output_dir : str or PathLike, optional
        The folder the outputs go to (``<output_folder>/enhanced``): an output that would
        overwrite an input of the manifest is a problem.

    Returns
    -------
    rows : list of dict
        The rows, with ``clean_wav`` set to ``""`` where the column is missing.
    problems : list of str
        ``"<file> line <n> (ID <id>): <problem>"`` per problem, in file order.

    Raises
    ------
    ManifestError
        If the file is missing or unreadable, or its header is unusable (nothing else can be
        checked then).
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    rows: list[dict[str, str]] = []
    problems: list[str] = []
    first_line: dict[str, tuple[int, str]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle, skipinitialspace=True)
            header = _read_header(path, reader)
            for fields in reader:
                if not fields:
                    continue
                line = reader.line_num
                row = dict(zip(header, fields, strict=False))  # short rows: reported below
                uid = row.get("ID", "")
                where = f"{path} line {line} (ID {uid!r})"
                row_problems = _row_problems(row, header, fields)
                name_problem = output_name_problem(uid)
                if len(fields) != len(header):
                    pass  # the fields are misplaced; their values say nothing
                elif name_problem:
                    row_problems.append(name_problem)
                else:
                    key = _name_key(uid)
                    if key in first_line:
                        other_line, other = first_line[key]
                        row_problems.append(
                            f"duplicate ID {other!r} (line {other_line})" if other == uid
                            else f"writes the same file as ID {other!r} (line {other_line}):"
                            f" {safe_output_name(uid)}.wav")
                    else:
                        first_line[key] = (line, uid)
                problems.extend(f"{where}: {problem}" for problem in row_problems)
                row.setdefault("clean_wav", "")
                row["_line"] = str(line)
                rows.append(row)
    except UnicodeDecodeError as err:
        raise ManifestError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})")\
            from None
    except csv.Error as err:
        raise ManifestError(f"{path}: not a readable CSV ({err})") from None
    except OSError as err:
        raise ManifestError(f"{path}: cannot read the manifest ({err.strerror})") from None
    if not rows:
        problems.append(f"{path}: no rows (header only); nothing to enhance")
    if output_dir is not None:
        problems.extend(_overwrite_problems(path, rows, Path(output_dir)))
    for row in rows:
        del row["_line"]
    return rows, problems


def _overwrite_problems(path: Path, rows: list[dict[str, str]], output_dir: Path) -> list[str]:
    """Rows whose output would replace an input file of the manifest."""
    inputs: dict[Path, str] = {}
    for row in rows:
        for key in ("noisy_wav", "clean_wav"):
            if row.get(key):
                try:
                    inputs.setdefault(Path(row[key]).resolve(), f"{key} of ID {row.get('ID')!r}")
                except (OSError, RuntimeError):  # a symbolic-link loop: read_audio reports it
                    pass
    problems = []
    for row in rows:
        uid = row.get("ID", "")
        try:
            target = output_path(output_dir, uid)
        except ValueError as err:
            if output_name_problem(uid) is None:  # already reported otherwise
                problems.append(f"{path} line {row['_line']} (ID {uid!r}): {err}")
            continue
        victim = inputs.get(target.resolve())
        if victim:
            problems.append(f"{path} line {row['_line']} (ID {uid!r}): its output "
                            f"{target} is the {victim}; refusing to overwrite an input")
    return problems


def check_manifest(
    path: str | os.PathLike, output_dir: str | os.PathLike | None = None
) -> list[dict[str, str]]:
    """The rows of a manifest, or a :class:`ManifestError` naming its first problem.

    See :func:`manifest_problems` for what is checked. The error message is one line: the
    first problem, then how many more there are (all of them are logged).

    Arguments
    ---------
    path : str or PathLike
        The CSV manifest.
    output_dir : str or PathLike, optional
        The folder the outputs go to, to refuse overwriting an input.

    Returns
    -------
    list of dict
        The rows (``clean_wav`` is ``""`` where the column is missing).

    Example
    -------
    >>> import tempfile
    >>> csv_path = Path(tempfile.mkdtemp()) / "m.csv"
    >>> _ = csv_path.write_text("ID,noisy_wav\\na,a.wav\\n../b,b.wav\\n")
    >>> try:
    ...     check_manifest(csv_path)
    ... except ManifestError as err:
    ...     print(str(err).split(": ", 1)[1])
    ID '../b' contains a path separator and would be written outside the output folder
    """
    rows, problems = manifest_problems(path, output_dir)
    if problems:
        for problem in problems[1:]:
            logger.error("%s", problem)
        more = f" (and {len(problems) - 1} more problem(s), logged)" if len(problems) > 1 else ""
        raise ManifestError(problems[0] + more)
    return rows


# ------------------------------------------------------------------------- folders
def _audio_files(folder: Path) -> list[Path]:
    """The audio files of ``folder``; broken links and link loops are skipped with a message."""
    files = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in AUDIO_SUFFIXES:
            continue
        try:
            mode = path.stat().st_mode
        except OSError as err:  # ELOOP: a symbolic-link loop; ENOENT: a broken link
            logger.warning("skipping %s: %s", path, err.strerror)
            continue
        if not stat.S_ISREG(mode):
            logger.warning("skipping %s: not a regular file", path)
            continue
        files.append(path)
    return files


def unique_ids(stems: list[str]) -> list[str]:
    """One ID per file stem, unique as output names; stems are kept where they can be.

    A stem that cannot name an output file is sanitized (and prefixed with ``_`` if it is a
    reserved name, shortened if too long); a stem whose output name is taken gets ``_2``,
    ``_3``, ... with the first number whose name no other file uses.

    Example
    -------
    >>> unique_ids(["good", "good", "good_2", "CON", "a b", "a_b"])
    ['good', 'good_3', 'good_2', '_CON', 'a b', 'a_b_2']
    """
    candidates = []
    for stem in stems:
        candidate = stem
        if output_name_problem(candidate):
            candidate = safe_output_name(stem)[:MAX_NAME] or "utterance"
            if output_name_problem(candidate):  # reserved device name
                candidate = "_" + candidate
        candidates.append(candidate)
    taken = {_name_key(c) for c in candidates}
    assigned: set[str] = set()
    ids = []
    for candidate in candidates:
        uid, n = candidate, 1
        # A numbered name must not take the name of another file's stem either.
        while _name_key(uid) in assigned or (n > 1 and _name_key(uid) in taken):
            n += 1
            uid = f"{candidate}_{n}"
        assigned.add(_name_key(uid))
        ids.append(uid)
    return ids


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

    IDs are the file stems, made unique as output names by :func:`unique_ids`
    (``good.wav``, ``good.flac`` and ``good_2.wav`` give ``good``, ``good_3``, ``good_2``).

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
    rows = []
    for path, uid in zip(noisy_files, unique_ids([p.stem for p in noisy_files]), strict=True):
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
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _complete(rows: list[dict[str, str]], header_has_duration: bool) -> list[dict[str, str]]:
    """Rows with every column of :data:`FIELDS` (``duration`` from the audio header)."""
    for row in rows:
        if not header_has_duration:
            seconds = duration_seconds(row["noisy_wav"])
            row["duration"] = "nan" if math.isnan(seconds) else f"{seconds:.3f}"
    return rows


def resolve_manifest(
    data_folder: str | os.PathLike,
    save_folder: str | os.PathLike,
    clean_folder: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
) -> Path:
    """Turn any accepted ``data_folder`` into a checked manifest CSV (see the module docstring).

    A CSV given as ``data_folder`` is checked with :func:`check_manifest`; if it lacks the
    optional ``clean_wav`` or ``duration`` columns, a completed copy is written to
    ``save_folder/manifest.csv`` and returned instead.

    Arguments
    ---------
    data_folder : str or PathLike
        A manifest, a folder in one of the accepted layouts, or a single audio file.
    save_folder : str or PathLike
        Where a generated manifest is written.
    clean_folder : str or PathLike, optional
        Parallel folder of clean references, for a plain folder of noisy files.
    output_dir : str or PathLike, optional
        Folder of the enhanced files: a row whose output would overwrite an input is refused.

    Returns
    -------
    Path
        The manifest to read with ``DynamicItemDataset.from_csv``.

    Raises
    ------
    FileNotFoundError
        No such folder or file, or a folder without audio files.
    ManifestError
        A ``ValueError`` with one line naming the row and the problem.
    """
    data = Path(data_folder)
    clean = Path(clean_folder) if clean_folder else None
    save = Path(save_folder) / "manifest.csv"
    if data.suffix.lower() == ".csv":
        if not data.is_file():
            raise FileNotFoundError(f"{data}: manifest not found")
        rows = check_manifest(data, output_dir)
        with open(data, newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle, skipinitialspace=True))
        if all(name in header for name in FIELDS):
            return data
        if save.resolve() == data.resolve():
            raise ManifestError(f"{data}: lacks columns {[f for f in FIELDS if f not in header]}"
                                f" and would be completed onto itself; move it or set "
                                "save_folder elsewhere")
        fields = FIELDS + [name for name in header if name not in FIELDS]
        logger.info("%s: completed with columns %s in %s", data,
                    [f for f in FIELDS if f not in header], save)
        return write_rows(save, _complete(rows, "duration" in header), fields)
    if data.is_file() and data.suffix.lower() in AUDIO_SUFFIXES:
        written = write_manifest([data], clean, save)
    else:
        if not data.is_dir():
            raise FileNotFoundError(f"{data}: no such folder, audio file or manifest")
        noisy_dir, clean_dir = _pick_layout(data, clean)
        files = _audio_files(noisy_dir)
        if not files:
            raise FileNotFoundError(f"{noisy_dir}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
        written = write_manifest(files, clean_dir, save)
    check_manifest(written, output_dir)
    return written
