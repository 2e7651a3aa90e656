"""Atomic writes (#16 items 5 and 6): the umask is respected, a failed write leaves nothing."""

import errno
import json
import math
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from speechbrain_mpol.atomic import atomic_path, strict_json_value, write_json
from speechbrain_mpol.audio import write_audio
from speechbrain_mpol.manifest import write_rows

from .conftest import REPO

WRITERS = {
    "wav": lambda p: write_audio(p, np.zeros(16000, np.float32), 16000),
    "csv": lambda p: write_rows(p, [{"a": 1}]),
    "json": lambda p: write_json(p, {"a": 1}),
}


@pytest.fixture
def umask():
    """Set the process umask for one test, then restore it."""
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask):
        os.umask(mask)

    yield set_mask
    os.umask(old)


@pytest.mark.parametrize("kind", sorted(WRITERS))
@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_files_are_created_with_the_process_umask(tmp_path, umask, kind, mask, mode):
    umask(mask)
    path = tmp_path / f"out.{kind}"
    WRITERS[kind](path)
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_a_failing_block_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "r.csv"
    target.write_text("old")
    with pytest.raises(OSError) as err, atomic_path(target) as tmp:
        Path(tmp).write_text("partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert err.value.errno == errno.ENOSPC
    assert str(err.value) == f"[Errno 28] No space left on device: '{target}'"
    assert target.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["r.csv"]


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_unwritable_folders_are_one_oserror_naming_the_target(tmp_path, monkeypatch, code):
    import speechbrain_mpol.atomic as atomic

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code), args[0])

    monkeypatch.setattr(atomic.os, "open", refuse)
    target = tmp_path / "x.json"
    with pytest.raises(OSError) as err:
        write_json(target, {})
    assert err.value.errno == code and err.value.filename == str(target)
    assert "\n" not in str(err.value) and ".tmp" not in str(err.value)
    assert os.listdir(tmp_path) == []


def _write_json_as_nobody(path: Path) -> str:
    """``write_json(path, {})`` in a forked child running as user nobody: its OSError, as
    ``"errno|message"`` (root itself writes into read-only folders)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root, try the write, report, leave without cleanup
        os.close(read)
        answer = "none|no error"
        try:
            os.setgid(65534)
            os.setuid(65534)
            write_json(path, {})
        except OSError as err:
            answer = f"{err.errno}|{err}"
        finally:
            os.write(write, answer.encode())
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as handle:
        answer = handle.read()
    os.waitpid(pid, 0)
    return answer


def test_a_read_only_folder_for_real(tmp_path):
    """The kernel refuses the write (EACCES); as root, the write runs as user nobody."""
    as_root = os.geteuid() == 0
    # As root, in a folder that nobody can reach (pytest's own folder is private to root).
    base = Path(tempfile.mkdtemp()) if as_root else tmp_path
    base.chmod(0o755)
    folder = base / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if as_root:
            code, message = _write_json_as_nobody(folder / "s.json").split("|", 1)
        else:
            with pytest.raises(OSError) as err:
                write_json(folder / "s.json", {})
            code, message = str(err.value.errno), str(err.value)
        assert int(code) == errno.EACCES and str(folder / "s.json") in message
        assert "\n" not in message
    finally:
        folder.chmod(0o755)
    assert os.listdir(folder) == []
    if as_root:
        shutil.rmtree(base)


def test_a_file_where_the_folder_should_be(tmp_path):
    (tmp_path / "blocker").write_text("")
    with pytest.raises(OSError) as err:
        write_rows(tmp_path / "blocker" / "r.csv", [{"a": 1}])
    assert err.value.errno == errno.ENOTDIR
    assert str(tmp_path / "blocker" / "r.csv") in str(err.value)


def test_the_kernel_refusing_a_write_for_real(tmp_path):
    """A process whose file size limit is 64 kB (RLIMIT_FSIZE): the write fails in the kernel.

    That is EFBIG rather than ENOSPC, through the same path: a partial temporary file that
    must go, the previous output that must stay, one line naming the target.
    """
    script = textwrap.dedent(f"""
        import resource, signal, sys
        import numpy as np
        sys.path.insert(0, {str(REPO)!r})
        from speechbrain_mpol.atomic import write_json
        from speechbrain_mpol.audio import write_audio
        from speechbrain_mpol.manifest import write_rows
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failing write() instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
        folder = sys.argv[1]
        for name, write in [
            ("a.wav", lambda p: write_audio(p, np.ones(80000, np.float32) / 4, 16000)),
            ("r.csv", lambda p: write_rows(p, [{{"x": "y" * 100}}] * 1000)),
            ("s.json", lambda p: write_json(p, list(range(40000)))),
        ]:
            try:
                write(folder + "/" + name)
                print("written", name)
            except OSError as err:
                print(err.errno, err)
    """)
    for name in ("a.wav", "r.csv", "s.json"):
        (tmp_path / name).write_text("previous")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3
    for line, name in zip(lines, ("a.wav", "r.csv", "s.json"), strict=True):
        assert line == f"27 [Errno 27] File too large: '{tmp_path / name}'"
        assert (tmp_path / name).read_text() == "previous"
    assert sorted(os.listdir(tmp_path)) == ["a.wav", "r.csv", "s.json"]


def test_strict_json_has_null_for_undefined_values(tmp_path):
    summary = {"adapted": {"pesq": math.nan, "stoi": np.float32(0.9)},
               "ci95": (np.float64(-math.inf), 1.0), "n": np.int64(3), "ok": True,
               "per_file": np.array([1.0, np.nan])}
    clean = strict_json_value(summary)
    json.dumps(clean, allow_nan=False)  # would raise on a NaN left anywhere
    assert clean == {"adapted": {"pesq": None, "stoi": pytest.approx(0.9)},
                     "ci95": [None, 1.0], "n": 3, "ok": True, "per_file": [1.0, None]}
    write_json(tmp_path / "summary.json", summary)
    text = (tmp_path / "summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict {c}"))["n"] == 3
