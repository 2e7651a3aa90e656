"""Resume state of a run: small, tied to its data and settings, saved with SpeechBrain's hooks.

A run over a manifest is resumed from the last checkpoint of its output folder, and only when
that checkpoint was made for the same manifest (IDs, file paths, sizes and modification
times) and the same output-changing settings: anything else refuses with one line naming what
differs (:class:`StaleProgressError`), or starts over with ``overwrite=True``. Rows of two
runs are never mixed.

What is saved is what changes during a run, in two recoverables registered with SpeechBrain's
checkpoint hooks (``register_checkpoint_hooks``, ``mark_as_saver``, ``mark_as_loader``):

- :class:`RunProgress`: the finished result rows, the failed files, counters and the stream
  position (a JSON file);
- :class:`AdaptedState`: the adapter's own state, through the adapter's
  ``adapted_state() -> dict`` and ``load_adapted_state(dict)``: the adapted parameters (not
  the whole model: every other weight is the source's), the optimizer state, accumulated
  gradients and counters (a torch file loaded with ``weights_only=True``).

:class:`ProgressCheckpointer` is a ``speechbrain.utils.checkpoints.Checkpointer`` with two
changes. Its checkpoints are per process: each rank of a ``torchrun`` job adapts on its own
stream and saves its own folder, so saving and pruning make no collective call (the base class
broadcasts and waits at barriers, which deadlocks ranks whose shards differ in length). And a
checkpoint is complete or absent: the files are written first and the ``CKPT.yaml`` that makes
a folder a checkpoint last, so a full disk or a kill during a save leaves the previous
checkpoint as the latest; a failed save removes its folder and raises one ``OSError`` naming
it.

Example
-------
>>> import tempfile
>>> progress = RunProgress()
>>> keeper = ProgressCheckpointer(tempfile.mkdtemp(), {"progress": progress},
...                               run_key([{"ID": "a", "noisy_wav": "/no/a.wav"}], {"lr": 5e-4}))
>>> keeper.resume() is None  # nothing to resume
True
>>> progress.add({"ID": "a", "pesq": 2.5}, seconds=3.0)
>>> keeper.save()
>>> progress.rows = []
>>> keeper.resume() is not None, progress.rows
(True, [{'ID': 'a', 'pesq': 2.5}])
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import torch
import yaml
from speechbrain.utils.checkpoints import (
    CKPT_PREFIX,
    DEFAULT_SAVE_HOOKS,
    METAFNAME,
    PARAMFILE_EXT,
    Checkpoint,
    Checkpointer,
    ckpt_recency,
    get_default_hook,
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)

from speechbrain_mpol.atomic import atomic_write_bytes, atomic_write_text

logger = logging.getLogger(__name__)

#: File beside the checkpoints naming the batch being processed (see
#: :meth:`ProgressCheckpointer.begin`).
IN_FLIGHT = "in_flight.json"
#: File left by :meth:`ProgressCheckpointer.finish`: the key of the run whose results the
#: output folder holds.
FINISHED = "finished.json"


class StaleProgressError(RuntimeError):
    """The output folder holds progress of another run; the message is one line."""


# ------------------------------------------------------------------------- fingerprints
def _file_signature(path: str, hash_contents: bool) -> list:
    """``[path, size, mtime_ns]`` (or a SHA-256 of the bytes) of one input file."""
    try:
        info = os.stat(path)
    except OSError as err:
        return [path, f"unreadable: {err.strerror}"]
    if not hash_contents:
        return [path, info.st_size, info.st_mtime_ns]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(partial(handle.read, 1 << 20), b""):
            digest.update(block)
    return [path, info.st_size, digest.hexdigest()]


def manifest_fingerprint(
    rows: Iterable[Mapping[str, str]], hash_contents: bool = False
) -> str:
    """A digest of a manifest: its IDs in order and each file's path, size and mtime.

    Arguments
    ---------
    rows : iterable of mapping
        Rows with ``ID``, ``noisy_wav`` and optionally ``clean_wav`` (e.g. from
        :func:`speechbrain_mpol.manifest.check_manifest`).
    hash_contents : bool
        Hash the files' bytes instead of trusting size and modification time (reads every
        file once).

    Returns
    -------
    str
        Hex SHA-256.

    Example
    -------
    >>> a = manifest_fingerprint([{"ID": "a", "noisy_wav": "/no/a.wav", "clean_wav": ""}])
    >>> a == manifest_fingerprint([{"ID": "b", "noisy_wav": "/no/a.wav"}])
    False
    """
    entries = []
    for row in rows:
        entry = [row["ID"], _file_signature(row["noisy_wav"], hash_contents)]
        if row.get("clean_wav"):
            entry.append(_file_signature(row["clean_wav"], hash_contents))
        entries.append(entry)
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def _plain(value: Any, key: str) -> Any:
    """``value`` as JSON data that names it exactly, or a TypeError naming the setting."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{key}.{k}") for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_plain(v, key) for v in value]
    if isinstance(value, (Path, torch.device, torch.dtype)):
        return str(value)
    if isinstance(value, partial):  # hyperpyyaml's !name: tags
        return {"callable": _plain(value.func, key), "args": _plain(value.args, key),
                "kwargs": _plain(value.keywords, key)}
    if isinstance(value, type) or (callable(value) and hasattr(value, "__qualname__")):
        return f"{value.__module__}.{value.__qualname__}"
    raise TypeError(f"setting {key!r}: cannot fingerprint a {type(value).__name__}; pass "
                    "plain values (numbers, strings, lists, dicts)")


def plain_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings as plain JSON data (what is compared between runs).

    Example
    -------
    >>> plain_settings({"lr": 5e-4, "opt": partial(torch.optim.AdamW, lr=5e-4)})["opt"]
    {'callable': 'torch.optim.adamw.AdamW', 'args': [], 'kwargs': {'lr': 0.0005}}
    """
    return {str(k): _plain(v, str(k)) for k, v in sorted(settings.items())}


def run_key(
    manifest_rows: Iterable[Mapping[str, str]],
    settings: Mapping[str, Any],
    hash_contents: bool = False,
) -> dict[str, Any]:
    """What identifies a run: fingerprints of its manifest and of its settings.

    Arguments
    ---------
    manifest_rows : iterable of mapping
        The rows enhanced by this process (its shard under ``torchrun``).
    settings : mapping
        Every setting that changes the outputs (model, adapted parameters, mode, lr, crop,
        sample rate, write subtype, ...), as plain values; not the output folder or the
        number of workers.
    hash_contents : bool
        See :func:`manifest_fingerprint`.

    Returns
    -------
    dict
        ``{"manifest", "rows", "settings", "settings_values"}``, stored in each checkpoint's
        meta file.
    """
    rows = list(manifest_rows)
    values = plain_settings(settings)
    return {
        "manifest": manifest_fingerprint(rows, hash_contents),
        "rows": len(rows),
        "settings": hashlib.sha256(json.dumps(values).encode()).hexdigest(),
        "settings_values": json.dumps(values),
    }


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as one level, keys joined by dots (``method.lr``), so that a difference
    names the setting, not the whole group.

    Example
    -------
    >>> _flatten({"method": {"lr": 0.001, "mode": "episodic"}, "seed": 1})
    {'method.lr': 0.001, 'method.mode': 'episodic', 'seed': 1}
    """
    flat: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def _differences(saved: Mapping[str, Any], key: Mapping[str, Any]) -> str:
    """What differs between two run keys, in words."""
    parts = []
    if saved.get("manifest") != key["manifest"]:
        parts.append(f"the manifest differs ({saved.get('rows')} rows then, {key['rows']} now, "
                     "or other files, sizes or modification times)")
    if saved.get("settings") != key["settings"]:
        then = _flatten(json.loads(saved.get("settings_values", "{}")))
        now = _flatten(json.loads(key["settings_values"]))
        changed = [f"{name} {then.get(name)!r} -> {now.get(name)!r}"
                   for name in sorted(set(then) | set(now)) if then.get(name) != now.get(name)]
        parts.append("settings differ (" + "; ".join(changed) + ")")
    return " and ".join(parts)


# ------------------------------------------------------------------------- recoverables
class RunProgress:
    """What a run has finished: result rows, failed files, counters, the stream position.

    A recoverable for a ``Checkpointer`` (saved as JSON). Every utterance consumed from the
    (deterministic) stream has a row, failed ones too (with their problem); the position is
    the number of rows, and a resumed run skips :attr:`finished_ids`.

    Example
    -------
    >>> progress = RunProgress()
    >>> progress.add({"ID": "a", "pesq": 2.0}, seconds=1.5)
    >>> progress.add({"ID": "b", "problem": "PESQ crashed"})
    >>> progress.fail("b", "/data/b.wav", "PESQ crashed", stage="scoring")
    >>> progress.position, sorted(progress.finished_ids), progress.audio_seconds
    (2, ['a', 'b'], 1.5)
    """

    def __init__(self):
        self.rows: list[dict[str, Any]] = []
        self.failed: list[dict[str, str]] = []
        self.audio_seconds = 0.0
        self.elapsed = 0.0

    @property
    def position(self) -> int:
        """Utterances consumed so far (finished or failed)."""
        return len(self.rows)

    @property
    def finished_ids(self) -> set[str]:
        """IDs that a resumed run must not process again."""
        return {row["ID"] for row in self.rows} | {item["ID"] for item in self.failed}

    def add(self, row: dict[str, Any], seconds: float = 0.0) -> None:
        """Record one consumed utterance (``row`` has an ``ID``) of ``seconds`` of audio."""
        self.rows.append(row)
        self.audio_seconds += float(seconds)

    def fail(self, uid: str, file: str, problem: str, stage: str = "enhancement") -> None:
        """Report an utterance as failed (in the summary; never retried).

        ``stage`` is ``"enhancement"`` (nothing was delivered) or ``"scoring"`` (the file was
        delivered, a score is missing).
        """
        self.failed.append({"ID": uid, "file": str(file), "problem": problem, "stage": stage})

    @mark_as_saver
    def save(self, path: str | os.PathLike) -> None:
        """Write the state as JSON (nan kept as ``NaN``: a private file, read back by us)."""
        state = {"rows": self.rows, "failed": self.failed, "audio_seconds": self.audio_seconds,
                 "elapsed": self.elapsed}
        atomic_write_text(path, json.dumps(state, default=float))

    @mark_as_loader
    def load(self, path: str | os.PathLike, end_of_epoch: bool = True) -> None:
        """Read the state written by :meth:`save`."""
        del end_of_epoch  # a run has no epochs
        state = json.loads(Path(path).read_text())
        self.rows = state["rows"]
        self.failed = state["failed"]
        self.audio_seconds = state["audio_seconds"]
        self.elapsed = state["elapsed"]


class ResumableAdapter(Protocol):
    """What :class:`AdaptedState` needs from an adapter."""

    def adapted_state(self) -> dict:
        """Adapted parameters, optimizer state, accumulated gradients and counters."""

    def load_adapted_state(self, state: dict) -> None:
        """Continue the stream from :meth:`adapted_state`."""


class AdaptedState:
    """Checkpoint hooks around an adapter's ``adapted_state`` / ``load_adapted_state``.

    The state is rendered in memory and written in one piece (a torch zip archive that
    ``torch.load(..., weights_only=True)`` reads: tensors, numbers, strings, dicts, lists), so
    that a full disk is a plain ``OSError``; torch's own writer reports it as a
    ``RuntimeError`` without an errno.

    Arguments
    ---------
    adapter : object
        Has ``adapted_state() -> dict`` and ``load_adapted_state(dict)``.
    """

    def __init__(self, adapter: ResumableAdapter):
        self.adapter = adapter

    @mark_as_saver
    def save(self, path: str | os.PathLike) -> None:
        """Write ``adapter.adapted_state()``."""
        buffer = io.BytesIO()
        torch.save(self.adapter.adapted_state(), buffer)
        atomic_write_bytes(path, buffer.getvalue())

    @mark_as_loader
    def load(self, path: str | os.PathLike, end_of_epoch: bool = True) -> None:
        """Give the saved state to ``adapter.load_adapted_state``."""
        del end_of_epoch
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.adapter.load_adapted_state(state)


# Per process: the base registration would save on rank 0 only and broadcast.
register_checkpoint_hooks(RunProgress, save_on_main_only=False)
register_checkpoint_hooks(AdaptedState, save_on_main_only=False)


# ------------------------------------------------------------------------- checkpointer
class ProgressCheckpointer(Checkpointer):
    """A per-process ``Checkpointer`` whose checkpoints belong to one run (see the module doc).

    Arguments
    ---------
    checkpoints_dir : str or PathLike
        This process's folder of checkpoints (e.g. ``<output_folder>/checkpoints``).
    recoverables : mapping
        Name -> object with registered hooks, typically
        ``{"progress": RunProgress(), "adapter": AdaptedState(adapter)}``.
    key : dict
        :func:`run_key` of this run.
    """

    def __init__(
        self,
        checkpoints_dir: str | os.PathLike,
        recoverables: Mapping[str, Any],
        key: Mapping[str, Any],
    ):
        super().__init__(checkpoints_dir, dict(recoverables))
        self.key = dict(key)

    # -------------------------------------------------------------- base-class overrides
    def save_checkpoint(self, meta=None, end_of_epoch=True, name=None, verbosity=logging.INFO):
        """Save every recoverable, then the meta file; no collective call.

        Returns
        -------
        Checkpoint
            The saved checkpoint.

        Raises
        ------
        OSError
            One line naming the checkpoint folder, if anything could not be written; the
            partial folder is removed and the previous checkpoint stays the latest.
        """
        folder = (self._new_checkpoint_dirpath() if name is None
                  else self._custom_checkpoint_dirpath(name))
        try:
            os.makedirs(folder)
            paramfiles = {}
            for rname, obj in self.recoverables.items():
                path = folder / f"{rname}{PARAMFILE_EXT}"
                hook = self.custom_save_hooks.get(rname) or get_default_hook(
                    obj, DEFAULT_SAVE_HOOKS)
                if hook is None:
                    raise TypeError(f"no checkpoint save hook for {type(obj).__name__}")
                hook(obj, path)
                paramfiles[rname] = path
            saved_meta = {"unixtime": time.time(), "end-of-epoch": end_of_epoch, **(meta or {})}
            # The meta file makes the folder a checkpoint, so it comes last.
            atomic_write_text(folder / METAFNAME, "# yamllint disable\n" + yaml.dump(saved_meta))
        except BaseException as err:
            shutil.rmtree(folder, ignore_errors=True)
            if isinstance(err, OSError):
                raise OSError(err.errno, f"cannot save progress in {folder} "
                              f"({err.strerror or err})") from None
            raise
        logger.log(verbosity, "saved progress in %s", folder)
        return Checkpoint(folder, saved_meta, paramfiles)

    def delete_checkpoints(self, *, num_to_keep=1, min_keys=None, max_keys=None,
                           importance_keys=(ckpt_recency,), ckpt_predicate=None,
                           verbosity=logging.INFO):
        """Delete all but ``num_to_keep`` checkpoints per key (as the base class), locally."""
        keys = ([{"min_key": k} for k in min_keys or []]
                + [{"max_key": k} for k in max_keys or []]
                + [{"importance_key": k} for k in importance_keys])
        doomed, kept = set(), set()
        for kwargs in keys:
            doomed.update(self.find_checkpoints(ckpt_predicate=ckpt_predicate, **kwargs))
            kept.update(self.find_checkpoints(ckpt_predicate=ckpt_predicate,
                                              max_num_checkpoints=num_to_keep, **kwargs))
        for ckpt in doomed - kept:
            shutil.rmtree(ckpt.path, ignore_errors=True)
            logger.log(verbosity, "deleted progress in %s", ckpt.path)

    # -------------------------------------------------------------- the run's life cycle
    def _remove_partial(self) -> None:
        """Folders of saves that never completed (killed before their meta file)."""
        for path in self.checkpoints_dir.glob(f"{CKPT_PREFIX}+*"):
            if path.is_dir() and not (path / METAFNAME).exists():
                shutil.rmtree(path, ignore_errors=True)

    def clear(self) -> None:
        """Forget every checkpoint and marker of this folder (a run starting over)."""
        for ckpt in self.list_checkpoints():
            shutil.rmtree(ckpt.path, ignore_errors=True)
        self._remove_partial()
        for name in (IN_FLIGHT, FINISHED):
            (self.checkpoints_dir / name).unlink(missing_ok=True)

    def resume(self, overwrite: bool = False) -> Checkpoint | None:
        """Load the latest checkpoint of this run, if any.

        Arguments
        ---------
        overwrite : bool
            Start over: forget whatever the folder holds, of this run or another.

        Returns
        -------
        Checkpoint or None
            The checkpoint loaded, or None for a fresh start (no checkpoint, or the folder
            holds the finished results of this same run).

        Raises
        ------
        StaleProgressError
            The folder holds progress or finished results of another run (other manifest or
            other settings); the message says what differs and how to start over.
        """
        if overwrite:
            self.clear()
            return None
        latest = self.find_checkpoint()
        saved = latest.meta.get("run") if latest else self._read(FINISHED)
        if saved is not None and (saved.get("manifest"), saved.get("settings")) != (
                self.key["manifest"], self.key["settings"]):
            what = "progress" if latest else "the finished results"
            raise StaleProgressError(
                f"{self.checkpoints_dir}: holds {what} of another run: "
                f"{_differences(saved, self.key)}; rerun with --overwrite=True to start over, "
                "or choose another output_folder")
        if latest is None:
            return None
        try:
            self.load_checkpoint(latest)
        except Exception as err:  # a damaged file: say which, and how to get out
            raise StaleProgressError(
                f"{latest.path}: cannot load progress ({type(err).__name__}: {err}); rerun "
                "with --overwrite=True to start over") from None
        return latest

    def save(self) -> None:
        """Save a checkpoint of this run and delete the older ones (and any partial save).

        Raises
        ------
        OSError
            One line naming the folder when the disk is full or read-only; nothing partial
            is left and the previous checkpoint is kept.
        """
        self._remove_partial()
        self.save_and_keep_only(meta={"run": self.key}, num_to_keep=1,
                                importance_keys=[], verbosity=logging.DEBUG)
        (self.checkpoints_dir / IN_FLIGHT).unlink(missing_ok=True)

    def end_batch(self) -> None:
        """The batch started by :meth:`begin` stopped in Python (a full disk, Ctrl-C): it did
        not stop the process, so a rerun does not count it as a start that did."""
        (self.checkpoints_dir / IN_FLIGHT).unlink(missing_ok=True)

    def finish(self) -> None:
        """The run is complete: drop its checkpoints, keep its key (see :meth:`resume`)."""
        atomic_write_text(self.checkpoints_dir / FINISHED, json.dumps(self.key))
        for ckpt in self.list_checkpoints():
            shutil.rmtree(ckpt.path, ignore_errors=True)
        (self.checkpoints_dir / IN_FLIGHT).unlink(missing_ok=True)

    # -------------------------------------------------------------- crash guard
    def _read(self, name: str) -> dict | None:
        try:
            return json.loads((self.checkpoints_dir / name).read_text())
        except (OSError, ValueError):
            return None

    def begin(self, ids: Iterable[str]) -> int:
        """Mark ``ids`` as being processed; how many times they have been started.

        1 the first time. More means an earlier run stopped (was killed, or crashed in
        native code) while processing them and before :meth:`save`: the caller says so,
        and after ``n`` attempts fails the utterances instead of retrying them forever.

        Example
        -------
        >>> import tempfile
        >>> keeper = ProgressCheckpointer(tempfile.mkdtemp(), {"progress": RunProgress()},
        ...                               run_key([], {}))
        >>> keeper.begin(["a"]), keeper.begin(["a"]), keeper.begin(["b"])
        (1, 2, 1)
        """
        ids = list(ids)
        marker = self._read(IN_FLIGHT) or {}
        same = marker.get("ids") == ids and marker.get("manifest") == self.key["manifest"]
        attempts = marker.get("attempts", 0) + 1 if same else 1
        atomic_write_text(self.checkpoints_dir / IN_FLIGHT, json.dumps(
            {"ids": ids, "attempts": attempts, "manifest": self.key["manifest"]}))
        return attempts
