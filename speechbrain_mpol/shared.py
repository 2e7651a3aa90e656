"""Where the shared material lives: real audio and third-party weights, never in the repository.

The project reads its larger real material (the corpus, more audio, published weights that
are not committed) from a ``shared`` folder beside the checkout (``../shared``).
:func:`find_shared_folder` resolves that path the same way for every recipe, benchmark and
test, so that it also works from another working directory, or wherever
``$MPOL_SHARED_FOLDER`` points. A clone with neither (a clone from the public repository)
has no shared folder: the committed example set and weights are used, and the tests that
need more skip, naming what is missing. A local clone made elsewhere does not borrow the
shared folder of the checkout it was cloned from (that would make a "fresh clone" check
silently use it); point ``$MPOL_SHARED_FOLDER`` at it instead.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The repository root (the checkout this package is imported from).
REPO = Path(__file__).resolve().parents[1]
#: Environment variable naming the shared folder when it is not beside the checkout.
ENV_VAR = "MPOL_SHARED_FOLDER"
DEFAULT = "../shared"


def find_shared_folder(folder: str | os.PathLike = DEFAULT) -> str:
    """Resolve the configured shared folder to an absolute path.

    An absolute ``folder`` is used as it is. A relative one becomes the first that exists of:
    ``folder`` relative to the working directory, relative to the repository root, and
    ``$MPOL_SHARED_FOLDER``. If none exists, the repository-relative path is returned, so that
    the error or skip that follows names where the material was expected.

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
    for candidate in candidates:
        if candidate.is_dir():
            return str(candidate.resolve())
    return str((REPO / folder).resolve())


def shared_folder_present(folder: str | os.PathLike = DEFAULT) -> bool:
    """True when :func:`find_shared_folder` finds an existing folder (the CI situation)."""
    return Path(find_shared_folder(folder)).is_dir()
