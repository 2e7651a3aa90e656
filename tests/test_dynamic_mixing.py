"""Dynamic mixing and the corpus source domain, on the real corpus in ../shared/corpus.

Covers speechbrain_mpol/dynamic_mixing.py, speechbrain_mpol/source_corpus.py and
recipes/prepare_corpus.py: drawn SNR and level are what the mixtures hold, every epoch draws
anew (and repeats exactly when reseeded), peaks stay below 1, the fixed sets are disjoint
from the training speech by utterance.
"""

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hyperpyyaml import load_hyperpyyaml

import speechbrain_mpol.dynamic_mixing as dm
from speechbrain_mpol.dynamic_mixing import (
    DynamicMixer,
    dynamic_mixing_dataset,
    level_of,
    random_crop,
    snr_of,
)
from speechbrain_mpol.source_training import prepare_from_hparams

REPO = Path(__file__).resolve().parents[1]


def corpus_options(**overrides) -> dict:
    with open(REPO / "hparams" / "source_corpus.yaml") as handle:
        return load_hyperpyyaml(handle, overrides)


@pytest.fixture(scope="module")
def options():
    opts = corpus_options()
    if not (Path(opts["corpus_folder"]) / "MANIFEST.tsv").is_file():
        pytest.skip(f"corpus not found: {opts['corpus_folder']}/MANIFEST.tsv")
    return opts


@pytest.fixture(scope="module")
def prepared(options, tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus_source")
    return prepare_from_hparams({**options, "data_folder": str(folder)})


def read_rows(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def mixer(options, prepared):
    noise = [row["wav"] for row in read_rows(prepared["noise_train"])]
    return DynamicMixer(noise, options["snr_range"], options["level_range"], crop_seconds=3.0,
                        max_peak=options["max_peak"], seed=7)


def test_drawn_snr_level_and_peak_are_what_the_example_holds(options, prepared, mixer):
    speech = [row["wav"] for row in read_rows(prepared["speech_train"])]
    low, high = options["level_range"]
    mixer.set_epoch(0)
    gains = []
    for path in speech[:24]:
        crop, _ = random_crop(path, mixer.crop_length, mixer.generator)
        mix = mixer.draw(crop)
        assert abs(float(snr_of(mix.noisy, mix.clean)) - mix.snr_db) < 0.2
        assert options["snr_range"][0] <= mix.snr_db <= options["snr_range"][1]
        assert low <= mix.level_db <= high
        # The clean target holds the drawn level, lowered only by the peak-limiting gain.
        final = float(level_of(mix.clean))
        assert final == pytest.approx(mix.level_db + 20 * math.log10(mix.gain), abs=0.01)
        assert float(mix.noisy.abs().max()) <= options["max_peak"] + 1e-6
        assert float(mix.clean.abs().max()) <= options["max_peak"] + 1e-6
        gains.append(mix.gain)
    # Most examples keep their level: the peak limit is the exception, not the rule.
    assert np.mean(np.array(gains) == 1.0) > 0.5


def test_every_epoch_draws_anew_and_an_epoch_repeats_when_reseeded(prepared, mixer):
    data = dynamic_mixing_dataset(prepared["speech_train"], mixer)
    mixer.set_epoch(3)
    first = data[0]
    again_same_epoch = data[0]
    mixer.set_epoch(4)
    next_epoch = data[0]
    mixer.set_epoch(3)
    replay = data[0]
    assert first["id"] == next_epoch["id"]
    assert not torch.equal(first["noisy_sig"], again_same_epoch["noisy_sig"])
    assert not torch.equal(first["noisy_sig"], next_epoch["noisy_sig"])
    assert torch.equal(first["noisy_sig"], replay["noisy_sig"])
    assert torch.equal(first["clean_sig"], replay["clean_sig"])
    assert len(first["noisy_sig"]) == mixer.crop_length  # every training utterance is longer


def test_the_noise_cache_changes_no_draw_and_decodes_each_clip_once(options, prepared,
                                                                    monkeypatch):
    noise = [row["wav"] for row in read_rows(prepared["noise_train"])][:6]
    speech = [row["wav"] for row in read_rows(prepared["speech_train"])][:20]
    reads = []
    real_read = dm.read_segment

    def counted_read(path, *args, **kwargs):
        reads.append(str(path))
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(dm, "read_segment", counted_read)

    def two_epochs(mixer):
        reads.clear()
        out = []
        for number in (0, 1):
            mixer.set_epoch(number)
            for path in speech:
                crop, _ = random_crop(path, mixer.crop_length, mixer.generator)
                out.append(mixer.draw(crop))
        return out, [p for p in reads if p in noise]

    def new_mixer(**kwargs):
        return DynamicMixer(noise, options["snr_range"], options["level_range"],
                            crop_seconds=1.0, seed=5, **kwargs)

    cached = new_mixer()
    with_cache, cached_reads = two_epochs(cached)
    without, plain_reads = two_epochs(new_mixer(cache_noise=False))
    for a, b in zip(with_cache, without, strict=True):
        assert (a.noise, a.noise_start, a.snr_db, a.level_db) == \
            (b.noise, b.noise_start, b.snr_db, b.level_db)
        assert torch.equal(a.noisy, b.noisy) and torch.equal(a.clean, b.clean)
    assert len(plain_reads) >= 40  # one decode per drawn example without the cache
    assert sorted(cached_reads) == sorted(set(plain_reads)) == sorted(cached.noise_cache)


def test_silent_noise_is_redrawn_and_an_all_silent_list_is_an_error(tmp_path, prepared):
    real = read_rows(prepared["noise_train"])[0]["wav"]
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, dtype="float32"), 16000)
    mixer = DynamicMixer([silent, real], crop_seconds=1.0, seed=1)
    for _ in range(10):
        segment, path, _ = mixer.noise_segment(16000)
        assert path == real
        assert float(segment.pow(2).mean().sqrt()) > 1e-4
    with pytest.raises(ValueError, match="silent"):
        DynamicMixer([silent], seed=1).noise_segment(16000)


def test_short_noise_is_looped_to_the_speech_length(tmp_path):
    clip = tmp_path / "short.wav"
    sf.write(clip, 0.1 * np.sin(np.arange(4000) / 3.0).astype("float32"), 16000)
    segment, _, start = DynamicMixer([clip], seed=2).noise_segment(20000)
    assert len(segment) == 20000 and 0 <= start < 4000
    assert torch.allclose(segment[:4000], segment[4000:8000])


def test_manifests_are_disjoint_by_utterance(options, prepared):
    train = {row["wav"] for row in read_rows(prepared["speech_train"])}
    valid = read_rows(prepared["valid"])
    test = read_rows(prepared["test"])
    valid_speech = {row["speech"] for row in valid}
    test_speech = {row["speech"] for row in test}
    assert train and valid_speech and test_speech
    assert not train & valid_speech and not train & test_speech and not valid_speech & test_speech
    assert all("/speech/train/" in p for p in train | valid_speech)
    assert all("/speech/test/" in p for p in test_speech)
    noise = {row["wav"] for row in read_rows(prepared["noise_train"])}
    assert {row["noise"] for row in valid + test} <= noise
    assert len({row["ID"] for row in valid + test}) == len(valid) + len(test)
    # Every 10th utterance is held out (source_split): about a tenth of the speech.
    assert len(valid_speech) == math.ceil((len(train) + len(valid_speech)) / 10)


def test_fixed_mixtures_on_disk_hold_their_snr_and_peak(options, prepared):
    rows = read_rows(prepared["test"])[:20] + read_rows(prepared["valid"])[:10]
    for row in rows:
        noisy, _ = sf.read(row["noisy_wav"], dtype="float32")
        clean, _ = sf.read(row["clean_wav"], dtype="float32")
        measured = float(snr_of(torch.from_numpy(noisy), torch.from_numpy(clean)))
        assert abs(measured - float(row["snr_db"])) < 0.2, row["ID"]
        assert np.abs(noisy).max() < 1.0 and np.abs(clean).max() < 1.0
        assert float(row["duration"]) <= options["segment_seconds"] + 1e-6


def test_prepared_folder_is_kept_and_other_options_are_refused(options, prepared):
    folder = Path(prepared["test"]).parent
    before = {p: p.stat().st_mtime_ns for p in prepared.values()}
    assert prepare_from_hparams({**options, "data_folder": str(folder)}) == prepared
    assert {p: p.stat().st_mtime_ns for p in prepared.values()} == before
    with pytest.raises(FileExistsError, match="other options"):
        prepare_from_hparams({**options, "data_folder": str(folder), "test_seed": 1})


def test_missing_corpus_is_a_one_line_error(tmp_path):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, str(REPO / "recipes" / "prepare_corpus.py"),
         "--corpus_folder", str(tmp_path / "nowhere"), "--save_folder", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1].startswith("error: corpus manifest not found")
    assert "Traceback" not in out.stderr
