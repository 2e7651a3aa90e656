"""Issue #16 through the real command line: no input overwrites another, kills the run or
loops its resume; every refusal is one line; the scores are those of the delivered files.

The poison files run ``recipes/adapt.py`` in a subprocess (a crash there must not take the run
down); the refusals run its ``main`` in this process (they stop before any audio is read).
GTCRN-VCTK (committed weights) on 1.5 s files keeps the runs short.
"""

import csv
import errno
import json
import os
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from speechbrain_mpol.audio import read_audio
from speechbrain_mpol.metrics import score_pair

from .conftest import EXAMPLES, REPO, SHARED, real_mixture

RATE = 16000
HPARAMS = str(REPO / "hparams" / "mpol_voicebank.yaml")
#: Fast settings shared by the runs: GTCRN, no source model or input scores, no plots.
FAST = ["--model=gtcrn_vctk", "--compare_to_source=False", "--score_noisy=False",
        "--plots=False", f"--shared_folder={SHARED}"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _cli(out, *extra):
    return [sys.executable, str(REPO / "recipes" / "adapt.py"), HPARAMS,
            f"--output_folder={out}", *FAST, *extra]


def _run(out, *extra, timeout=600, **kwargs):
    """The CLI in a subprocess; its CompletedProcess (text)."""
    return subprocess.run(_cli(out, *extra), cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def _main(out, *extra):
    """The CLI's ``main`` in this process (for runs refused before any audio is read)."""
    import runpy

    main = runpy.run_path(str(REPO / "recipes" / "adapt.py"))["main"]
    return main([HPARAMS, f"--output_folder={out}", *FAST, *extra])


def _rows(out) -> dict[str, dict]:
    with open(out / "results.csv", newline="") as handle:
        return {row["ID"]: row for row in csv.DictReader(handle)}


def _strict_json(path):
    """Parse ``path`` as strict JSON (RFC 8259: no NaN or Infinity)."""
    def refuse(name):
        raise ValueError(f"{path}: {name} is not strict JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def _last_line(proc) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stderr.strip().splitlines()[-1]


def _pair(folder, uid, noisy, clean=None):
    """Write ``noisy/<uid>.wav`` (and ``clean/<uid>.wav``) as float WAV."""
    for sub, wav in (("noisy", noisy), ("clean", clean)):
        if wav is not None:
            (folder / sub).mkdir(parents=True, exist_ok=True)
            sf.write(folder / sub / f"{uid}.wav", np.asarray(wav, np.float32), RATE,
                     subtype="FLOAT")


def _good_pairs(folder, example_audio, count=2, seconds=1.5, level_db=None):
    for i in range(count):
        noisy, clean = real_mixture(example_audio, snr=5.0, seconds=seconds, seed=i,
                                    speech=f"ex{i + 2:02d}", noise=f"ex{i + 5:02d}")
        noisy, clean = noisy.numpy(), clean.numpy()
        if level_db is not None:  # a quiet recording: the noisy input at level_db dBFS RMS
            gain = 10 ** (level_db / 20) / np.sqrt(np.mean(noisy**2))
            noisy, clean = gain * noisy, gain * clean
        _pair(folder, f"good{i}", noisy, clean)


# ------------------------------------------------------------------ 2, 6, 7: poison files
def test_poison_files_are_reported_and_the_run_completes(tmp_path, example_audio):
    """#16 items 2 (a, b, c) and 6 in one real run: each bad file is reported, none stops it.

    - ``pesq_crash``: a 120 s reference on which the pesq package segfaults;
    - ``one_sample`` and ``ten_ms``: inputs GTCRN's STFT cannot pad (RuntimeError);
    - ``short_ref``: a clean reference shorter than its noisy file;
    - ``silent_ref``: an all-zero clean reference (PESQ undefined: ``null``, not ``NaN``).
    """
    data = tmp_path / "in"
    _good_pairs(data, example_audio)
    speech, _ = sf.read(EXAMPLES / "clean" / "ex01_1355-39947-0000_laughing_0dB.flac",
                        dtype="float32")
    speech = 0.5 * speech / np.abs(speech).max()
    long_clean = np.tile(speech, 120 * RATE // len(speech) + 1)[: 120 * RATE]
    noise = 0.02 * np.random.default_rng(0).standard_normal(len(long_clean))
    _pair(data, "pesq_crash", long_clean + noise, long_clean)
    noisy, clean = real_mixture(example_audio, snr=5.0, seconds=1.5, seed=7)
    _pair(data, "one_sample", noisy.numpy()[8000:8001])
    _pair(data, "ten_ms", noisy.numpy()[8000:8160])
    _pair(data, "short_ref", noisy.numpy(), clean.numpy()[: RATE])
    _pair(data, "silent_ref", noisy.numpy(), np.zeros_like(clean.numpy()))
    out = tmp_path / "out"

    # episodic, 3 steps: every good file leaves a count the failed ones must not add to
    proc = _run(out, f"--data_folder={data}", "--method_options={mode: episodic, steps: 3}",
                preexec_fn=lambda: os.umask(0o027))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(out)
    assert sorted(rows) == ["good0", "good1", "one_sample", "pesq_crash", "short_ref",
                            "silent_ref", "ten_ms"]
    for uid in ("good0", "good1"):  # the good files: enhanced, scored, no problem
        assert rows[uid]["problem"] == ""
        assert 1.0 <= float(rows[uid]["pesq"]) <= 4.6 and 0 < float(rows[uid]["stoi"]) <= 1
    problems = {uid: row["problem"] for uid, row in rows.items()}
    assert problems["pesq_crash"].startswith("not scored: pesq: PESQ crashed its worker process")
    assert float(rows["pesq_crash"]["stoi"]) > 0.5  # the other scores of that file are there
    for uid in ("one_sample", "ten_ms"):
        assert problems[uid].startswith("enhancement failed (RuntimeError: "), problems[uid]
    assert "clean reference is shorter than the noisy file (16000 < 24000" in problems[
        "short_ref"]
    assert "pesq: PESQ is undefined for an all-zero signal" in problems["silent_ref"]

    enhanced = sorted(p.name for p in (out / "enhanced").iterdir())
    assert enhanced == ["good0.wav", "good1.wav", "pesq_crash.wav", "short_ref.wav",
                        "silent_ref.wav"]  # delivered, even where a score is missing
    assert len(sf.read(out / "enhanced" / "pesq_crash.wav")[0]) == 120 * RATE

    summary = _strict_json(out / "summary.json")
    assert summary["utterances"] == 5
    failed = {item["ID"]: item for item in summary["failed"]}
    assert {uid: item["stage"] for uid, item in failed.items()} == {
        "pesq_crash": "scoring", "one_sample": "enhancement", "ten_ms": "enhancement",
        "short_ref": "scoring", "silent_ref": "scoring"}
    assert failed["ten_ms"]["file"].endswith("ten_ms.wav")
    # The failed inputs left the stream as if they had not been there: episodic, 3 steps each.
    assert summary["adaptation"]["updates"] == 3 * 5
    # Files follow the process umask (0o027 here), not mkstemp's 0600.
    for path in (out / "results.csv", out / "summary.json", out / "enhanced" / "good0.wav"):
        assert path.stat().st_mode & 0o777 == 0o640, path


# ------------------------------------------------------------------ 2: a file that kills the run
def _start_and_kill_on(out, data, uid, start, said=None):
    """Start the CLI and SIGKILL it while it processes ``uid`` for the ``start``-th time (and,
    given ``said``, once its log holds that text); its output (the log's console lines go to
    stdout, before the same record reaches ``log.txt``)."""
    proc = subprocess.Popen(_cli(out, f"--data_folder={data}"), cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    marker = out / "checkpoints" / "in_flight.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            if json.loads(marker.read_text()) | {"manifest": None} == {
                    "ids": [uid], "attempts": start, "manifest": None} and (
                    said is None or said in (out / "log.txt").read_text()):
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it reached " + uid
    proc.send_signal(signal.SIGKILL)
    output, _ = proc.communicate()
    return output


def test_a_file_that_killed_the_run_twice_is_failed_on_the_third_start(tmp_path,
                                                                        example_audio):
    """#16 item 2: the resume never loops on a file that stops the process (the OOM killer, a
    crash in native code): warned on the second start, failed on the third, said in the log
    and the summary."""
    data = tmp_path / "in"
    _good_pairs(data, example_audio, count=1)
    noisy, _ = real_mixture(example_audio, snr=5.0, seconds=4.0, seed=3)
    _pair(data, "a_killer", np.tile(noisy.numpy(), 15))  # 60 s: long enough to be caught
    out = tmp_path / "out"

    _start_and_kill_on(out, data, "a_killer", start=1)
    warning = ("a_killer stopped the previous run (killed, or crashed in native code); trying "
               "once more")
    second = _start_and_kill_on(out, data, "a_killer", start=2, said=warning)
    assert warning in second
    third = _run(out, f"--data_folder={data}")
    assert third.returncode == 0, third.stderr[-3000:]
    problem = "stopped the run 2 times (killed, or crashed in native code); not tried again"
    assert problem in third.stdout and problem in (out / "log.txt").read_text()
    rows = _rows(out)
    assert rows["a_killer"]["problem"] == problem
    assert rows["good0"]["problem"] == "" and float(rows["good0"]["pesq"]) > 1.0
    summary = _strict_json(out / "summary.json")
    assert [(f["ID"], f["problem"]) for f in summary["failed"]] == [("a_killer", problem)]
    assert sorted(p.name for p in (out / "enhanced").iterdir()) == ["good0.wav"]


# ------------------------------------------------------------------ 1, 3: refused up front
@pytest.mark.parametrize("uid, problem", [
    ("../../other/b", "contains a path separator and would be written outside the output "
                      "folder"),
    ("", "is empty"),
])
def test_an_escaping_id_is_refused_naming_the_row(tmp_path, example_audio, uid, problem):
    """#16 item 1: an ID that would write outside enhanced/ (or write ``.wav``) stops the run
    before any audio is read; the file it aimed at is untouched."""
    _good_pairs(tmp_path / "in", example_audio, count=1)
    victim = tmp_path / "other" / "b.wav"
    victim.parent.mkdir()
    sf.write(victim, np.full(800, 0.1, np.float32), RATE)
    before = victim.read_bytes()
    noisy = tmp_path / "in" / "noisy" / "good0.wav"
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"ID,duration,noisy_wav,clean_wav\nok,1.5,{noisy},\n"
                        f"\"{uid}\",1.5,{noisy},\n")
    with pytest.raises(SystemExit) as err:
        _main(tmp_path / "out" / "a" / "b", f"--data_folder={manifest}")
    message = str(err.value.code)
    assert message.startswith("error: ") and "\n" not in message
    assert f"{manifest} line 3 (ID {uid!r}): ID {uid!r} {problem}" in message
    assert victim.read_bytes() == before
    assert not (tmp_path / "out" / "a" / "b" / "enhanced").exists()


def test_colliding_ids_are_refused_naming_both_rows(tmp_path, example_audio):
    """#16 items 1 and 3: two IDs that would write one file (also on case-insensitive disks)."""
    _good_pairs(tmp_path / "in", example_audio, count=2)
    a, b = (tmp_path / "in" / "noisy" / f"good{i}.wav" for i in range(2))
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"ID,noisy_wav\nTake 1,{a}\ntake_1,{b}\n")
    with pytest.raises(SystemExit, match=r"line 3 \(ID 'take_1'\): writes the same file as ID "
                                         r"'Take 1' \(line 2\): take_1.wav"):
        _main(tmp_path / "out", f"--data_folder={manifest}")
    assert not (tmp_path / "out" / "enhanced").exists()


def test_zero_usable_files_exit_non_zero_and_replace_nothing(tmp_path):
    """#16 item 6: no file could be processed: non-zero exit, the previous results stay."""
    data = tmp_path / "in"
    data.mkdir()
    (data / "empty.wav").write_bytes(b"")
    sf.write(data / "silent.wav", np.zeros(RATE, np.float32), RATE)
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.csv").write_text("ID,pesq\nearlier,2.5\n")
    (out / "summary.json").write_text('{"utterances": 1}\n')
    with pytest.raises(SystemExit) as err:
        _main(out, f"--data_folder={data}")
    message = str(err.value.code)
    assert message.startswith("error: ") and "no usable input file, 2 skipped" in message
    assert (out / "results.csv").read_text() == "ID,pesq\nearlier,2.5\n"
    assert (out / "summary.json").read_text() == '{"utterances": 1}\n'
    assert not (out / "enhanced").exists()


# ------------------------------------------------------------------ 4: stale resume
def test_another_run_into_the_same_folder_is_refused_then_overwritten(tmp_path, example_audio):
    """#16 item 4: other data or other settings never mix with a folder's results; with
    ``--overwrite=True`` the folder starts over (no orphan enhanced file)."""
    first, second = tmp_path / "first", tmp_path / "second"
    _good_pairs(first, example_audio, count=2, seconds=1.0)
    second.mkdir()
    for name in ("noisy", "clean"):  # the second set: one file of the first, renamed
        (second / name).mkdir()
        (second / name / "other.wav").write_bytes((first / name / "good1.wav").read_bytes())
    out = tmp_path / "out"
    _main(out, f"--data_folder={first}")
    results = (out / "results.csv").read_text()

    for extra, differs in (
        (["--method_options={lr: 0.002}"], "settings differ (method.lr 0.001 -> 0.002)"),
        (["--output_subtype=PCM_16"], "settings differ (output_subtype 'FLOAT' -> 'PCM_16')"),
        ([f"--data_folder={second}"], "the manifest differs (2 rows then, 1 now"),
    ):
        with pytest.raises(SystemExit) as err:
            _main(out, *([f"--data_folder={first}"] if "--data" not in extra[0] else []),
                  *extra)
        message = str(err.value.code)
        assert "\n" not in message and "holds the finished results of another run" in message
        assert differs in message and "--overwrite=True" in message
        assert (out / "results.csv").read_text() == results
    assert sorted(p.name for p in (out / "enhanced").iterdir()) == ["good0.wav", "good1.wav"]

    _main(out, f"--data_folder={second}", "--overwrite=True")
    assert list(_rows(out)) == ["other"]
    assert sorted(p.name for p in (out / "enhanced").iterdir()) == ["other.wav"]


# ------------------------------------------------------------------ 5: disk full
def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path, example_audio):
    """#16 item 5: the kernel refuses a write (a 64 kB file size limit, EFBIG, as a full disk
    refuses with ENOSPC): one line naming the file, nothing half-written; once there is room
    the same command completes, without calling the interrupted file a killer."""
    data = tmp_path / "in"
    _good_pairs(data, example_audio, count=2)
    out = tmp_path / "out"

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64_000, 64_000))

    proc = _run(out, f"--data_folder={data}", preexec_fn=limit_file_size)
    assert proc.returncode == 1
    line = _last_line(proc)
    assert line == (f"error: [Errno {errno.EFBIG}] {os.strerror(errno.EFBIG)}: "
                    f"'{out / 'enhanced' / 'good0.wav'}'")
    assert not list(out.rglob("*.tmp")) and not list((out / "enhanced").iterdir())
    assert not (out / "results.csv").exists()

    again = _run(out, f"--data_folder={data}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "stopped the previous run" not in again.stdout + again.stderr
    assert sorted(_rows(out)) == ["good0", "good1"]


# ------------------------------------------------------------------ 7: scores of what was written
@pytest.mark.parametrize("subtype", ["FLOAT", "PCM_16"])
def test_rescoring_the_written_files_of_a_quiet_input_reproduces_results(tmp_path,
                                                                        example_audio,
                                                                        subtype):
    """#16 item 7: at -40 dBFS, each delivered file scores exactly as ``results.csv`` says,
    whether it is written as float or as 16-bit PCM (then the 16-bit file is what was scored).
    """
    data = tmp_path / "in"
    _good_pairs(data, example_audio, count=2, level_db=-40.0)
    out = tmp_path / "out"
    _main(out, f"--data_folder={data}", f"--output_subtype={subtype}")
    for uid, row in _rows(out).items():
        info = sf.info(out / "enhanced" / f"{uid}.wav")
        assert info.subtype == subtype
        written = read_audio(out / "enhanced" / f"{uid}.wav", RATE, allow_silent=True).numpy()
        clean = read_audio(data / "clean" / f"{uid}.wav", RATE, allow_silent=True).numpy()
        scores, reasons = score_pair(clean, written, RATE, composite_measures=False)
        assert not reasons
        assert float(row["pesq"]) == scores["pesq"], uid  # P.862 in C: bit for bit
        for metric in ("stoi", "estoi", "si_sdr"):  # numpy FFTs: to the last bits
            assert float(row[metric]) == pytest.approx(scores[metric], rel=1e-9), (uid, metric)
