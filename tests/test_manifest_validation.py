"""Manifest validation (#16 items 1 and 3): every bad manifest is one line naming the row."""

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from speechbrain.dataio.dataset import DynamicItemDataset

from speechbrain_mpol.manifest import (
    ManifestError,
    check_manifest,
    output_name_problem,
    output_path,
    resolve_manifest,
    safe_output_name,
    unique_ids,
)

from .conftest import REPO


def _wav(path, seconds=0.1):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, 0.1 * np.ones(int(16000 * seconds), np.float32), 16000)
    return path


def _csv(tmp_path, text, name="m.csv"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


@pytest.fixture
def wavs(tmp_path):
    return [str(_wav(tmp_path / "in" / f"{n}.wav")) for n in ("a", "b", "c")]


def _error(path, output_dir=None):
    with pytest.raises(ManifestError) as err:
        check_manifest(path, output_dir)
    message = str(err.value)
    assert "\n" not in message, "one line"
    assert str(path) in message
    return message


@pytest.mark.parametrize(
    "body, line, uid, problem",
    [
        ("a,{a},\na,{b},\n", 3, "a", "duplicate ID 'a' (line 2)"),
        ("a b,{a},\na_b,{b},\n", 3, "a_b", "same file as ID 'a b' (line 2): a_b.wav"),
        ("Ab,{a},\naB,{b},\n", 3, "aB", "same file as ID 'Ab'"),
        ("../../other/b,{a},\n", 2, "../../other/b", "outside the output folder"),
        ("/abs/x,{a},\n", 2, "/abs/x", "outside the output folder"),
        ("a\\b,{a},\n", 2, "a\\b", "path separator"),
        ('"",{a},\n', 2, "", "ID '' is empty"),
        ("..,{a},\n", 2, "..", "names a folder, not a file"),
        ("CON,{a},\n", 2, "CON", "reserved device name (CON)"),
        ("lpt1.x,{a},\n", 2, "lpt1.x", "reserved device name (LPT1)"),
        (f"{'x' * 201},{{a}},\n", 2, "x" * 201, "longer than 200"),
        ("a,{a},\nb\n", 3, "b", "1 fields where the header has 3"),
        ("a,{a},,extra\n", 2, "a", "4 fields where the header has 3"),
        ("a,,\n", 2, "a", "noisy_wav is empty"),
        ("a,$data_root/a.wav,\n", 2, "a", "'$data_root', which SpeechBrain reads as a variable"),
    ],
)
def test_row_problems_name_line_id_and_problem(tmp_path, wavs, body, line, uid, problem):
    path = _csv(tmp_path, "ID,noisy_wav,clean_wav\n" + body.format(a=wavs[0], b=wavs[1]))
    message = _error(path)
    assert f"line {line} (ID {uid!r}): " in message
    assert problem in message


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "empty manifest (no header line)"),
        ("ID,duration,noisy_wav,clean_wav\n", "no rows (header only)"),
        ("ID,wav\n1,a.wav\n", "lacks the column(s) ['noisy_wav']"),
        ("noisy_wav,clean_wav\na.wav,\n", "lacks the column(s) ['ID']"),
        ("ID,ID,noisy_wav\n", "column 'ID' appears twice"),
        ("\ufeffID,noisy_wav\na,a.wav\n", "byte-order mark"),
        (b"ID,noisy_wav\n\xff\xfe,a.wav\n", "not UTF-8"),
    ],
)
def test_file_problems_are_one_line(tmp_path, text, problem):
    assert problem in _error(_csv(tmp_path, text))


@pytest.mark.parametrize("value, ok", [("abc", False), ("", False), ("-1", False),
                                       ("1.5", True), (" 2", True), ("nan", True)])
def test_duration_must_be_a_number(tmp_path, wavs, value, ok):
    path = _csv(tmp_path, f"ID,duration,noisy_wav\na,{value},{wavs[0]}\n")
    if ok:
        assert check_manifest(path)[0]["ID"] == "a"
        DynamicItemDataset.from_csv(path)  # what passes here, SpeechBrain reads
    else:
        assert "line 2 (ID 'a'): duration" in _error(path)


def test_every_problem_is_logged_and_counted(tmp_path, wavs, caplog):
    path = _csv(tmp_path, f"ID,noisy_wav\n../x,{wavs[0]}\na,{wavs[1]}\na,{wavs[2]}\n,{wavs[0]}\n")
    with caplog.at_level(logging.ERROR, logger="speechbrain_mpol.manifest"):
        message = _error(path)
    assert "(and 2 more problem(s), logged)" in message
    assert "line 4 (ID 'a')" in caplog.text and "line 5 (ID '')" in caplog.text


def test_clean_wav_is_optional_and_empty_means_no_reference(tmp_path, wavs):
    clean = _wav(tmp_path / "clean" / "a.wav")
    given = _csv(tmp_path, f"ID,noisy_wav\na,{wavs[0]}\nb,{wavs[1]}\n")
    completed = resolve_manifest(given, tmp_path / "save")
    assert completed == tmp_path / "save" / "manifest.csv"
    data = DynamicItemDataset.from_csv(completed)
    assert data.data["a"]["clean_wav"] == "" and data.data["b"]["duration"] == 0.1
    full = _csv(tmp_path, f"ID,duration,noisy_wav,clean_wav\na,0.1,{wavs[0]},{clean}\n"
                f"b,0.1,{wavs[1]},\n", "full.csv")
    assert resolve_manifest(full, tmp_path / "save2") == full  # complete: used as it is
    assert [r["clean_wav"] for r in check_manifest(full)] == [str(clean), ""]


def test_an_output_that_would_overwrite_an_input_is_refused(tmp_path, wavs):
    out = tmp_path / "in"  # the outputs would go where the inputs are
    path = _csv(tmp_path, f"ID,noisy_wav\nz,{wavs[0]}\na,{wavs[2]}\n")
    message = _error(path, output_dir=out)  # row 'a' would overwrite the input of row 'z'
    assert "line 3 (ID 'a')" in message
    assert f"its output {out / 'a.wav'} is the noisy_wav of ID 'z'" in message
    # Row 'z' writes z.wav, which is no input: a manifest without 'a' is fine.
    assert check_manifest(_csv(tmp_path, f"ID,noisy_wav\nz,{wavs[0]}\n", "ok.csv"), out)


@pytest.mark.parametrize("uid", ["../../x", "/etc/passwd", "a/../../b", "..\\..\\x", "C:\\x",
                                 ".", "..", "", " ", "a\x00b", ".bashrc", "x" * 300, "NUL",
                                 "a:b", "é\u200bx", "~root", "$HOME", "*", "a\nb"])
def test_output_paths_never_leave_the_folder(tmp_path, uid):
    folder = tmp_path / "enhanced"
    folder.mkdir()
    if output_name_problem(uid):
        with pytest.raises(ValueError):
            output_path(folder, uid)
        return
    path = output_path(folder, uid)
    assert path.parent == folder and "/" not in safe_output_name(uid)
    assert path.resolve().is_relative_to(folder.resolve())
    assert not path.name.startswith(".")


def test_a_symbolic_link_planted_in_the_output_folder_is_refused(tmp_path):
    folder = tmp_path / "enhanced"
    folder.mkdir()
    victim = _wav(tmp_path / "precious.wav")
    os.symlink(victim, folder / "a.wav")
    with pytest.raises(ValueError, match="resolves outside"):
        output_path(folder, "a")


def test_folder_ids_are_unique_output_names(tmp_path):
    for name in ("good.wav", "good.flac", "good_2.wav", "Good_3.wav", "con.wav", "a b.wav",
                 "a_b.wav"):
        _wav(tmp_path / "in" / name)
    manifest = resolve_manifest(tmp_path / "in", tmp_path / "save")
    rows = check_manifest(manifest)
    ids = [r["ID"] for r in rows]
    # Sorted by file name: 'Good_3' < 'a b' < 'a_b' < 'con' < 'good.flac' < 'good.wav' < ...
    assert ids == ["Good_3", "a b", "a_b_2", "_con", "good", "good_4", "good_2"]
    assert len(DynamicItemDataset.from_csv(manifest)) == 7


def test_unique_ids_keep_stems_where_they_can():
    assert unique_ids(["x", "y"]) == ["x", "y"]
    assert unique_ids(["x", "x", "x"]) == ["x", "x_2", "x_3"]
    assert unique_ids(["x", "x", "x_2"]) == ["x", "x_3", "x_2"]


def test_symlink_loops_and_broken_links_are_skipped_with_a_message(tmp_path, caplog):
    _wav(tmp_path / "in" / "real.wav")
    os.symlink("loop.wav", tmp_path / "in" / "loop.wav")
    os.symlink(tmp_path / "in", tmp_path / "in" / "dir.wav")  # a folder named like audio
    os.symlink(tmp_path / "gone.wav", tmp_path / "in" / "broken.wav")
    os.symlink(".", tmp_path / "in" / "sub")  # a folder loop, not audio: ignored
    with caplog.at_level(logging.WARNING, logger="speechbrain_mpol.manifest"):
        rows = check_manifest(resolve_manifest(tmp_path / "in", tmp_path / "save"))
    assert [r["ID"] for r in rows] == ["real"]
    assert "loop.wav: Too many levels of symbolic links" in caplog.text
    assert "broken.wav: No such file or directory" in caplog.text
    assert "dir.wav: not a regular file" in caplog.text


def test_the_recipe_stops_with_one_line_before_loading_a_model(tmp_path, wavs):
    """The real CLI on a manifest whose second ID is a duplicate: one line, exit 1."""
    manifest = _csv(tmp_path, f"ID,noisy_wav\na,{wavs[0]}\na,{wavs[1]}\n")
    problem = "line 3 (ID 'a'): duplicate ID 'a' (line 2)"
    proc = subprocess.run(
        [sys.executable, str(REPO / "recipes" / "adapt.py"),
         str(REPO / "hparams" / "mpol_voicebank.yaml"), f"--data_folder={manifest}",
         f"--output_folder={tmp_path / 'out'}", "--model_source=/nonexistent/model"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and problem in last
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "enhanced").exists() or not any(
        (tmp_path / "out" / "enhanced").iterdir())
