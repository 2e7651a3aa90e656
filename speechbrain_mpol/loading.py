"""Loading a pretrained SpeechBrain enhancer by hub id or local folder, with offline fallbacks.

``from_hparams(source=<hub id>, savedir=<folder>)`` downloads on first use and afterwards uses
the files already in ``savedir``; a local folder works as ``source`` too. When the hub cannot
be reached and ``savedir`` is empty, the next candidate in ``fallbacks`` that exists on disk
is used instead, and the log says which one.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

#: Host and timeout of the quick check that spares offline users the hub client's retries.
HUB_HOST, HUB_TIMEOUT = "huggingface.co", 3.0


def hub_reachable(host: str = HUB_HOST, timeout: float = HUB_TIMEOUT) -> bool:
    """True if a TCP connection to the HuggingFace hub opens within ``timeout`` seconds.

    ``HF_HUB_OFFLINE=1`` counts as unreachable without trying.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def is_local(source: str | os.PathLike) -> bool:
    """True if ``source`` is an existing folder with a ``hyperparams.yaml``."""
    return (Path(source) / "hyperparams.yaml").is_file()


def load_enhancer(
    interface: type,
    source: str,
    savedir: str | os.PathLike,
    fallbacks: Sequence[str] = (),
    run_opts: dict | None = None,
):
    """Load ``interface.from_hparams`` from ``source``, else from the first usable fallback.

    Arguments
    ---------
    interface : type
        A ``speechbrain.inference.interfaces.Pretrained`` subclass, e.g.
        ``SpectralMaskEnhancement``.
    source : str
        HuggingFace hub id (``speechbrain/metricgan-plus-voicebank``) or a local folder.
    savedir : str or PathLike
        Where SpeechBrain keeps (or finds) the model files of a hub id.
    fallbacks : sequence of str
        Local folders tried in order when ``source`` cannot be loaded (e.g. offline).
    run_opts : dict, optional
        Forwarded to ``from_hparams`` (``{"device": "cuda"}``).

    Returns
    -------
    Pretrained
        The loaded enhancer (in eval mode, parameters frozen, as SpeechBrain leaves it).
    """
    run_opts = run_opts or {}
    tried = []
    for candidate in [source, *fallbacks]:
        if candidate is None:
            continue
        candidate = str(candidate)
        local = is_local(candidate)
        if candidate != source and not local:
            tried.append(f"{candidate} (no hyperparams.yaml there)")
            continue
        target = candidate if local else savedir
        if not local and not is_local(savedir) and not hub_reachable():
            # SpeechBrain would retry the hub for ~20 s before failing; say it at once.
            tried.append(f"{candidate} (hub unreachable and nothing in savedir {savedir})")
            logger.warning("hub unreachable; %s not in %s", candidate, savedir)
            continue
        try:
            enhancer = interface.from_hparams(
                source=candidate, savedir=str(target), run_opts=run_opts
            )
        except Exception as err:  # offline hub, missing files, bad checkpoint
            tried.append(f"{candidate} ({type(err).__name__}: {str(err).splitlines()[0][:200]})")
            logger.warning("could not load %s: %s", candidate, tried[-1])
            continue
        if candidate != source:
            logger.warning("using the offline fallback model %s instead of %s", candidate, source)
        enhancer.model_source = candidate
        return enhancer
    raise FileNotFoundError(
        "No pretrained enhancer could be loaded. Tried:\n  - "
        + "\n  - ".join(tried)
        + "\nPut the hub files in the savedir, point model_source at a local folder, or "
        "train the project's source model (see README, 'Source models')."
    )
