"""Resume state (#16 items 4 and 5): keyed to data and settings, small, disk-full safe."""

import errno
import io
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest
import soundfile as sf
import torch

import speechbrain_mpol.atomic
from speechbrain_mpol.loading import LoadReport
from speechbrain_mpol.pipeline import run_settings
from speechbrain_mpol.presets import build_adapter, load_model_preset
from speechbrain_mpol.progress import (
    IN_FLIGHT,
    AdaptedState,
    ProgressCheckpointer,
    RunProgress,
    StaleProgressError,
    run_key,
)

from .conftest import (
    REPO,
    FillsTheDisk,
    build_metricgan_enhancer,
    metricgan_folder,
    real_mixture,
)

METRICGAN = load_model_preset("metricgan_plus")
ADAPTED = METRICGAN["adapted_params"]


def _adapter(enhancer=None, **options):
    """The project's MPol adapter (its own adapted_state / load_adapted_state) on MetricGAN+."""
    enhancer = enhancer or build_metricgan_enhancer(seed=0)
    return build_adapter(enhancer, METRICGAN, "mpol", accumulation=2, **options)


@pytest.fixture(scope="module")
def stream(example_audio):
    """Six real noisy utterances (1 s each, real speech in real noise)."""
    return [real_mixture(example_audio, snr=5.0, seconds=1.0, seed=i,
                         noise=f"noise{i % 4 + 1}.wav")[0][None] for i in range(6)]


@pytest.fixture
def manifest(tmp_path):
    rows = []
    for uid in ("a", "b"):
        path = tmp_path / "in" / f"{uid}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, torch.full((1600,), 0.1).numpy(), 16000)
        rows.append({"ID": uid, "noisy_wav": str(path), "clean_wav": ""})
    return rows


SETTINGS = {"model_source": "pretrained/metricgan_libri", "mode": "continual", "lr": 5e-4,
            "adapted_params": ADAPTED, "accumulation": 2}


def _keeper(folder, progress, adapter=None, rows=(), settings=SETTINGS):
    recoverables = {"progress": progress}
    if adapter is not None:
        recoverables["adapter"] = AdaptedState(adapter)
    return ProgressCheckpointer(folder, recoverables, run_key(rows, settings))


def test_a_resumed_stream_continues_bit_for_bit(tmp_path, stream):
    """Save after 3 of 6 utterances (mid-accumulation: gradients pending), resume elsewhere."""
    torch.set_num_threads(1)
    full = _adapter(rollback_threshold=0.5)
    progress = RunProgress()
    keeper = _keeper(tmp_path / "ckpt", progress, full)
    outputs = []
    for i, wav in enumerate(stream):
        outputs.append(full(wav))
        progress.add({"ID": f"u{i}"}, seconds=1.0)
        if i == 2:
            assert full.pending == 1 and full.named_params[0][1].grad is not None
            keeper.save()
    assert full.counts["updates"] >= 1

    resumed, again = _adapter(rollback_threshold=0.5), RunProgress()
    assert _keeper(tmp_path / "ckpt", again, resumed).resume() is not None
    assert again.position == 3 and again.finished_ids == {"u0", "u1", "u2"}
    for i in range(3, 6):
        assert torch.equal(resumed(stream[i]), outputs[i]), f"utterance {i}"
    assert resumed.counts == full.counts

    fresh = _adapter(rollback_threshold=0.5)  # the control: without the saved state
    assert not all(torch.equal(fresh(stream[i]), outputs[i]) for i in range(3, 6))


def test_another_manifest_or_other_settings_refuse_in_one_line(tmp_path, manifest):
    progress = RunProgress()
    progress.add({"ID": "a"})
    _keeper(tmp_path, progress, rows=manifest).save()

    with pytest.raises(StaleProgressError) as err:
        _keeper(tmp_path, RunProgress(), rows=manifest, settings={**SETTINGS, "lr": 1e-3,
                                                                  "mode": "episodic"}).resume()
    message = str(err.value)
    assert "\n" not in message and str(tmp_path) in message
    assert "settings differ (lr 0.0005 -> 0.001; mode 'continual' -> 'episodic')" in message
    assert "--overwrite=True" in message

    with pytest.raises(StaleProgressError, match=r"the manifest differs \(2 rows then, 1 now"):
        _keeper(tmp_path, RunProgress(), rows=manifest[:1]).resume()
    os.utime(manifest[1]["noisy_wav"], ns=(0, 0))  # same names, another file under one
    with pytest.raises(StaleProgressError, match="the manifest differs"):
        _keeper(tmp_path, RunProgress(), rows=manifest).resume()

    started_over = RunProgress()
    keeper = _keeper(tmp_path, started_over, rows=manifest)
    assert keeper.resume(overwrite=True) is None and started_over.rows == []
    assert keeper.list_checkpoints() == []


def test_retrained_weights_in_the_same_folder_are_another_run(tmp_path, manifest):
    folder = tmp_path / "model"
    shutil.copytree(REPO / "pretrained" / "metricgan_libri", folder)
    enhancer = torch.nn.Module()
    enhancer.load_report = LoadReport(str(folder), str(folder), "local folder")

    def settings():
        return run_settings({"seed": 1}, {"model_source": str(folder)}, {"mode": "continual"},
                            enhancer, world_size=1)

    progress = RunProgress()
    progress.add({"ID": "a"})
    _keeper(tmp_path / "out", progress, rows=manifest, settings=settings()).save()
    weights = bytearray((folder / "enhance_model.ckpt").read_bytes())
    weights[-1] ^= 1
    (folder / "enhance_model.ckpt").write_bytes(bytes(weights))
    with pytest.raises(StaleProgressError, match=r"settings differ \(model_used "):
        _keeper(tmp_path / "out", RunProgress(), rows=manifest, settings=settings()).resume()


def test_finished_results_of_another_run_are_protected(tmp_path, manifest):
    keeper = _keeper(tmp_path, RunProgress(), rows=manifest)
    keeper.save()
    keeper.finish()
    assert keeper.list_checkpoints() == []
    assert _keeper(tmp_path, RunProgress(), rows=manifest).resume() is None  # same run: redo
    with pytest.raises(StaleProgressError, match="holds the finished results of another run"):
        _keeper(tmp_path, RunProgress(), rows=manifest[1:]).resume()


def test_a_full_disk_keeps_the_previous_checkpoint_and_leaves_nothing(tmp_path, monkeypatch,
                                                                      stream):
    adapter, progress = _adapter(), RunProgress()
    keeper = _keeper(tmp_path / "ckpt", progress, adapter)
    adapter(stream[0])
    progress.add({"ID": "u0"})
    keeper.save()
    before = keeper.list_checkpoints()

    adapter(stream[1])
    progress.add({"ID": "u1"})

    monkeypatch.setattr(speechbrain_mpol.atomic, "open", FillsTheDisk, raising=False)
    with pytest.raises(OSError) as err:
        keeper.save()
    monkeypatch.undo()
    assert err.value.errno == errno.ENOSPC and "\n" not in str(err.value)
    assert f"cannot save progress in {tmp_path / 'ckpt'}" in str(err.value)
    assert keeper.list_checkpoints() == before
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == [before[0].path.name]
    assert not list((tmp_path / "ckpt").rglob("*.tmp"))

    again = RunProgress()
    assert _keeper(tmp_path / "ckpt", again, _adapter()).resume() is not None
    assert [row["ID"] for row in again.rows] == ["u0"]


def test_a_save_killed_midway_is_not_a_checkpoint(tmp_path, manifest):
    keeper = _keeper(tmp_path, RunProgress(), rows=manifest)
    partial = tmp_path / "CKPT+2099-01-01+00-00-00+00"
    partial.mkdir()
    (partial / "progress.ckpt").write_text("{\"rows\": [")  # no CKPT.yaml: never completed
    assert keeper.resume() is None
    keeper.save()
    assert not partial.exists() and len(keeper.list_checkpoints()) == 1


def test_a_batch_that_stopped_the_run_is_counted(tmp_path, manifest):
    keeper = _keeper(tmp_path, RunProgress(), rows=manifest)
    assert keeper.begin(["a"]) == 1
    # The process dies here; the rerun starts the same batch again, and again.
    rerun = _keeper(tmp_path, RunProgress(), rows=manifest)
    assert rerun.begin(["a"]) == 2
    assert rerun.begin(["a"]) == 3
    rerun.save()  # finished: the marker goes
    assert not (tmp_path / IN_FLIGHT).exists() and rerun.begin(["a"]) == 1
    assert rerun.begin(["b"]) == 1


def test_the_checkpoint_of_metricgan_is_small(tmp_path, example_audio):
    """#16 item 5: adapted parameters + optimizer + gradients, not the whole model."""
    from speechbrain.inference.enhancement import SpectralMaskEnhancement

    enhancer = SpectralMaskEnhancement.from_hparams(source=str(metricgan_folder()),
                                                    savedir=str(tmp_path / "mg"))
    adapter = _adapter(enhancer, rollback_threshold=0.5)
    for seed in range(3):  # one update, then one utterance of gradients pending
        adapter(real_mixture(example_audio, snr=5.0, seconds=1.0, seed=seed)[0][None])
    assert adapter.counts["updates"] == 1 and adapter.pending == 1
    progress = RunProgress()
    for i in range(3):
        progress.add({"ID": f"u{i}", "pesq": 2.0, "stoi": 0.9}, seconds=1.0)
    keeper = _keeper(tmp_path / "ckpt", progress, adapter)
    keeper.save()
    (ckpt,) = keeper.list_checkpoints()
    size = sum(p.stat().st_size for p in ckpt.path.iterdir())

    old = io.BytesIO()  # what progress.pt held: the whole model, and whole again as the
    state = adapter.model.state_dict()  # guard's last good weights, with the optimizer
    torch.save({"rows": progress.rows, "model": state,
                "good": {name: value.clone() for name, value in state.items()},
                "optimizer": adapter.optimizer.state_dict()}, old)
    model = sum(v.numel() * v.element_size() for v in adapter.model.state_dict().values())
    adapted = sum(p.numel() * p.element_size() for _, p in adapter.named_params)
    print(f"\nMetricGAN+ ({metricgan_folder().name}): model {model / 1e6:.2f} MB, adapted "
          f"parameters {adapted / 1e6:.3f} MB; checkpoint {size / 1e6:.3f} MB "
          f"(adapter.ckpt {ckpt.paramfiles['adapter'].stat().st_size / 1e6:.3f} MB); "
          f"progress.pt {len(old.getvalue()) / 1e6:.2f} MB")
    # Parameters, good state, gradients, Adam's two moments: 5 copies of the adapted ones.
    assert size < 5 * adapted + 100_000
    assert size < len(old.getvalue()) / 5


def test_ranks_save_without_waiting_for_each_other(tmp_path):
    """Two gloo processes save 1 and 4 checkpoints: the base Checkpointer's collectives would
    deadlock them; these are per process."""
    script = textwrap.dedent(f"""
        import os, sys
        import torch.distributed as dist
        sys.path.insert(0, {str(REPO)!r})
        from speechbrain_mpol.progress import ProgressCheckpointer, RunProgress, run_key
        rank = int(os.environ["RANK"])
        dist.init_process_group("gloo", rank=rank, world_size=2)
        progress = RunProgress()
        keeper = ProgressCheckpointer(sys.argv[1] + f"/rank{{rank}}", {{"progress": progress}},
                                      run_key([], {{"rank": rank}}))
        for i in range(1 + 3 * rank):
            progress.add({{"ID": f"{{rank}}-{{i}}"}})
            keeper.save()
        dist.barrier()
        print(len(keeper.list_checkpoints()), progress.position)
        dist.destroy_process_group()
    """)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    procs = [subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
             "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}) for rank in (0, 1)]
    outs = [proc.communicate(timeout=120)[0].split() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    assert outs == [["1", "1"], ["1", "4"]]
