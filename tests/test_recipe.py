"""recipes/adapt.py end to end: real models, real audio, real outputs."""

import csv
import json
import runpy
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf

from speechbrain_mpol.brain import check_output_folder

from .conftest import (
    REPO,
    SHARED,
    metricgan_folder,
    real_mixture,
    schedule_counts,
    sepformer_folder,
)

EXAMPLES = REPO / "examples"


def run_recipe(tmp_path, *extra, output_folder=None):
    """``recipes/adapt.py hparams/mpol_voicebank.yaml`` in this process, outputs in tmp."""
    main = runpy.run_path(str(REPO / "recipes" / "adapt.py"))["main"]
    argv = [
        str(REPO / "hparams" / "mpol_voicebank.yaml"),
        f"--output_folder={output_folder or tmp_path / 'out'}",
        f"--savedir={tmp_path / 'savedir'}",
        f"--shared_folder={SHARED}",
        *extra,
    ]
    return main(argv)


def read_results(folder):
    with open(folder / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_default_metricgan_recipe_on_example_set(tmp_path, example_audio):
    metricgan_folder()  # fails loudly if no MetricGAN+ weights exist at all
    summary = run_recipe(tmp_path)
    out = tmp_path / "out"
    rows = read_results(out)
    examples = sorted((EXAMPLES / "noisy").iterdir())
    assert len(rows) == len(examples) == summary["utterances"] >= 10
    for row in rows:
        enhanced, rate = sf.read(out / "enhanced" / f"{row['ID']}.wav")
        noisy = sf.read(next(p for p in examples if p.stem == row["ID"]))[0]
        assert rate == 16000 and len(enhanced) == len(noisy)
        assert 1.0 <= float(row["pesq"]) <= 4.6 and 0 <= float(row["stoi"]) <= 1
    saved = json.loads((out / "summary.json").read_text())
    assert set(saved) >= {"noisy", "source", "adapted", "adapted_minus_source", "adaptation"}
    # the schedule of the dev-chosen default, read from the presets
    counts, expected = saved["adaptation"], schedule_counts("metricgan_plus", len(rows))
    assert counts["backward"] == expected["backward"]
    assert counts.get("updates", 0) + counts.get("rollbacks", 0) == expected["steps"]
    assert (out / "scores.png").is_file() and (out / "pesq_gain.png").is_file()


def test_authors_configuration_runs_continual(tmp_path, example_audio):
    metricgan_folder()
    summary = run_recipe(tmp_path, "--method=mpol_paper", "--compare_to_source=False")
    n = summary["utterances"]
    assert summary["adaptation"]["backward"] == n  # one adaptation pass per utterance
    assert summary["adaptation"]["updates"] == n // 8  # accumulation 8


def test_gtcrn_recipe_offline_end_to_end(tmp_path):
    summary = run_recipe(tmp_path, "--model=gtcrn_vctk")
    counts, expected = summary["adaptation"], schedule_counts("gtcrn_vctk", summary["utterances"])
    assert counts["backward"] == expected["backward"]
    assert counts.get("updates", 0) + counts.get("rollbacks", 0) == expected["steps"]
    assert summary["model_source"].endswith("gtcrn_vctk")
    assert np.isfinite(summary["adapted_minus_source"]["pesq"]["mean"])


def test_sepformer_recipe_offline_end_to_end(tmp_path, example_audio):
    """The hub id is unreachable here: the recipe falls back to a local SepFormer."""
    sepformer_folder()
    summary = run_recipe(tmp_path, "--model=sepformer")
    counts, expected = summary["adaptation"], schedule_counts("sepformer", summary["utterances"])
    assert counts["backward"] == expected["backward"]
    assert counts.get("updates", 0) + counts.get("rollbacks", 0) == expected["steps"]
    assert summary["model_source"] != "speechbrain/sepformer-wham16k-enhancement"
    assert np.isfinite(summary["adapted_minus_source"]["pesq"]["mean"])
    rows = read_results(tmp_path / "out")
    assert all(float(r["objective_w1"]) >= 0 and float(r["objective_sign"]) == 0 for r in rows)


def test_bad_files_are_skipped_and_reported(tmp_path, example_audio):
    metricgan_folder()
    folder = tmp_path / "in"
    folder.mkdir()
    noisy, _ = real_mixture(example_audio, seconds=1.5)
    sf.write(folder / "good.wav", noisy.numpy(), 16000)
    (folder / "empty.wav").write_bytes(b"")
    sf.write(folder / "silent.wav", np.zeros(8000, np.float32), 16000)
    sf.write(folder / "nan.wav", np.r_[noisy.numpy()[:800], np.nan].astype(np.float32), 16000,
             subtype="FLOAT")
    (folder / "text.wav").write_text("hello")
    (folder / "garbled.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(40))
    sf.write(folder / "long.wav", np.tile(noisy.numpy(), 30), 16000)  # 45 s > max_seconds
    clipped = np.clip(4 * noisy.numpy(), -1, 1)
    sf.write(folder / "clipped.wav", clipped, 16000)
    sf.write(folder / "rate44k.wav", np.interp(np.arange(0, len(noisy), 16000 / 44100),
                                               np.arange(len(noisy)), noisy.numpy()), 44100)
    sf.write(folder / "stereo.wav", np.stack([noisy.numpy(), noisy.numpy()], 1), 16000)
    summary = run_recipe(tmp_path, f"--data_folder={folder}", "--max_seconds=30")
    problems = {s["file"].rsplit("/", 1)[-1]: s["problem"] for s in summary["skipped"]}
    assert set(problems) == {"empty.wav", "silent.wav", "nan.wav", "text.wav", "garbled.wav",
                             "long.wav"}
    assert "NaN" in problems["nan.wav"] and "empty" in problems["empty.wav"]
    assert "too long" in problems["long.wav"] and "silent" in problems["silent.wav"]
    assert "unreadable" in problems["text.wav"] and "unreadable" in problems["garbled.wav"]
    # clipped audio is processed (with a warning), other rates resampled, stereo downmixed
    assert summary["utterances"] == 4
    written = sorted(p.name for p in (tmp_path / "out" / "enhanced").iterdir())
    assert written == ["clipped.wav", "good.wav", "rate44k.wav", "stereo.wav"]
    rate44k, rate = sf.read(tmp_path / "out" / "enhanced" / "rate44k.wav")
    assert rate == 16000 and abs(len(rate44k) - len(noisy)) <= 2


def test_unwritable_output_folder_is_a_clear_error(tmp_path, example_audio):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    with pytest.raises(SystemExit, match="output folder is not writable"):
        run_recipe(tmp_path, output_folder=blocker / "out")


def test_output_folder_check_is_safe_for_concurrent_ranks(tmp_path):
    # torchrun ranks check the same folder at once; a shared probe file raced (CI, stop 21)
    folder = tmp_path / "ddp"
    with ThreadPoolExecutor(max_workers=8) as pool:
        done = list(pool.map(lambda _: check_output_folder(folder), range(400)))
    assert done == [folder] * 400
    assert list(folder.iterdir()) == []


def test_output_path_equal_to_input_is_refused(tmp_path, example_audio):
    enhanced = tmp_path / "out" / "enhanced"
    enhanced.mkdir(parents=True)
    noisy, _ = real_mixture(example_audio, seconds=1.0)
    sf.write(enhanced / "x.wav", noisy.numpy(), 16000)
    before = (enhanced / "x.wav").read_bytes()
    with pytest.raises(SystemExit, match=r"\(ID 'x'\): its output .*x.wav is the noisy_wav of "
                                         r"ID 'x'; refusing to overwrite an input"):
        run_recipe(tmp_path, f"--data_folder={enhanced}")
    assert (enhanced / "x.wav").read_bytes() == before


def test_missing_model_stops_with_a_helpful_message(tmp_path, example_audio):
    with pytest.raises(SystemExit, match="No pretrained enhancer could be loaded"):
        run_recipe(tmp_path, "--model=metricgan_libri",
                   "--model_source=speechbrain/not-a-model")
