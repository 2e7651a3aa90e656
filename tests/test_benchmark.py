"""The benchmark, the dev sweep and the gate calibration through their recipes, on small sets
built from the real corpus and run with the real GTCRN-VCTK weights."""

import csv
import json
import runpy

import numpy as np
import pytest

from speechbrain_mpol.shift_sets import prepare_benchmark

from .conftest import REPO, SHARED

CORPUS = SHARED / "corpus"
SHIFTS = ["in_domain", "level", "easy_vctk"]
PER_SHIFT = 4
METHODS = ["source", "mpol_default", "mpol_gated"]


def read(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def recipe(name: str):
    return runpy.run_path(str(REPO / "recipes" / f"{name}.py"))["main"]


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    if not (CORPUS / "MANIFEST.tsv").is_file():
        pytest.skip(f"real corpus not found at {CORPUS}")
    folder = tmp_path_factory.mktemp("sets")
    prepare_benchmark(CORPUS, folder, shifts=SHIFTS, per_shift=PER_SHIFT)
    return folder


def common(sets, out) -> list[str]:
    return [f"--shifts_folder={sets}", f"--shifts=[{', '.join(SHIFTS)}]",
            "--unshifted=[in_domain, easy_vctk]", f"--output_folder={out}",
            f"--shared_folder={SHARED}"]


def test_benchmark_reports_every_method_with_paired_intervals_and_reuses_runs(sets, tmp_path):
    out = tmp_path / "bench"
    argv = [str(REPO / "hparams" / "benchmark.yaml"), *common(sets, out), "--split=test",
            "--models=[gtcrn_vctk]", f"--methods=[{', '.join(METHODS)}]",
            "--histogram_methods=[mpol_default]"]
    recipe("benchmark")(argv)

    rows = read(out / "benchmark.csv")
    assert len(rows) == len(SHIFTS) * PER_SHIFT * len(METHODS)
    assert all(np.isfinite(float(r["gate_score"])) and float(r["w1_source"]) >= 0 for r in rows)
    table = read(out / "summary.csv")
    assert [(r["shift"], r["method"]) for r in table] == [(s, m) for s in SHIFTS for m in METHODS]
    summary = {(r["shift"], r["method"]): r for r in table}
    assert set(summary) == {(s, m) for s in SHIFTS for m in METHODS}
    by_id = {(r["method"], r["ID"]): float(r["pesq"]) for r in rows}
    for shift in SHIFTS:
        for method in METHODS[1:]:
            entry = summary[(shift, method)]
            assert int(entry["n"]) == PER_SHIFT
            # the paired difference is the difference of the per-utterance scores
            ids = [r["ID"] for r in rows if r["shift"] == shift and r["method"] == method]
            paired = np.mean([by_id[(method, i)] - by_id[("source", i)] for i in ids])
            assert float(entry["d_pesq"]) == pytest.approx(paired, abs=1e-9)
            assert float(entry["d_pesq_lo"]) <= float(entry["d_pesq"]) <= float(entry["d_pesq_hi"])
    diagnostics = read(out / "diagnostics.csv")
    assert [d["shift"] for d in diagnostics] == SHIFTS
    assert all(0 <= float(d["mask_mid_share"]) <= 1 for d in diagnostics)
    cost = {c["method"]: c for c in read(out / "cost.csv")}
    assert float(cost["source"]["backward_per_audio_second"]) == 0
    assert float(cost["mpol_default"]["backward_per_audio_second"]) > 0
    assert "gtcrn_vctk" in (out / "summary.md").read_text()

    figures = [out / f"fig_gtcrn_vctk_{s}_hist.png" for s in SHIFTS]
    masks = np.load(out / "runs" / "gtcrn_vctk" / "mpol_default" / "adapted_masks.npz")
    assert sorted(masks.files) == sorted(SHIFTS) and all(p.is_file() for p in figures)

    # a second run with the same stream and options computes nothing again, and still draws
    # the figures (the adapted masks are kept with the run)
    runs = sorted((out / "runs").rglob("rows.csv"))
    stamps = [p.stat().st_mtime_ns for p in runs]
    first = (out / "benchmark.csv").read_text()
    for figure in figures:
        figure.unlink()
    recipe("benchmark")(argv)
    assert [p.stat().st_mtime_ns for p in runs] == stamps
    assert (out / "benchmark.csv").read_text() == first
    assert all(p.is_file() for p in figures) and (out / "fig_gtcrn_vctk_delta.png").is_file()


def test_gate_is_calibrated_on_dev_only_and_its_extremes_behave(sets, tmp_path, capsys):
    out = tmp_path / "gate"
    argv = [str(REPO / "hparams" / "calibrate_gate.yaml"), *common(sets, out),
            "--models=[gtcrn_vctk]", "--quantiles=[0.0, 1.0]", "--max_loss=10.0"]
    with pytest.raises(SystemExit, match="dev split only"):
        recipe("calibrate_gate")([*argv, "--split=test"])
    chosen = recipe("calibrate_gate")(argv)
    table = {float(t["quantile"]): t for t in read(out / "gate_gtcrn_vctk.csv")}
    rows = read(out / "benchmark.csv")
    scores = [float(r["gate_score"]) for r in rows
              if r["method"] == "source" and r["shift"] == "easy_vctk"]
    assert float(table[1.0]["gate_threshold"]) == pytest.approx(max(scores))
    # at the top quantile no utterance of the calibration set is adapted: no change there
    assert float(table[1.0]["d_easy_vctk"]) == 0.0
    assert float(table[0.0]["gate_threshold"]) == pytest.approx(min(scores))
    assert chosen["gtcrn_vctk"]["quantile"] in (0.0, 1.0)  # max_loss 10: both qualify
    assert "gate_threshold" in capsys.readouterr().out

    # the estimate was confirmed by running the gated method itself on the dev stream: there,
    # every utterance the gate keeps closed is enhanced exactly as by Source
    best = chosen["gtcrn_vctk"]
    verified = read(out / "verify" / "gtcrn_vctk" / f"q{best['quantile']}" / "benchmark.csv")
    source = {r["ID"]: r for r in rows if r["method"] == "source"}
    assert sorted(r["ID"] for r in verified) == sorted(source)
    closed = [r for r in verified if float(r["gate_score"]) <= best["gate_threshold"]]
    assert closed and all(float(r["pesq"]) == pytest.approx(float(source[r["ID"]]["pesq"]),
                                                            abs=1e-4) for r in closed)
    for shift in SHIFTS:
        ids = [r["ID"] for r in verified if source[r["ID"]]["shift"] == shift]
        measured = np.mean([float(r["pesq"]) - float(source[r["ID"]]["pesq"])
                            for r in verified if r["ID"] in ids])
        assert best[f"measured_d_{shift}"] == pytest.approx(measured, abs=1e-9)
    assert "measured: the gated method run" in (out / "gate_gtcrn_vctk.md").read_text()


def test_sweep_ranks_configurations_on_dev(sets, tmp_path):
    out = tmp_path / "sweep"
    argv = [str(REPO / "hparams" / "sweep.yaml"), *common(sets, out), "--model=gtcrn_vctk",
            f"--max_per_shift={PER_SHIFT}", "--report_objective=null",
            "--grid={reference: [noisy_wiener], mode: [continual], lr: [0.001], steps: [1], "
            "compare_in: [linear]}"]
    ranked = recipe("sweep")(argv)
    assert {e["params"] for e in ranked} == {"default", "norm"}  # the preset's parameter sets
    saved = read(out / "sweep_gtcrn_vctk.csv")
    assert [r["params"] for r in saved] == [e["params"] for e in ranked]
    for entry in ranked:
        assert entry["eligible"] == (entry["d_in_domain"] >= -0.02)
        shifted = [entry["d_level"]]  # in_domain is the control, easy_vctk unshifted
        assert entry["mean_delta_shifted"] == pytest.approx(np.mean(shifted))
    assert "noisy_wiener" in (out / "sweep_gtcrn_vctk.md").read_text()
    assert json.dumps(ranked)  # plain values only
