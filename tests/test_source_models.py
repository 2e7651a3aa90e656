"""The exported corpus-domain source models: hub layout, loading, and real enhancement.

pretrained/metricgan_libri (recipes/train_source.py) and pretrained/sepformer_libri
(recipes/train_source_sepformer.py) are loaded with ``from_hparams`` from another working
directory, through the recipes' own scorer (source_training.evaluate_export), and must improve
real corpus mixtures: unseen LibriSpeech test speakers + training noise at 0..15 dB.
"""

import csv
import hashlib
import re
from pathlib import Path

import pytest
from hyperpyyaml import load_hyperpyyaml

from speechbrain_mpol.audio import write_audio
from speechbrain_mpol.corpus import read_corpus, select
from speechbrain_mpol.dynamic_mixing import DynamicMixer, read_segment
from speechbrain_mpol.source_training import evaluate_export

REPO = Path(__file__).resolve().parents[1]

# Margins: on the 6 mixtures below the exported models gained PESQ-WB +0.72 (MetricGAN+,
# 1.40 -> 2.12) and SI-SDR +2.08 dB (SepFormer, 9.32 -> 11.39 dB), measured when they were
# exported; the thresholds are half of that, slack for other torch builds.
MODELS = {
    "metricgan_libri": ("speechbrain.inference.enhancement.SpectralMaskEnhancement",
                        "metricgan.yaml", ["enhance_model"], "pesq", 0.35),
    "sepformer_libri": ("speechbrain.inference.separation.SepformerSeparation",
                        "sepformer.yaml", ["encoder", "masknet", "decoder"], "si_sdr", 1.0),
}


def interface(dotted: str) -> type:
    module, name = dotted.rsplit(".", 1)
    return getattr(__import__(module, fromlist=[name]), name)


def export_folder(name: str) -> Path:
    folder = REPO / "pretrained" / name
    if not (folder / "hyperparams.yaml").is_file():
        pytest.skip(f"{folder} is not exported yet")
    return folder


@pytest.fixture(scope="module")
def real_mixtures(tmp_path_factory) -> Path:
    """6 corpus mixtures (speech/test + noise/train, source-domain options) and their CSV."""
    with open(REPO / "hparams" / "source_corpus.yaml") as handle:
        options = load_hyperpyyaml(handle)
    corpus_folder = Path(options["corpus_folder"])
    if not (corpus_folder / "MANIFEST.tsv").is_file():
        pytest.skip(f"corpus not found: {corpus_folder}/MANIFEST.tsv")
    corpus = read_corpus(corpus_folder)
    speech = select(corpus, kind="speech", split="test")[::20][:6]
    noise = [f.path for f in select(corpus, kind="noise", split="train")]
    mixer = DynamicMixer(noise, options["snr_range"], options["level_range"],
                         max_peak=options["max_peak"], seed=99)
    folder = tmp_path_factory.mktemp("mixtures")
    rows = []
    for f in speech:
        mix = mixer.draw(read_segment(f.path))
        noisy, clean = folder / f"{f.name}_noisy.wav", folder / f"{f.name}_clean.wav"
        write_audio(noisy, mix.noisy, 16000)
        write_audio(clean, mix.clean, 16000)
        rows.append({"ID": f.name, "noisy_wav": str(noisy), "clean_wav": str(clean)})
    with open(folder / "set.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder / "set.csv"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_export_is_the_hub_layout_with_the_repository_yaml(name):
    folder = export_folder(name)
    _, export_yaml, modules, _, _ = MODELS[name]
    text = (folder / "hyperparams.yaml").read_text()
    assert text == (REPO / "hparams" / "export" / export_yaml).read_text()
    keys = {line.split(":")[0] for line in text.splitlines() if re.match(r"^\w+:", line)}
    assert "paths" not in keys and {"modules", "pretrainer"} <= keys
    card = (folder / "README.md").read_text()
    for module in modules:
        data = (folder / f"{module}.ckpt").read_bytes()
        assert len(data) < 10_000_000
        assert hashlib.sha256(data).hexdigest() in card, f"{module}.ckpt sha256 not in README"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_export_loads_from_any_directory_and_improves_real_mixtures(
    name, real_mixtures, tmp_path, monkeypatch
):
    folder = export_folder(name)
    dotted, _, _, metric, margin = MODELS[name]
    monkeypatch.chdir(tmp_path)  # the folder must not be found relative to the checkout
    summary = evaluate_export(folder, real_mixtures, tmp_path / "out", interface(dotted))
    assert summary["n"] == 6
    gain = summary["model"][metric] - summary["noisy"][metric]
    assert gain > margin, f"{name}: {metric} {summary['noisy'][metric]:.3f} -> " \
                          f"{summary['model'][metric]:.3f}"
    scores = list(csv.DictReader(open(tmp_path / "out" / "test_scores.csv")))
    assert len(scores) == 6 and (tmp_path / "out" / "test_scores.json").is_file()


@pytest.mark.parametrize("export_yaml", ["metricgan.yaml", "sepformer.yaml"])
def test_export_yaml_builds_the_model_without_hub_paths(export_yaml):
    with open(REPO / "hparams" / "export" / export_yaml) as handle:
        hparams = load_hyperpyyaml(handle)
    assert "paths" not in hparams
    assert set(hparams["pretrainer"].loadables) == set(hparams["modules"])


def test_recipe_trains_exports_and_resumes_at_the_next_epoch(tmp_path):
    """run_source_recipe end to end on the real corpus, tiny: 1 epoch, then resumed to 2."""
    from speechbrain.inference.enhancement import SpectralMaskEnhancement

    from speechbrain_mpol.source_training import (
        MetricGANSourceBrain,
        prepare_from_hparams,
        run_source_recipe,
    )

    with open(REPO / "hparams" / "source_corpus.yaml") as handle:
        options = load_hyperpyyaml(handle, {"data_folder": str(tmp_path / "data")})
    if not (Path(options["corpus_folder"]) / "MANIFEST.tsv").is_file():
        pytest.skip(f"corpus not found: {options['corpus_folder']}/MANIFEST.tsv")
    manifests = prepare_from_hparams(options)
    for name in ("valid", "test"):  # keep two fixed mixtures of each, for speed
        lines = manifests[name].read_text().splitlines(keepends=True)
        manifests[name].write_text("".join(lines[:3]))
    argv = [str(REPO / "hparams" / "source_metricgan.yaml"),
            f"--data_folder={tmp_path / 'data'}", f"--output_folder={tmp_path / 'run'}",
            f"--export_folder={tmp_path / 'export'}", "--examples_per_epoch=4",
            "--batch_size=2", "--crop_seconds=1.0"]
    first = run_source_recipe(argv + ["--number_of_epochs=1"], MetricGANSourceBrain,
                              SpectralMaskEnhancement)
    assert first["n"] == 2 and (tmp_path / "export" / "enhance_model.ckpt").is_file()
    with pytest.raises(FileExistsError, match="overwrite_export"):
        run_source_recipe(argv + ["--number_of_epochs=2"], MetricGANSourceBrain,
                          SpectralMaskEnhancement)
    run_source_recipe(argv + ["--number_of_epochs=2", "--overwrite_export=True"],
                      MetricGANSourceBrain, SpectralMaskEnhancement)
    log = (tmp_path / "run" / "train_log.txt").read_text().splitlines()
    assert [line.split(",")[0] for line in log] == ["epoch: 1", "epoch: 2"]
