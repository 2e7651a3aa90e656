"""The committed example set ``examples/``: layout, audio, licenses, and that it rebuilds."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from speechbrain_mpol.corpus import read_corpus
from speechbrain_mpol.example_set import (
    SAME_AUDIO_TOLERANCE,
    SNRS,
    example_folder,
    measured_snr,
    plan_examples,
    write_example_set,
)
from speechbrain_mpol.manifest import resolve_manifest

from .conftest import EXAMPLES, REPO, SHARED

CORPUS = SHARED / "corpus"
needs_corpus = pytest.mark.skipif(
    not (CORPUS / "MANIFEST.tsv").is_file(),
    reason=f"needs the shared corpus to rebuild the example set: {CORPUS / 'MANIFEST.tsv'} "
           "not found")


def _rows() -> list[dict]:
    with open(EXAMPLES / "examples.tsv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def test_resolve_manifest_reads_the_example_set(tmp_path):
    manifest = resolve_manifest(example_folder(), tmp_path)
    with open(manifest, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 12 and {r["ID"] for r in table} == {r["ID"] for r in _rows()}
    assert all(r["clean_wav"].endswith(f"/clean/{r['ID']}.flac") for r in table)


def test_pairs_are_short_real_16k_mixtures_at_the_stated_snr():
    rows = _rows()
    assert sorted(float(r["snr_db"]) for r in rows) == sorted(SNRS * 4)
    assert len({r["speaker"] for r in rows}) == 12 and len({r["noise_class"] for r in rows}) == 12
    for row in rows:
        noisy_path = EXAMPLES / "noisy" / f"{row['ID']}.flac"
        clean_path = EXAMPLES / "clean" / f"{row['ID']}.flac"
        noisy, rate = sf.read(noisy_path)
        clean, clean_rate = sf.read(clean_path)
        assert rate == clean_rate == 16000 and noisy.ndim == clean.ndim == 1
        assert len(noisy) == len(clean) and 3.0 <= len(noisy) / rate <= 5.0
        assert np.max(np.abs(noisy)) <= 0.951
        assert measured_snr(noisy_path, clean_path) == pytest.approx(float(row["snr_db"]),
                                                                     abs=0.05)


def test_only_redistributable_material_with_attribution_and_license():
    rows = _rows()
    total = sum(p.stat().st_size for p in EXAMPLES.rglob("*") if p.is_file())
    assert total < 3_000_000
    attribution = (EXAMPLES / "ATTRIBUTION.md").read_text()
    for row in rows:
        assert row["speech_license"] == "CC BY 4.0"
        assert row["noise_license"] in ("CC0 1.0", "CC BY 3.0")
        assert row["speech"].startswith("speech/dev/") and row["noise"].startswith("noise/dev/")
        assert f"clean/{row['ID']}.flac" in attribution and f"noisy/{row['ID']}.flac" in attribution
        if row["noise_license"].startswith("CC BY"):  # CC BY needs the author named
            assert row["noise_attribution"] and row["noise_attribution"] in attribution
    assert "CC BY 4.0" in (EXAMPLES / "LICENSE").read_text()
    files = {p.name for p in (EXAMPLES / "noisy").iterdir()}
    assert files == {p.name for p in (EXAMPLES / "clean").iterdir()}
    assert files == {f"{r['ID']}.flac" for r in rows}


@needs_corpus
def test_license_rules_hold_in_the_corpus_choice():
    corpus = {f.path: f for f in read_corpus(CORPUS)}
    for row in _rows():
        for key in ("speech", "noise"):
            entry = corpus[CORPUS / row[key]]
            assert entry.redistributable and "NC" not in entry.license.split(" (")[0]


@needs_corpus
def test_the_recipe_rebuilds_the_committed_set_unchanged(tmp_path):
    """recipes/prepare_example.py is deterministic: a rebuild keeps every committed file."""
    copy = tmp_path / "examples"
    shutil.copytree(EXAMPLES, copy)
    stamps = {p: p.stat().st_mtime_ns for p in copy.rglob("*") if p.is_file()}
    done = subprocess.run(
        [sys.executable, str(REPO / "recipes" / "prepare_example.py"),
         f"--shared_folder={SHARED}", f"--output_folder={copy}"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "written 0, kept 27, removed 0" in done.stdout
    assert {p: p.stat().st_mtime_ns for p in copy.rglob("*") if p.is_file()} == stamps


@needs_corpus
def test_other_content_is_never_overwritten(tmp_path):
    plans = plan_examples(read_corpus(CORPUS))
    first = EXAMPLES / "noisy" / f"{plans[0].uid}.flac"
    (tmp_path / "noisy").mkdir()
    data, rate = sf.read(first)
    sf.write(tmp_path / "noisy" / first.name, 0.5 * data, rate, subtype="PCM_16")
    before = (tmp_path / "noisy" / first.name).read_bytes()
    with pytest.raises(FileExistsError, match=first.name):
        write_example_set(plans[:1], CORPUS, tmp_path)
    assert (tmp_path / "noisy" / first.name).read_bytes() == before
    counts = write_example_set(plans[:1], CORPUS, tmp_path, overwrite=True)
    assert counts["written"] >= 1
    rebuilt, _ = sf.read(tmp_path / "noisy" / first.name)
    assert np.max(np.abs(rebuilt - data)) <= SAME_AUDIO_TOLERANCE
