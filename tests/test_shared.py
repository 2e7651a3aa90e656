"""Finding ../shared from other working directories and from a clone made elsewhere."""

import subprocess

import pytest

from speechbrain_mpol.shared import ENV_VAR, clone_origin, find_shared_folder


def test_explicit_absolute_folder_is_used_as_it_is(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert find_shared_folder(tmp_path / "missing") == str(tmp_path / "missing")


def test_environment_variable_when_the_folder_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert find_shared_folder("no/such/shared_folder") == str(tmp_path)


def test_missing_everywhere_returns_the_repository_relative_path(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    found = find_shared_folder("no/such/shared_folder")
    assert found.endswith("no/such/shared_folder")


def test_clone_origin_is_the_local_checkout_it_was_cloned_from(tmp_path):
    try:
        subprocess.run(["git", "init", "-q", str(tmp_path / "main")], check=True)
        subprocess.run(["git", "-C", str(tmp_path / "main"), "-c", "user.name=t",
                        "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x"],
                       check=True)
        subprocess.run(["git", "clone", "-q", str(tmp_path / "main"), str(tmp_path / "fresh")],
                       check=True)
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"git unavailable: {err}")
    assert clone_origin(tmp_path / "fresh") == tmp_path / "main"
    assert clone_origin(tmp_path / "main") is None  # no origin
