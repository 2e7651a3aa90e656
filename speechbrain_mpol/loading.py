"""Loading the pretrained enhancer the user asked for, and saying so when another one runs.

``model_source`` is a HuggingFace hub id (``speechbrain/metricgan-plus-voicebank``) or a local
folder with a ``hyperparams.yaml``. :func:`load_enhancer` tries, in order:

1. a local folder: as given (working directory), else relative to the repository root, so
   ``pretrained/metricgan_libri`` is found from any working directory;
2. a hub id, from files already on disk and without the network: the ``savedir`` (which
   SpeechBrain fills on first use), else the HuggingFace cache (``HF_HUB_CACHE`` / ``HF_HOME``;
   ``hf_hub_download(local_files_only=True)`` through SpeechBrain's ``FetchConfig``);
3. a hub id, from the hub, when it is reachable the way ``huggingface_hub`` would reach it:
   ``HF_HUB_OFFLINE`` honoured, ``HF_ENDPOINT`` asked (not huggingface.co), the environment's
   HTTP(S) proxies used (an HTTP request through ``huggingface_hub``'s own session, short
   timeout);
4. only then the ``fallbacks`` (local folders, resolved like 1.), unless ``strict``.

The default ``savedir`` of a hub id is derived from the id (:func:`default_savedir`), so two
ids never share one, and a ``savedir`` whose files link into another model's cache entry is
refused. Whatever ran is recorded in a :class:`LoadReport` on the enhancer
(``enhancer.load_report``; ``enhancer.model_source`` is the source that ran): the requested
model, the one used, where its files came from and, for a fallback, why the requested one
was not used. A fallback is logged as a warning; ``strict=True`` makes it an error
(:class:`ModelUnavailableError`) that names the requested model and the reason.

Example
-------
>>> from speechbrain_mpol.models.interfaces import GTCRNEnhancement
>>> enhancer = load_enhancer(GTCRNEnhancement, "pretrained/gtcrn_vctk")
>>> enhancer.load_report.origin, enhancer.load_report.fallback
('local folder', False)
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from huggingface_hub import constants, get_session, try_to_load_from_cache
from huggingface_hub.file_download import repo_folder_name

from speechbrain_mpol.shared import REPO

logger = logging.getLogger(__name__)

#: Seconds the reachability request may take (the hub client itself would retry for long).
HUB_TIMEOUT = 3.0
#: Folder under which hub ids get their derived default savedir (relative to the working
#: directory, as SpeechBrain's own ``savedir`` arguments are).
DEFAULT_SAVEDIR_ROOT = "pretrained_models"
HPARAMS_FILE = "hyperparams.yaml"
#: ``org/name``: what SpeechBrain's ``fetch`` would send to the hub when no folder matches.
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


# ----------------------------------------------------------------------------- the hub
@dataclass(frozen=True)
class Reachability:
    """Whether the hub answered, which endpoint was asked and, if not, why."""

    reachable: bool
    endpoint: str
    reason: str = ""

    def __bool__(self) -> bool:
        return self.reachable


def hub_reachability(timeout: float = HUB_TIMEOUT) -> Reachability:
    """Ask the hub endpoint ``huggingface_hub`` is configured for whether it answers.

    Offline mode (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``) counts as unreachable without
    a request. Otherwise one HEAD request goes to ``HF_ENDPOINT`` (default huggingface.co)
    through ``huggingface_hub.get_session()``, which uses the environment's HTTP(S) proxies;
    any answer below HTTP 500 counts as reachable (a proxy that cannot reach the hub answers
    502-504). Like ``huggingface_hub``, the environment is read when it is imported.

    Arguments
    ---------
    timeout : float
        Seconds before the request is given up.

    Returns
    -------
    Reachability
    """
    endpoint = constants.ENDPOINT
    if constants.is_offline_mode():
        return Reachability(False, endpoint, "offline mode (HF_HUB_OFFLINE) is set")
    try:
        response = get_session().head(f"{endpoint}/", timeout=timeout)
    except Exception as err:  # httpx connect/timeout/proxy errors, OfflineModeIsEnabled
        return Reachability(False, endpoint, _one_line(err))
    if response.status_code >= 500:
        return Reachability(False, endpoint, f"HTTP {response.status_code}")
    return Reachability(True, endpoint)


def hub_reachable(timeout: float = HUB_TIMEOUT) -> bool:
    """True if :func:`hub_reachability` gets an answer from the configured hub endpoint."""
    return hub_reachability(timeout).reachable


def in_hf_cache(repo_id: str, filename: str = HPARAMS_FILE) -> str | None:
    """Path of ``filename`` of ``repo_id`` (revision ``main``) in the HuggingFace cache, or None.

    Example
    -------
    >>> in_hf_cache("no-such-org/no-such-model") is None
    True
    """
    found = try_to_load_from_cache(repo_id, filename)
    return found if isinstance(found, str) else None


# ----------------------------------------------------------------------------- paths
def is_local(source: str | os.PathLike) -> bool:
    """True if ``source`` is an existing folder with a ``hyperparams.yaml``."""
    return (Path(source) / HPARAMS_FILE).is_file()


def local_folder(source: str | os.PathLike) -> Path | None:
    """The model folder ``source`` names: as given, else relative to the repository root.

    Example
    -------
    >>> import os
    >>> local_folder("pretrained/gtcrn_vctk") == REPO / "pretrained" / "gtcrn_vctk"
    True
    >>> local_folder("speechbrain/metricgan-plus-voicebank") is None
    True
    """
    path = Path(source)
    candidates = [path] if path.is_absolute() else [path, REPO / path]
    for candidate in candidates:
        if is_local(candidate):
            return candidate.absolute()
    return None


def source_digest(source: str | os.PathLike) -> str:
    """What a result computed with ``source`` depends on, for caches keyed by it.

    For a local model folder: its path and a digest of its ``hyperparams.yaml`` and weight
    files (``*.ckpt``), because one path can hold retrained weights (a model card edit keeps
    the digest). Otherwise (a hub id) the source as given.

    Arguments
    ---------
    source : str or path
        A ``model_source``: a local folder or a hub id.

    Returns
    -------
    str
        ``"<source>@<16 hex digits>"`` for a local folder, else ``str(source)``.

    Example
    -------
    >>> source_digest("pretrained/gtcrn_vctk").startswith("pretrained/gtcrn_vctk@")
    True
    >>> source_digest("speechbrain/metricgan-plus-voicebank")
    'speechbrain/metricgan-plus-voicebank'
    """
    folder = local_folder(source)
    if folder is None:
        return str(source)
    digest = hashlib.sha256()
    for path in [folder / HPARAMS_FILE, *sorted(folder.glob("*.ckpt"))]:
        with open(path, "rb") as handle:
            digest.update(path.name.encode() + hashlib.file_digest(handle, "sha256").digest())
    return f"{source}@{digest.hexdigest()[:16]}"


def is_hub_id(source: str) -> bool:
    """True if ``source`` has the ``org/name`` form of a hub id.

    Example
    -------
    >>> is_hub_id("speechbrain/sepformer-wham16k-enhancement"), is_hub_id("/abs/folder")
    (True, False)
    """
    return bool(_HUB_ID.match(str(source)))


def default_savedir(source: str | os.PathLike, root: str = DEFAULT_SAVEDIR_ROOT) -> str:
    """Where the files of ``source`` are kept when no ``savedir`` is given.

    A local folder is read in place (its own path). A hub id gets ``<root>/<org>--<name>``:
    one folder per id, so ``--model_source`` can never pick up another model's files.

    Example
    -------
    >>> default_savedir("speechbrain/sepformer-wham-enhancement")
    'pretrained_models/speechbrain--sepformer-wham-enhancement'
    >>> default_savedir("speechbrain/sepformer-wham16k-enhancement")
    'pretrained_models/speechbrain--sepformer-wham16k-enhancement'
    """
    folder = local_folder(source)
    if folder is not None:
        return str(folder)
    return str(Path(root) / str(source).strip("/").replace("/", "--"))


def savedir_conflict(savedir: str | os.PathLike, source: str | os.PathLike) -> str | None:
    """Why the files already in ``savedir`` are not those of ``source``, or None.

    SpeechBrain uses any file already present in ``savedir`` instead of fetching it, so a
    savedir filled for one model and reused for another silently loads the first one. For a
    hub id, the files are links into the HuggingFace cache entry ``models--<org>--<name>``; for
    a local folder, links to (or copies of) its files.

    Example
    -------
    >>> savedir_conflict("/nonexistent/savedir", "speechbrain/metricgan-plus-voicebank") is None
    True
    """
    hparams = Path(savedir) / HPARAMS_FILE
    if not hparams.is_file():
        return None
    folder = local_folder(source)
    if folder is not None:
        own = folder / HPARAMS_FILE
        if os.path.realpath(hparams) == os.path.realpath(own):
            return None
        if hparams.read_bytes() == own.read_bytes():
            return None
        return f"savedir {savedir} holds another model's {HPARAMS_FILE} than {folder}"
    if not hparams.is_symlink():
        return None  # a copied hub model cannot be told apart; SpeechBrain uses it as it is
    entries = [part for part in Path(os.path.realpath(hparams)).parts
               if part.startswith("models--")]
    if not entries or entries[-1] == repo_folder_name(repo_id=str(source), repo_type="model"):
        return None
    other = entries[-1].removeprefix("models--").replace("--", "/")
    return f"savedir {savedir} holds the files of {other}, not {source}"


# ----------------------------------------------------------------------------- the report
@dataclass
class LoadReport:
    """Which model was requested, which one runs, where its files came from, and why.

    ``origin`` is ``"local folder"``, ``"savedir"``, ``"HF cache"`` or ``"hub"`` for the
    requested model, ``"fallback"`` for an ``offline_sources`` folder. ``reason`` says why the
    requested model is not the one that runs (empty otherwise); ``tried`` lists every source
    that was tried and failed, with its reason.
    """

    requested: str
    used: str
    origin: str
    used_path: str = ""
    savedir: str = ""
    reason: str = ""
    tried: list[str] = field(default_factory=list)

    @property
    def fallback(self) -> bool:
        """True when a fallback runs instead of the requested model."""
        return self.origin == "fallback"

    def headline(self) -> str:
        """One line for the results table and the log's last lines.

        Example
        -------
        >>> LoadReport("org/model", "pretrained/x", "fallback", reason="hub unreachable").headline()
        'model: pretrained/x: FALLBACK, requested org/model not used: hub unreachable'
        >>> LoadReport("org/model", "org/model", "HF cache").headline()
        'model: org/model (HF cache)'
        """
        if self.fallback:
            return (f"model: {self.used}: FALLBACK, requested {self.requested} not used: "
                    f"{self.reason}")
        return f"model: {self.used} ({self.origin})"

    def as_dict(self) -> dict:
        """JSON-ready fields for ``summary.json``, with ``fallback`` and ``headline``."""
        return {**asdict(self), "fallback": self.fallback, "headline": self.headline()}


class ModelUnavailableError(FileNotFoundError):
    """The requested model could not be loaded (and no fallback was allowed or usable).

    A ``FileNotFoundError``, so callers that report missing inputs in one line report this too.
    """


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


# ----------------------------------------------------------------------------- loading
def _from_hparams(interface: type, source: str, savedir: str, run_opts: dict,
                  network: bool = True):
    from speechbrain.utils.fetching import FetchConfig

    kwargs = {} if network else {"fetch_config": FetchConfig(allow_network=False)}
    return interface.from_hparams(source=source, savedir=savedir, run_opts=run_opts, **kwargs)


def _load_requested(interface: type, source: str, savedir: str | None, run_opts: dict,
                    timeout: float) -> tuple[object | None, str, str, str]:
    """Try the requested source; returns (enhancer or None, origin, savedir, reason)."""
    folder = local_folder(source)
    if folder is not None:
        target = str(savedir) if savedir else str(folder)
        if (conflict := savedir_conflict(target, source)) is not None:
            return None, "", target, conflict + "; give another savedir"
        try:
            return _from_hparams(interface, str(folder), target, run_opts), "local folder", \
                target, ""
        except Exception as err:  # a broken folder: bad YAML, missing or corrupt checkpoint
            return None, "", target, f"local folder {folder} failed: {_one_line(err)}"
    if not is_hub_id(source):
        return None, "", "", (f"no folder with {HPARAMS_FILE} at {source} (looked in the "
                               f"working directory and in {REPO}) and not a hub id")
    savedir = str(savedir) if savedir else default_savedir(source)
    if (conflict := savedir_conflict(savedir, source)) is not None:
        return None, "", savedir, conflict + "; give another savedir"
    problems = []
    on_disk = "savedir" if is_local(savedir) else "HF cache" if in_hf_cache(source) else ""
    if on_disk:
        try:  # SpeechBrain would use these files anyway; without the network it is instant
            return _from_hparams(interface, source, savedir, run_opts, network=False), \
                on_disk, savedir, ""
        except Exception as err:  # incomplete files: the hub may still complete them
            problems.append(f"files in the {on_disk} incomplete ({_one_line(err)})")
    else:
        problems.append(f"not in savedir {savedir} nor in the HF cache {constants.HF_HUB_CACHE}")
    reach = hub_reachability(timeout)
    if not reach:
        return None, "", savedir, (f"hub {reach.endpoint} unreachable ({reach.reason}); "
                                   + "; ".join(problems))
    try:
        return _from_hparams(interface, source, savedir, run_opts), "hub", savedir, ""
    except Exception as err:  # unknown id, private repo, interrupted download
        problems.append(f"download from {reach.endpoint} failed: {_one_line(err)}")
        return None, "", savedir, "; ".join(problems)


def load_enhancer(
    interface: type,
    source: str,
    savedir: str | os.PathLike | None = None,
    fallbacks: Sequence[str | os.PathLike | None] = (),
    run_opts: dict | None = None,
    *,
    strict: bool = False,
    timeout: float = HUB_TIMEOUT,
):
    """Load ``interface.from_hparams`` from ``source``, else (unless ``strict``) a fallback.

    See the module docstring for the order. The returned enhancer carries
    ``enhancer.load_report`` (:class:`LoadReport`) and ``enhancer.model_source`` (the source
    that ran, as configured).

    Arguments
    ---------
    interface : type
        A ``speechbrain.inference.interfaces.Pretrained`` subclass, e.g.
        ``SpectralMaskEnhancement``.
    source : str
        HuggingFace hub id (``speechbrain/metricgan-plus-voicebank``) or a local folder
        (relative: to the working directory, else to the repository root).
    savedir : str or PathLike, optional
        Where SpeechBrain keeps (or finds) the files of a hub id; by default
        :func:`default_savedir` of ``source``. A local folder is read in place unless a
        savedir is given.
    fallbacks : sequence of str
        Local folders tried in order when ``source`` cannot be loaded (missing ones skipped).
    run_opts : dict, optional
        Forwarded to ``from_hparams`` (``{"device": "cuda"}``).
    strict : bool
        Raise instead of falling back.
    timeout : float
        Seconds for the hub reachability request.

    Returns
    -------
    Pretrained
        The loaded enhancer (in eval mode, parameters frozen, as SpeechBrain leaves it).

    Raises
    ------
    ModelUnavailableError
        Under ``strict`` when ``source`` cannot be loaded, naming it and the reason; otherwise
        when neither it nor any fallback can be loaded, listing every attempt.
    """
    run_opts = run_opts or {}
    source = str(source)
    enhancer, origin, used_savedir, reason = _load_requested(
        interface, source, savedir, run_opts, timeout)
    if enhancer is not None:
        report = LoadReport(source, source, origin, used_path=str(local_folder(source) or ""),
                            savedir=used_savedir)
        return _record(enhancer, report)
    tried = [f"{source} (requested): {reason}"]
    if strict:
        raise ModelUnavailableError(
            f"requested model {source} could not be loaded: {reason} (strict: no fallback)")
    logger.warning("requested model %s could not be loaded: %s", source, reason)
    for candidate in fallbacks:
        if candidate is None:
            continue
        folder = local_folder(candidate)
        if folder is None:
            tried.append(f"{candidate} (fallback): no folder with {HPARAMS_FILE} there")
            continue
        try:
            enhancer = _from_hparams(interface, str(folder), str(folder), run_opts)
        except Exception as err:  # a broken fallback folder: try the next one
            tried.append(f"{candidate} (fallback): {_one_line(err)}")
            continue
        report = LoadReport(source, str(candidate), "fallback", used_path=str(folder),
                            savedir=str(folder), reason=reason, tried=tried)
        logger.warning("MODEL FALLBACK: %s runs instead of the requested %s (%s). Results are "
                       "this model's; pass strict=True (--strict_model=True) to stop instead.",
                       candidate, source, reason)
        return _record(enhancer, report)
    raise ModelUnavailableError(
        "No pretrained enhancer could be loaded. Tried:\n  - " + "\n  - ".join(tried)
        + "\nPut the hub files in the savedir or the HF cache, point model_source at a local "
        "folder, or train the project's source model (see README, 'Source models')."
    )


def _record(enhancer, report: LoadReport):
    enhancer.load_report = report
    enhancer.model_source = report.used
    return enhancer
