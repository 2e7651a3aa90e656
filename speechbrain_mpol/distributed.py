"""Multi-process enhancement: shard a manifest over ranks, merge the per-rank result CSVs.

Independent of CUDA: the process group may use ``gloo`` on CPU. Launch with
``torchrun --nproc_per_node=N recipes/adapt.py ...``; SpeechBrain's ``ddp_init_group`` sets
the group up, each process enhances :func:`shard_rows` of the manifest, writes its own CSV,
waits at ``ddp_barrier``, and the main process merges them with :func:`merge_result_csvs`.

Continual adaptation is per process: every rank adapts on its own shard's stream, so a
continual run over N ranks is N independent streams (episodic adaptation and the source model
give the same outputs however the manifest is sharded).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from speechbrain_mpol.manifest import write_rows

Row = TypeVar("Row")


def shard_rows(
    rows: Sequence[Row], rank: int, world_size: int, strided: bool = False
) -> list[Row]:
    """The rows that rank ``rank`` of ``world_size`` processes; every row is in exactly one shard.

    Arguments
    ---------
    rows : sequence
        Manifest rows, in manifest order.
    rank, world_size : int
        This process and the number of processes.
    strided : bool
        False: contiguous blocks (sizes differ by at most one, earlier ranks get the extra
        rows), which keeps a continual stream in manifest order. True: every ``world_size``-th
        row from ``rank`` (balances lengths when the manifest is sorted by duration).

    Returns
    -------
    list
        This rank's rows, in manifest order.

    Example
    -------
    >>> [shard_rows(range(5), r, 2) for r in (0, 1)]
    [[0, 1, 2], [3, 4]]
    >>> [shard_rows(range(5), r, 2, strided=True) for r in (0, 1)]
    [[0, 2, 4], [1, 3]]
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    rows = list(rows)
    if strided:
        return rows[rank::world_size]
    base, extra = divmod(len(rows), world_size)
    start = rank * base + min(rank, extra)
    return rows[start:start + base + (1 if rank < extra else 0)]


def merge_result_csvs(
    paths: Iterable[str | os.PathLike],
    out_path: str | os.PathLike,
    key: str = "ID",
    manifest_ids: Sequence[str] | None = None,
) -> Path:
    """Merge per-rank result CSVs into one, in manifest order; written atomically.

    Arguments
    ---------
    paths : iterable of path
        The per-rank CSVs (same columns; a header each).
    out_path : str or PathLike
        The merged CSV.
    key : str
        Column that identifies a row.
    manifest_ids : sequence of str, optional
        The manifest's IDs in order. If given, the merged rows follow it and an ID that is
        missing or not in the manifest is an error; if not, rows keep the order of ``paths``.

    Returns
    -------
    pathlib.Path
        ``out_path``.

    Raises
    ------
    ValueError
        A duplicated ID (naming the files), a missing or unexpected ID, or differing columns.

    Example
    -------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> for r, text in enumerate(["ID,x\\nb,2\\n", "ID,x\\na,1\\n"]):
    ...     _ = open(os.path.join(d, f"r{r}.csv"), "w").write(text)
    >>> out = merge_result_csvs([os.path.join(d, f"r{r}.csv") for r in (0, 1)],
    ...                         os.path.join(d, "all.csv"), manifest_ids=["a", "b"])
    >>> open(out).read().split()
    ['ID,x', 'a,1', 'b,2']
    """
    rows: dict[str, dict[str, str]] = {}
    source: dict[str, str] = {}
    fields: list[str] | None = None
    for path in paths:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None:
                continue  # an empty shard's file (a rank with no rows may write no header)
            if key not in reader.fieldnames:
                raise ValueError(f"{path}: no {key!r} column (columns: {reader.fieldnames})")
            if fields is None:
                fields = list(reader.fieldnames)
            elif set(reader.fieldnames) != set(fields):
                raise ValueError(f"{path}: columns {reader.fieldnames} differ from {fields}")
            for row in reader:
                ident = row[key]
                if ident in rows:
                    raise ValueError(f"duplicate {key} {ident!r} in {source[ident]} and {path}")
                rows[ident] = row
                source[ident] = str(path)
    order = list(rows)
    if manifest_ids is not None:
        expected = list(manifest_ids)
        missing = [i for i in expected if i not in rows]
        unexpected = sorted(set(rows) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"merged results do not match the manifest: {len(missing)} missing "
                f"{missing[:10]}, {len(unexpected)} not in the manifest {unexpected[:10]}"
            )
        order = expected
    return write_rows(out_path, [rows[ident] for ident in order], fields or [key])
