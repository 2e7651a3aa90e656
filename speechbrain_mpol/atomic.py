"""Atomic file output: write beside the target, then rename over it.

An interrupted or failed write leaves the previous file (or none), never a half-written one,
and no temporary file behind; readers never see a partial result. Files are created with the
process umask (like ``open(path, "w")``), not the 0600 of :func:`tempfile.mkstemp`. A write
that fails for lack of space or permission (ENOSPC, EFBIG, EROFS, EACCES, ...) surfaces as one
``OSError`` that keeps the ``errno`` and names the target, e.g.
``[Errno 28] No space left on device: 'out/results.csv'``.

Example
-------
>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> write_json(folder / "summary.json", {"pesq": float("nan"), "n": 2})
>>> (folder / "summary.json").read_text()
'{\\n  "pesq": null,\\n  "n": 2\\n}\\n'
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _one_line(err: OSError, path: Path) -> OSError:
    """``err`` as one ``OSError`` naming ``path`` (the target, not the temporary file)."""
    if err.errno is None:
        return OSError(f"{path}: {err}")
    return OSError(err.errno, err.strerror or os.strerror(err.errno), str(path))


#: Names of the temporary files of :func:`atomic_path`: ``.<name>.<8 hex digits>.tmp``.
_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")


def _create_beside(path: Path) -> str:
    """Create an empty, unique temporary file beside ``path``; its mode follows the umask."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            # 0o666 & ~umask, as for any new file; mkstemp would force 0600.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return str(tmp)
    raise FileExistsError(f"{path}: no free temporary name beside it")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """A temporary path beside ``path`` that replaces ``path`` when the block succeeds.

    The folder of ``path`` is created if missing. If the block raises, the temporary file is
    removed and ``path`` is left as it was; an ``OSError`` (disk full, read-only file system,
    permission) is raised again as one ``OSError`` with the same ``errno`` naming ``path``.

    Arguments
    ---------
    path : str or PathLike
        The final file.

    Yields
    ------
    str
        Where to write (same folder, so the final rename is atomic).

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with atomic_path(folder / "a.txt") as tmp:
    ...     _ = Path(tmp).write_text("done")
    >>> try:
    ...     with atomic_path(folder / "a.txt") as tmp:
    ...         _ = Path(tmp).write_text("half")
    ...         raise KeyboardInterrupt
    ... except KeyboardInterrupt:
    ...     pass
    >>> (folder / "a.txt").read_text(), sorted(p.name for p in folder.iterdir())
    ('done', ['a.txt'])
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file where a folder should be, here or further up
        raise OSError(errno.ENOTDIR, "a file stands where its folder should be",
                      str(path)) from None
    except OSError as err:
        raise _one_line(err, path) from None
    try:
        tmp = _create_beside(path)
    except OSError as err:
        raise _one_line(err, path) from None
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(err, OSError):
            raise _one_line(err, path) from None
        raise


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that a killed process left in ``folder`` (not recursive).

    Only names :func:`atomic_path` makes (``.<name>.<8 hex digits>.tmp``) are touched. Call
    it where no other process writes at the same time (e.g. when a run starts).

    Returns
    -------
    list of Path
        The files deleted.

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / ".a.wav.0123abcd.tmp").write_bytes(b"half")
    >>> _ = (folder / "keep.tmp").write_bytes(b"")
    >>> [p.name for p in remove_stale_temporaries(folder)], sorted(os.listdir(folder))
    (['.a.wav.0123abcd.tmp'], ['keep.tmp'])
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.iterdir():
        if _TEMPORARY.match(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`).

    Arguments
    ---------
    path : str or PathLike
        Target file; its folder is created if missing.
    data : bytes
        The whole content. Serializers that report write errors badly (libsndfile, torch's
        zip writer raise ``RuntimeError`` without an errno) can render into memory first, so
        that a full disk shows up here as a plain ``OSError``.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_path`).

    Example
    -------
    >>> import tempfile
    >>> atomic_write_text(Path(tempfile.mkdtemp()) / "a.txt", "hi").read_text()
    'hi'
    """
    return atomic_write_bytes(path, text.encode("utf-8"))


def strict_json_value(value: Any) -> Any:
    """``value`` with every non-finite float (nan, inf) replaced by ``None``, recursively.

    Strict JSON (RFC 8259, ``json.dumps(..., allow_nan=False)``) has no NaN or Infinity; an
    undefined metric is ``null``. numpy scalars and arrays become Python numbers and lists;
    tuples become lists.

    Example
    -------
    >>> strict_json_value({"a": float("nan"), "b": [1.5, float("-inf")], "c": (2, "x")})
    {'a': None, 'b': [1.5, None], 'c': [2, 'x']}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: strict_json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json_value(item) for item in value]
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy / torch scalars, arrays
        return strict_json_value(value.tolist())
    return value


def write_json(path: str | os.PathLike, data: Any, indent: int | None = 2) -> None:
    """Write ``data`` as strict JSON (nan and inf as ``null``), atomically.

    Arguments
    ---------
    path : str or PathLike
        Target file; its folder is created if missing.
    data : object
        JSON-serializable data; non-finite floats anywhere in it are written as ``null``.
    indent : int, optional
        Indentation of :func:`json.dumps`.
    """
    text = json.dumps(strict_json_value(data), indent=indent, allow_nan=False)
    atomic_write_text(path, text + "\n")
