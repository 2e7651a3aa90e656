"""Atomic file output: write beside the target, then rename over it.

An interrupted or failed write leaves the previous file (or none), never a half-written one,
and no temporary file behind; readers never see a partial result.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """A temporary path beside ``path`` that replaces ``path`` when the block succeeds.

    The folder of ``path`` is created if missing. If the block raises, the temporary file is
    removed and ``path`` is left as it was.

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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
