"""A killed continual run, restarted with the same command, gives the uninterrupted results."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import soundfile as sf

from .conftest import REPO, SHARED, metricgan_folder, real_mixture


def _make_set(folder, example_audio, n=8):
    folder.mkdir()
    noises = ["noise1.wav", "noise2.wav", "noise3.wav", "noise4.wav"]
    for i in range(n):
        noisy, _ = real_mixture(example_audio, snr=5.0, seconds=1.5, seed=i,
                                noise=noises[i % len(noises)])
        sf.write(folder / f"utt{i}.wav", noisy.numpy(), 16000)


def _command(data, out):
    return [sys.executable, str(REPO / "recipes" / "adapt.py"),
            str(REPO / "hparams" / "mpol_voicebank.yaml"), f"--data_folder={data}",
            f"--output_folder={out}", f"--shared_folder={SHARED}",
            "--method_options={accumulation: 2, mode: continual}", "--compare_to_source=False",
            "--plots=False", "--model=metricgan_libri"]


def _saved_rows(out) -> int:
    """Rows in the newest complete checkpoint of ``out`` (0 if none yet)."""
    rows = 0
    for meta in (out / "checkpoints").glob("CKPT+*/CKPT.yaml"):
        try:
            progress = json.loads((meta.parent / "progress.ckpt").read_text())
        except (OSError, ValueError):  # replaced by a newer one while being read
            continue
        rows = max(rows, len(progress["rows"]))
    return rows


def _results(out):
    with open(out / "results.csv") as handle:
        return handle.read()


def test_killed_run_resumes_to_identical_results(tmp_path, example_audio):
    metricgan_folder()
    data = tmp_path / "in"
    _make_set(data, example_audio)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = tmp_path / "full"
    subprocess.run(_command(data, full), check=True, cwd=REPO, env=env, capture_output=True)

    part = tmp_path / "part"
    proc = subprocess.Popen(_command(data, part), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and _saved_rows(part) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _saved_rows(part)
    assert 3 <= done < 8, "the run must be killed midway"

    subprocess.run(_command(data, part), check=True, cwd=REPO, env=env, capture_output=True)
    assert _results(part) == _results(full)
    # Complete: no checkpoint is left, only the key of the finished run.
    assert sorted(p.name for p in (part / "checkpoints").iterdir()) == ["finished.json"]
    assert not list(part.rglob("*.tmp")), "no half-written file may remain"
    for name in sorted(p.name for p in (full / "enhanced").iterdir()):
        a = sf.read(full / "enhanced" / name)[0]
        b = sf.read(part / "enhanced" / name)[0]
        assert np.array_equal(a, b), name


def test_torchrun_two_processes_shard_and_merge(tmp_path, example_audio):
    """recipes/adapt.py under torchrun (2 CPU processes, gloo): merged CSV, no gaps or dups."""
    metricgan_folder()
    data = tmp_path / "in"
    _make_set(data, example_audio, n=5)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as probe:  # a free loopback port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={port}", *_command(data, out)[1:],
           "--distributed_backend=gloo", "--device=cpu"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    # every rank's error lines first: the tail alone shows only the rank that saw the other go
    errors = [line for line in done.stderr.splitlines() if "Error" in line or "error:" in line]
    assert done.returncode == 0, "\n".join(errors[:20]) + "\n...\n" + done.stderr[-1500:]
    with open(out / "results.csv") as handle:
        ids = [line.split(",")[0] for line in handle.read().splitlines()[1:]]
    assert ids == [f"utt{i}" for i in range(5)]
    assert sorted(p.name for p in (out / "rank0" / "enhanced").iterdir()) == ["utt0.wav",
                                                                            "utt1.wav",
                                                                            "utt2.wav"]
    assert sorted(p.name for p in (out / "rank1" / "enhanced").iterdir()) == ["utt3.wav",
                                                                            "utt4.wav"]
