"""The benchmark's sets (speechbrain_mpol.shift_sets, recipes/prepare_benchmark.py), built small
from the real corpus and measured."""

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechbrain_mpol.mixing import apply_rir, band_limit, level_dbfs, snr_db
from speechbrain_mpol.shared import find_shared_folder
from speechbrain_mpol.shift_sets import (
    LEVEL_DBFS,
    MANIFEST_HEADER,
    MIX_PEAK,
    PARAM_HEADER,
    SHIFTS,
    SNR_BLOCK,
    SPLITS,
    build_set,
    load_rir,
    prepare_benchmark,
    split_material,
)

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(find_shared_folder()) / "corpus"
RATE = 16000
PER_SHIFT = 5
#: Sets whose recorded SNR is the SNR of clean against noisy - clean as written.
PLAIN = [s for s in SHIFTS if s not in ("reverb", "bandlimit")]


def read(path) -> np.ndarray:
    data, rate = sf.read(str(path), dtype="float64")
    assert rate == RATE and data.ndim == 1
    return data


def rows(manifest) -> list[dict]:
    with open(manifest, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not (CORPUS / "MANIFEST.tsv").is_file():
        pytest.skip(f"real corpus not found at {CORPUS}")
    folder = tmp_path_factory.mktemp("benchmark")
    return folder, prepare_benchmark(CORPUS, folder, per_shift=PER_SHIFT)


def test_every_set_has_its_rows_and_files(built):
    folder, manifests = built
    assert sorted(manifests) == sorted((split, shift) for split in SPLITS for shift in SHIFTS)
    for (split, shift), manifest in manifests.items():
        assert manifest == folder / split / shift / f"{split}_{shift}.csv"
        table = rows(manifest)
        assert len(table) == PER_SHIFT and list(table[0]) == MANIFEST_HEADER + PARAM_HEADER
        assert len({r["ID"] for r in table}) == PER_SHIFT
        for row in table:
            noisy, clean = read(row["noisy_wav"]), read(row["clean_wav"])
            assert len(noisy) == len(clean) <= 6 * RATE
            assert abs(len(noisy) / RATE - float(row["duration"])) < 1e-3
            assert max(np.max(np.abs(noisy)), np.max(np.abs(clean))) <= MIX_PEAK + 1e-4
            assert (CORPUS / row["speech"]).is_file() and (CORPUS / row["noise"]).is_file()
            assert bool(row["rir"]) == (shift == "reverb")


@pytest.mark.parametrize("shift", PLAIN)
def test_measured_snr_is_the_recorded_one(built, shift):
    _, manifests = built
    low, high = {"low_snr": (-5, 0), "easy_vctk": (5, 15)}.get(shift, (0, 15))
    for split in SPLITS:
        for row in rows(manifests[(split, shift)]):
            noisy, clean = read(row["noisy_wav"]), read(row["clean_wav"])
            assert low <= float(row["snr_db"]) <= high
            assert abs(snr_db(clean, noisy - clean) - float(row["snr_db"])) < 0.2
        # Stratified: the first utterances fall into different eighths of the SNR range.
        snrs = [float(r["snr_db"]) for r in rows(manifests[(split, shift)])]
        eighths = {int((snr - low) / (high - low) * SNR_BLOCK) for snr in snrs[:SNR_BLOCK]}
        assert len(eighths) == min(PER_SHIFT, SNR_BLOCK)


def test_reverb_snr_is_relative_to_the_reverberant_speech_and_the_reference_is_dry(built):
    _, manifests = built
    for split in SPLITS:
        for row in rows(manifests[(split, "reverb")]):
            noisy, dry = read(row["noisy_wav"]), read(row["clean_wav"])
            wet = apply_rir(dry, load_rir(CORPUS / row["rir"]))
            assert 5 <= float(row["snr_db"]) <= 15
            assert abs(snr_db(wet, noisy - wet) - float(row["snr_db"])) < 0.2
            # Against the dry reference the reverberation counts as noise too.
            assert snr_db(dry, noisy - dry) < float(row["snr_db"]) - 0.2


def test_level_and_bandlimit_are_the_noise_mixtures(built):
    _, manifests = built
    drawn = ["speech", "noise", "snr_db", "speech_offset", "noise_offset"]
    for split in SPLITS:
        noise_rows = rows(manifests[(split, "noise")])
        for shift in ("level", "bandlimit"):
            for row, ref in zip(rows(manifests[(split, shift)]), noise_rows, strict=True):
                assert [row[k] for k in drawn] == [ref[k] for k in drawn]
        for row, ref in zip(rows(manifests[(split, "level")]), noise_rows, strict=True):
            noisy = read(row["noisy_wav"])
            assert abs(level_dbfs(noisy) - LEVEL_DBFS) < 0.1
            # One common gain from the noise mixture: only the level differs (to 16 bits).
            reference = read(ref["noisy_wav"])
            gain = np.dot(noisy, reference) / np.dot(reference, reference)
            assert np.max(np.abs(noisy - gain * reference)) < 1e-4


def _energy_above(x: np.ndarray, hz: float) -> float:
    power = np.abs(np.fft.rfft(x)) ** 2
    return float(power[np.fft.rfftfreq(len(x), 1 / RATE) > hz].sum() / power.sum())


def test_bandlimit_has_almost_no_energy_above_3400_hz(built):
    _, manifests = built
    for split in SPLITS:
        noise_rows = rows(manifests[(split, "noise")])
        for row, ref in zip(rows(manifests[(split, "bandlimit")]), noise_rows, strict=True):
            for column in ("noisy_wav", "clean_wav"):
                limited, full = read(row[column]), read(ref[column])
                assert _energy_above(limited, 3400) < 0.01  # the filter's transition band
                assert _energy_above(limited, 4000) < 1e-4
                assert _energy_above(limited, 4000) < 0.01 * _energy_above(full, 4000)
                # It is the noise set's audio, band-limited (and scaled by one factor).
                expected = band_limit(full, RATE)
                assert np.corrcoef(limited, expected)[0, 1] > 0.999


def test_dev_and_test_share_no_speech_noise_or_room(built):
    _, manifests = built
    used = {split: {"speech": set(), "speaker": set(), "noise": set(), "rir": set()}
            for split in SPLITS}
    valid = {}
    for (split, shift), manifest in manifests.items():
        for row in rows(manifest):
            if shift == "easy_source":  # the stated exception: the source models' validation
                valid.setdefault(split, set()).add(row["speech"])
            else:
                used[split]["speech"].add(row["speech"])
                used[split]["speaker"].add(row["speaker"])
            used[split]["noise"].add(row["noise"])
            if row["rir"]:
                used[split]["rir"].add(row["rir"])
    for kind in ("speech", "speaker", "noise", "rir"):
        assert not used["dev"][kind] & used["test"][kind], kind
    assert used["dev"]["rir"] and used["test"]["rir"]
    assert all(p.startswith("speech/train/") for p in valid["dev"] | valid["test"])
    # The full pools: dev gets 2 of the 6 rooms, test the other 4.
    from speechbrain_mpol.corpus import read_corpus

    files = read_corpus(CORPUS)
    dev, test = (split_material(files, CORPUS, split) for split in SPLITS)
    assert (len(dev.rooms), len(test.rooms)) == (2, 4)
    assert not {f.path for f in dev.rooms} & {f.path for f in test.rooms}
    for pool in dev.noise:
        assert not {f.path for f in dev.noise[pool]} & {f.path for f in test.noise[pool]}, pool
    for pool in ("librispeech", "test_other", "vctk"):
        assert not {f.label for f in dev.speech[pool]} & {f.label for f in test.speech[pool]}


def test_same_seed_gives_identical_audio_and_another_seed_does_not(built, tmp_path):
    from speechbrain_mpol.corpus import read_corpus

    folder, manifests = built
    material = split_material(read_corpus(CORPUS), CORPUS, "test")
    for shift in ("reverb", "easy_vctk"):
        # Fewer rows, another folder, built alone: the first rows are the same files.
        again = rows(build_set(material, "test", shift, tmp_path / shift, 3))
        first = rows(manifests[("test", shift)])[:3]
        for new, old in zip(again, first, strict=True):
            assert new["ID"] == old["ID"]
            for column in ("noisy_wav", "clean_wav"):
                assert Path(new[column]).read_bytes() == Path(old[column]).read_bytes()
        other = rows(build_set(material, "test", shift, tmp_path / f"{shift}_1", 3, seed=1))
        assert [r["noisy_wav"] for r in other] != [r["noisy_wav"] for r in again]
        assert not any(np.array_equal(read(a["noisy_wav"]), read(b["noisy_wav"]))
                       for a, b in zip(other, again, strict=True))


def test_a_complete_set_is_skipped(built):
    folder, manifests = built
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    before = {p: p.stat().st_mtime_ns for p in files}
    assert prepare_benchmark(CORPUS, folder, per_shift=PER_SHIFT) == manifests
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} == before


def test_recipe_builds_a_set_and_names_a_missing_corpus(built, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("prepare_benchmark",
                                                  REPO / "recipes" / "prepare_benchmark.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    manifests = recipe.main(["--corpus_folder", str(CORPUS), "--save_folder", str(tmp_path),
                             "--splits", "dev", "--shifts", "level", "--per_shift", "2"])
    assert list(manifests) == [("dev", "level")] and len(rows(manifests[("dev", "level")])) == 2
    assert "dev   level" in capsys.readouterr().out
    missing = tmp_path / "nowhere"
    with pytest.raises(SystemExit) as exit_info:  # sys.exit(message): one line on stderr
        recipe.main(["--corpus_folder", str(missing), "--save_folder", str(tmp_path)])
    message = exit_info.value.code
    assert isinstance(message, str) and message.startswith("prepare_benchmark: ")
    assert str(missing) in message and "\n" not in message


def test_a_folder_built_otherwise_is_refused_not_overwritten(built):
    folder, manifests = built
    noisy = Path(rows(manifests[("dev", "level")])[0]["noisy_wav"])
    before = noisy.read_bytes()
    with pytest.raises(ValueError, match="seed"):
        prepare_benchmark(CORPUS, folder, splits=("dev",), shifts=("level",),
                          per_shift=PER_SHIFT, seed=1)
    assert noisy.read_bytes() == before


def test_bad_arguments_are_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown"):
        prepare_benchmark(CORPUS, tmp_path, shifts=("nope",))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prepare_benchmark(tmp_path / "nowhere", tmp_path)
