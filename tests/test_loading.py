"""Model loading a user can trust: hub reachability as huggingface_hub sees it, the HF cache,
fallbacks found from any working directory, savedirs per model, loud or strict fallbacks.

``huggingface_hub`` reads ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``, ``HF_HUB_CACHE`` and the proxy
variables when it is imported, so the tests that set them run a fresh Python process with that
environment, against a real HTTP server on 127.0.0.1 or a closed port. Models are the real
project models, loaded by SpeechBrain's own ``from_hparams``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from speechbrain_mpol.loading import (
    LoadReport,
    ModelUnavailableError,
    default_savedir,
    load_enhancer,
    local_folder,
    savedir_conflict,
    source_digest,
)

from .conftest import EXAMPLES, REPO

METRICGAN = REPO / "pretrained" / "metricgan_libri"
CACHED_ID = "mpol-test/metricgan-cached"


# ----------------------------------------------------------------------------- helpers
class _Recorder(BaseHTTPRequestHandler):
    """Answers every request with the server's ``status`` and records it."""

    def _answer(self):
        self.server.requests.append((self.command, self.path))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET = _answer

    def log_message(self, *args):  # keep pytest's output clean
        pass


@pytest.fixture
def http_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.requests, server.status = [], 200
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run(code: str, env: dict[str, str], cwd: Path | None = None, *args: str) -> dict:
    """Run ``code`` in a fresh interpreter with a clean hub/proxy environment plus ``env``."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))
             and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    clean.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **env)
    done = subprocess.run([sys.executable, "-c", code, *args], env=clean, cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


REACH = ("import json; from speechbrain_mpol.loading import hub_reachability; "
         "r = hub_reachability(2.0); print(json.dumps([r.reachable, r.endpoint, r.reason]))")


def _hf_cache_with(folder: Path, cache: Path, repo_id: str) -> None:
    """Lay ``folder``'s files out as huggingface_hub caches a downloaded revision."""
    entry = cache / ("models--" + repo_id.replace("/", "--"))
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = entry / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for name in ("hyperparams.yaml", "enhance_model.ckpt"):
        shutil.copyfile(folder / name, snapshot / name)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(revision)


# ----------------------------------------------------------------------------- reachability
def test_offline_mode_is_unreachable_without_a_request(http_server):
    endpoint = f"http://127.0.0.1:{http_server.server_port}"
    reachable, asked, reason = _run(REACH, {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": endpoint})
    assert not reachable and asked == endpoint and "HF_HUB_OFFLINE" in reason
    assert http_server.requests == []


def test_hf_endpoint_is_the_host_asked(http_server):
    endpoint = f"http://127.0.0.1:{http_server.server_port}"
    assert _run(REACH, {"HF_ENDPOINT": endpoint}) == [True, endpoint, ""]
    assert http_server.requests == [("HEAD", "/")]


def test_hf_endpoint_on_a_closed_port_is_unreachable():
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    reachable, asked, reason = _run(REACH, {"HF_ENDPOINT": endpoint})
    assert not reachable and asked == endpoint and "Connect" in reason


def test_an_endpoint_answering_503_is_unreachable(http_server):
    http_server.status = 503  # what a proxy answers when it cannot reach the hub
    reachable, _, reason = _run(REACH, {"HF_ENDPOINT": f"http://127.0.0.1:"
                                                     f"{http_server.server_port}"})
    assert not reachable and reason == "HTTP 503"


def test_proxy_from_the_environment_is_used(http_server):
    """The request goes through $HTTP_PROXY, as huggingface_hub's own requests would."""
    proxy = f"http://127.0.0.1:{http_server.server_port}"
    reachable, asked, _ = _run(REACH, {"HF_ENDPOINT": "http://hub.mpol-test.invalid",
                                       "HTTP_PROXY": proxy})
    assert reachable and asked == "http://hub.mpol-test.invalid"
    assert http_server.requests == [("HEAD", "http://hub.mpol-test.invalid/")]


# ----------------------------------------------------------------------------- the HF cache
CACHED_LOAD = f"""
import json, sys
import soundfile as sf, torch
from speechbrain.inference.enhancement import SpectralMaskEnhancement
from speechbrain_mpol.loading import load_enhancer
torch.set_num_threads(1)
enhancer = load_enhancer(SpectralMaskEnhancement, "{CACHED_ID}", strict=True)
direct = SpectralMaskEnhancement.from_hparams(source=sys.argv[1], savedir=sys.argv[1])
noisy = torch.from_numpy(sf.read(sys.argv[2], dtype="float32")[0])[None]
with torch.no_grad():
    same = torch.equal(enhancer.enhance_batch(noisy, torch.ones(1)),
                       direct.enhance_batch(noisy, torch.ones(1)))
print(json.dumps({{**enhancer.load_report.as_dict(), "same_output": same}}))
"""


def test_cached_hub_model_loads_with_the_network_down_and_savedir_empty(tmp_path):
    _hf_cache_with(METRICGAN, tmp_path / "hub", CACHED_ID)
    run = tmp_path / "run"
    run.mkdir()
    noisy = sorted((EXAMPLES / "noisy").glob("*.flac"))[0]
    report = _run(CACHED_LOAD, {"HF_HUB_CACHE": str(tmp_path / "hub"),
                                "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"},
                  run, str(METRICGAN), str(noisy))
    assert report["origin"] == "HF cache" and not report["fallback"]
    assert report["requested"] == report["used"] == CACHED_ID
    assert report["same_output"]  # the cached weights are the ones that ran
    # The savedir was derived from the id and now links into the cache.
    assert report["savedir"] == "pretrained_models/mpol-test--metricgan-cached"
    linked = run / report["savedir"] / "hyperparams.yaml"
    assert linked.is_symlink() and str(tmp_path / "hub") in os.path.realpath(linked)


UNCACHED_LOAD = """
import json, sys, logging
from speechbrain.inference.enhancement import SpectralMaskEnhancement
from speechbrain_mpol.loading import ModelUnavailableError, load_enhancer
logging.basicConfig(level=logging.WARNING)
out = {}
try:
    load_enhancer(SpectralMaskEnhancement, "speechbrain/metricgan-plus-voicebank", strict=True)
except ModelUnavailableError as err:
    out["strict_error"] = str(err)
enhancer = load_enhancer(SpectralMaskEnhancement, "speechbrain/metricgan-plus-voicebank",
                         fallbacks=["/no/such/folder", "pretrained/metricgan_libri"])
out.update(enhancer.load_report.as_dict(), model_source=enhancer.model_source)
print(json.dumps(out))
"""


@pytest.mark.parametrize("network", ["offline", "closed_endpoint"])
def test_unavailable_hub_model_falls_back_loudly_or_fails_under_strict(tmp_path, network):
    env = {"HF_HUB_CACHE": str(tmp_path / "empty_hub")}
    if network == "offline":
        env["HF_HUB_OFFLINE"] = "1"
    else:
        env["HF_ENDPOINT"] = f"http://127.0.0.1:{_closed_port()}"
    out = _run(UNCACHED_LOAD, env, tmp_path)  # run from elsewhere: the fallback is repo-relative
    why = "HF_HUB_OFFLINE" if network == "offline" else "unreachable"
    assert "speechbrain/metricgan-plus-voicebank" in out["strict_error"]
    assert why in out["strict_error"] and "strict" in out["strict_error"]
    assert out["fallback"] and out["origin"] == "fallback"
    assert out["requested"] == "speechbrain/metricgan-plus-voicebank"
    assert out["used"] == out["model_source"] == "pretrained/metricgan_libri"
    assert out["used_path"] == str(METRICGAN)
    assert why in out["reason"] and "nor in the HF cache" in out["reason"]
    assert out["headline"].startswith("model: pretrained/metricgan_libri: FALLBACK, "
                                      "requested speechbrain/metricgan-plus-voicebank not used")
    assert any("/no/such/folder" in t for t in out["tried"])


# ----------------------------------------------------------------------------- in process
def _broken_copy(tmp_path: Path) -> Path:
    broken = tmp_path / "broken_model"
    shutil.copytree(METRICGAN, broken)
    ckpt = broken / "enhance_model.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # a truncated download
    return broken


def test_failing_requested_model_is_reported(tmp_path, caplog):
    from speechbrain.inference.enhancement import SpectralMaskEnhancement

    broken = _broken_copy(tmp_path)
    with caplog.at_level(logging.WARNING, logger="speechbrain_mpol.loading"):
        enhancer = load_enhancer(SpectralMaskEnhancement, str(broken),
                                 fallbacks=["pretrained/metricgan_libri"])
    report = enhancer.load_report
    assert report.fallback and report.requested == str(broken)
    assert enhancer.model_source == report.used == "pretrained/metricgan_libri"
    assert f"local folder {broken} failed" in report.reason
    assert "MODEL FALLBACK" in caplog.text and str(broken) in caplog.text
    json.dumps(report.as_dict())  # ready for summary.json
    assert report.headline().startswith("model: pretrained/metricgan_libri: FALLBACK")


def test_failing_requested_model_is_an_error_under_strict(tmp_path):
    from speechbrain.inference.enhancement import SpectralMaskEnhancement

    broken = _broken_copy(tmp_path)
    with pytest.raises(ModelUnavailableError, match=f"requested model {broken} could not be "
                                                    "loaded: local folder .* failed"):
        load_enhancer(SpectralMaskEnhancement, str(broken),
                      fallbacks=["pretrained/metricgan_libri"], strict=True)


def test_nothing_loadable_lists_every_attempt(tmp_path):
    from speechbrain.inference.enhancement import SpectralMaskEnhancement

    with pytest.raises(ModelUnavailableError, match="No pretrained enhancer could be loaded") \
            as caught:
        load_enhancer(SpectralMaskEnhancement, str(_broken_copy(tmp_path)),
                      fallbacks=[str(tmp_path / "none")])
    assert "(requested)" in str(caught.value) and "(fallback)" in str(caught.value)


def test_fallback_and_source_are_found_from_another_working_directory(tmp_path, monkeypatch):
    from speechbrain.inference.enhancement import SpectralMaskEnhancement

    monkeypatch.chdir(tmp_path)
    enhancer = load_enhancer(SpectralMaskEnhancement, str(tmp_path / "no_model_here"),
                             fallbacks=["pretrained/metricgan_libri"])
    assert enhancer.load_report.fallback
    assert enhancer.load_report.used_path == str(METRICGAN)
    direct = load_enhancer(SpectralMaskEnhancement, "pretrained/metricgan_libri")
    assert direct.load_report.origin == "local folder" and not direct.load_report.fallback
    assert list(tmp_path.iterdir()) == []  # a local folder is read in place


def test_savedir_follows_model_source(tmp_path):
    ids = ["speechbrain/sepformer-wham-enhancement", "speechbrain/sepformer-wham16k-enhancement",
           "other/sepformer-wham-enhancement"]
    savedirs = [default_savedir(i) for i in ids]
    assert len(set(savedirs)) == 3
    assert all(s.startswith("pretrained_models/") for s in savedirs)
    assert default_savedir("pretrained/metricgan_libri") == str(METRICGAN)
    assert local_folder("pretrained/metricgan_libri") == METRICGAN
    # A savedir SpeechBrain filled for the 16 kHz model is not used for the 8 kHz one.
    snapshot = tmp_path / "hub" / "models--speechbrain--sepformer-wham16k-enhancement" / "s"
    snapshot.mkdir(parents=True)
    (snapshot / "hyperparams.yaml").write_text("sample_rate: 16000\n")
    savedir = tmp_path / "savedir"
    savedir.mkdir()
    (savedir / "hyperparams.yaml").symlink_to(snapshot / "hyperparams.yaml")
    assert savedir_conflict(savedir, ids[1]) is None
    assert "holds the files of speechbrain/sepformer-wham16k-enhancement" in \
        savedir_conflict(savedir, ids[0])
    # The same for a local folder whose savedir holds another model's files.
    assert "another model" in savedir_conflict(savedir, "pretrained/metricgan_libri")


def test_source_digest_follows_the_weights_not_the_card(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(REPO / "pretrained" / "sepformer_libri", folder)
    first = source_digest(folder)
    assert first.startswith(f"{folder}@")
    (folder / "README.md").write_text("an edited model card\n")
    assert source_digest(folder) == first
    # retrained weights at the same path: one byte of one of the three checkpoints
    weights = bytearray((folder / "decoder.ckpt").read_bytes())
    weights[-1] ^= 1
    (folder / "decoder.ckpt").write_bytes(bytes(weights))
    assert source_digest(folder) != first
    assert source_digest("speechbrain/sepformer-wham16k-enhancement") == \
        "speechbrain/sepformer-wham16k-enhancement"


def test_savedir_of_another_model_is_not_loaded(tmp_path):
    from speechbrain.inference.enhancement import SpectralMaskEnhancement

    savedir = tmp_path / "savedir"
    shutil.copytree(REPO / "pretrained" / "sepformer_libri", savedir)
    with pytest.raises(ModelUnavailableError, match="holds another model"):
        load_enhancer(SpectralMaskEnhancement, "pretrained/metricgan_libri", savedir,
                      strict=True)


def test_report_headline_names_origin():
    assert LoadReport("a/b", "a/b", "hub").headline() == "model: a/b (hub)"
