"""Where the shared material lives: real audio and third-party weights, never in the repository.

The project reads real recordings and published weights from a ``shared`` folder beside the
checkout (``../shared``). :func:`find_shared_folder` resolves that path the same way for every
recipe, benchmark and test, so that it also works from another working directory, from a clone
made elsewhere (``git clone /work/main /tmp/fresh``: the folder beside the checkout it was
cloned from is used), or wherever ``$MPOL_SHARED_FOLDER`` points.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

#: The repository root (the checkout this package is imported from).
REPO = Path(__file__).resolve().parents[1]
#: Environment variable naming the shared folder when it is not beside the checkout.
ENV_VAR = "MPOL_SHARED_FOLDER"
DEFAULT = "../shared"


def clone_origin(repo: Path = REPO) -> Path | None:
    """The local checkout ``repo`` was cloned from, if its ``origin`` is a local folder."""
    try:
        url = subprocess.run(
            ["git", "-C", str(repo), "config", "--get", "remote.origin.url"],
            capture_output=True, text=True, timeout=5, check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    path = Path(url.removeprefix("file://")) if url else None
    return path if path is not None and path.is_absolute() and path.is_dir() else None


def find_shared_folder(folder: str | os.PathLike = DEFAULT) -> str:
    """Resolve the configured shared folder to an absolute path.

    An absolute ``folder`` is used as it is. A relative one becomes the first that exists of:
    ``folder`` relative to the working directory, relative to the repository root,
    ``$MPOL_SHARED_FOLDER``, and ``folder`` relative to the local checkout this one was cloned
    from. If none exists, the repository-relative path is returned, so that the error that
    follows names where the material was expected.

    Arguments
    ---------
    folder : str or PathLike
        The configured shared folder (default ``../shared``).

    Returns
    -------
    str
        An absolute path.

    Example
    -------
    >>> import tempfile
    >>> here = tempfile.mkdtemp()
    >>> find_shared_folder(here) == str(Path(here).resolve())
    True
    """
    folder = Path(folder)
    if folder.is_absolute():  # an explicit location is used as it is, even when missing
        return str(folder)
    candidates = [folder, REPO / folder]
    if os.environ.get(ENV_VAR):
        candidates.append(Path(os.environ[ENV_VAR]))
    if (origin := clone_origin()) is not None:
        candidates.append(origin / folder)
    for candidate in candidates:
        if candidate.is_dir():
            return str(candidate.resolve())
    return str((REPO / folder).resolve())
