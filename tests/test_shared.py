"""Finding ../shared from other working directories, via $MPOL_SHARED_FOLDER, and not at all."""

import subprocess
import sys

from speechbrain_mpol.shared import ENV_VAR, REPO, find_shared_folder, shared_folder_present


def test_explicit_absolute_folder_is_used_as_it_is(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert find_shared_folder(tmp_path / "missing") == str(tmp_path / "missing")


def test_environment_variable_when_the_folder_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert find_shared_folder("no/such/shared_folder") == str(tmp_path)
    assert shared_folder_present("no/such/shared_folder")


def test_missing_everywhere_returns_the_repository_relative_path(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    found = find_shared_folder("no/such/shared_folder")
    assert found == str((REPO / "no/such/shared_folder").resolve())
    assert not shared_folder_present("no/such/shared_folder")


def test_repository_relative_from_another_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)  # where no "tests" folder exists
    assert find_shared_folder("tests") == str(REPO / "tests")


def test_a_local_clone_does_not_borrow_the_shared_folder_of_its_origin(tmp_path):
    """A clone made elsewhere behaves like a clone from the public repository."""
    origin, clone = tmp_path / "work" / "main", tmp_path / "elsewhere" / "clone"
    (tmp_path / "work" / "shared").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(origin)], check=True)
    subprocess.run(["git", "-C", str(origin), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
    package = clone / "speechbrain_mpol"
    package.mkdir()
    (package / "shared.py").write_bytes((REPO / "speechbrain_mpol" / "shared.py").read_bytes())
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import shared; "
             "print(shared.find_shared_folder())")
    env = {"PATH": "/usr/bin:/bin"}  # no MPOL_SHARED_FOLDER
    found = subprocess.run([sys.executable, "-c", probe, str(package)], cwd=clone, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert found == str(tmp_path / "elsewhere" / "shared")  # where it was expected, absent
