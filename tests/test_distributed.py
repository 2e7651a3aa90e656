"""Sharding, merging and a real two-process gloo run on CPU."""

import csv
import datetime
import os
import socket

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from speechbrain_mpol.distributed import merge_result_csvs, shard_rows


@pytest.mark.parametrize("strided", [False, True])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("count", [0, 1, 5, 6, 11])
def test_shards_cover_every_row_once(count, world, strided):
    rows = [f"u{i}" for i in range(count)]
    shards = [shard_rows(rows, r, world, strided=strided) for r in range(world)]
    flat = [row for shard in shards for row in shard]
    assert sorted(flat) == sorted(rows) and len(flat) == len(rows)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    if not strided:
        assert flat == rows  # contiguous shards concatenate back to the manifest


def test_shard_rejects_bad_rank():
    with pytest.raises(ValueError, match="rank"):
        shard_rows([1, 2], 2, 2)


def write_csv(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["ID", "value"])
        writer.writeheader()
        writer.writerows({"ID": i, "value": v} for i, v in rows)


def read_ids(path):
    with open(path, newline="") as handle:
        return [row["ID"] for row in csv.DictReader(handle)]


def test_merge_restores_manifest_order(tmp_path):
    write_csv(tmp_path / "r0.csv", [("c", 3), ("a", 1)])
    write_csv(tmp_path / "r1.csv", [("b", 2)])
    (tmp_path / "r2.csv").write_text("")  # a rank that had no rows
    out = merge_result_csvs([tmp_path / f"r{r}.csv" for r in range(3)], tmp_path / "all.csv",
                            manifest_ids=["a", "b", "c"])
    assert read_ids(out) == ["a", "b", "c"]
    out = merge_result_csvs([tmp_path / "r1.csv", tmp_path / "r0.csv"], tmp_path / "any.csv")
    assert read_ids(out) == ["b", "c", "a"]  # no manifest: order of the files


def test_merge_raises_on_duplicates_and_gaps(tmp_path):
    write_csv(tmp_path / "r0.csv", [("a", 1), ("b", 2)])
    write_csv(tmp_path / "r1.csv", [("b", 2)])
    with pytest.raises(ValueError, match="duplicate ID 'b'.*r0.csv.*r1.csv"):
        merge_result_csvs([tmp_path / "r0.csv", tmp_path / "r1.csv"], tmp_path / "all.csv")
    with pytest.raises(ValueError, match="1 missing \\['c'\\]"):
        merge_result_csvs([tmp_path / "r0.csv"], tmp_path / "all.csv",
                          manifest_ids=["a", "b", "c"])
    with pytest.raises(ValueError, match="1 not in the manifest \\['b'\\]"):
        merge_result_csvs([tmp_path / "r0.csv"], tmp_path / "all.csv", manifest_ids=["a"])
    assert not (tmp_path / "all.csv").exists()


# ------------------------------------------------------------------ a real 2-process gloo run
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gloo_worker(rank: int, world: int, port: int, folder: str) -> None:
    """One rank: shard the manifest, RMS of each wav, per-rank CSV, barrier, rank 0 merges."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=30))
    try:
        with open(os.path.join(folder, "manifest.csv"), newline="") as handle:
            manifest = list(csv.DictReader(handle))
        mine = shard_rows(manifest, rank, world)
        rows = []
        for row in mine:
            wav = sf.read(row["noisy_wav"], dtype="float32")[0]
            rows.append((row["ID"], f"{float(np.sqrt(np.mean(wav ** 2))):.6f}"))
        write_csv(os.path.join(folder, f"rank{rank}.csv"), rows)
        count = torch.tensor([len(rows)])
        dist.all_reduce(count)  # every rank agrees on the total before the merge
        dist.barrier()
        if rank == 0:
            assert int(count) == len(manifest)
            merge_result_csvs([os.path.join(folder, f"rank{r}.csv") for r in range(world)],
                              os.path.join(folder, "results.csv"),
                              manifest_ids=[row["ID"] for row in manifest])
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_run(tmp_path):
    rng = np.random.default_rng(0)
    manifest = []
    for i in range(6):
        wav = (0.05 * (i + 1) * rng.standard_normal(8000)).astype(np.float32)
        path = tmp_path / f"utt{i}.wav"
        sf.write(path, wav, 16000, subtype="FLOAT")
        manifest.append({"ID": f"utt{i}", "duration": 0.5, "noisy_wav": str(path),
                         "clean_wav": ""})
    with open(tmp_path / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(manifest[0]))
        writer.writeheader()
        writer.writerows(manifest)

    mp.spawn(gloo_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)

    with open(tmp_path / "results.csv", newline="") as handle:
        merged = list(csv.DictReader(handle))
    assert [row["ID"] for row in merged] == [f"utt{i}" for i in range(6)]  # no gap, no dup
    assert read_ids(tmp_path / "rank0.csv") == ["utt0", "utt1", "utt2"]
    assert read_ids(tmp_path / "rank1.csv") == ["utt3", "utt4", "utt5"]
    for row in merged:
        wav = sf.read(row["ID"].join([str(tmp_path) + "/", ".wav"]), dtype="float32")[0]
        assert float(row["value"]) == pytest.approx(float(np.sqrt(np.mean(wav ** 2))), abs=1e-6)
