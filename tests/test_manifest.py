"""Data folders, the VoiceBank-DEMAND layout and CSV manifests become one manifest format."""

import csv

import numpy as np
import pytest
import soundfile as sf

from speechbrain_mpol.manifest import resolve_manifest


def _write(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        sf.write(folder / name, 0.1 * np.ones(1600, np.float32), 16000)


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_plain_folder_without_references(tmp_path):
    _write(tmp_path / "in", ["a.wav", "b.flac"])
    rows = _rows(resolve_manifest(tmp_path / "in", tmp_path / "save"))
    assert [r["ID"] for r in rows] == ["a", "b"]
    assert all(r["clean_wav"] == "" for r in rows)
    assert rows[0]["duration"] == "0.100"


def test_voicebank_layout_pairs_references(tmp_path):
    _write(tmp_path / "vb" / "noisy_testset_wav_16k", ["p232_001.wav", "p232_002.wav"])
    _write(tmp_path / "vb" / "clean_testset_wav_16k", ["p232_001.wav"])
    rows = _rows(resolve_manifest(tmp_path / "vb", tmp_path / "save"))
    assert rows[0]["clean_wav"].endswith("clean_testset_wav_16k/p232_001.wav")
    assert rows[1]["clean_wav"] == ""


def test_noisy_clean_subfolders_and_explicit_clean_folder(tmp_path):
    _write(tmp_path / "set" / "noisy", ["x.wav"])
    _write(tmp_path / "set" / "clean", ["x.wav"])
    assert _rows(resolve_manifest(tmp_path / "set", tmp_path / "s1"))[0]["clean_wav"]
    _write(tmp_path / "other", ["x.wav"])
    rows = _rows(resolve_manifest(tmp_path / "set" / "noisy", tmp_path / "s2", tmp_path / "other"))
    assert rows[0]["clean_wav"].endswith("other/x.wav")


def test_csv_manifest_is_checked(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("ID,wav\n1,a.wav\n")
    with pytest.raises(ValueError, match="noisy_wav"):
        resolve_manifest(bad, tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        resolve_manifest(tmp_path / "missing.csv", tmp_path)


def test_empty_and_missing_folders_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no audio files"):
        resolve_manifest(tmp_path / "empty", tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        resolve_manifest(tmp_path / "nowhere", tmp_path)
