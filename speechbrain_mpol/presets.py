"""Model and method presets: the one place where each model's and each method's settings live.

``hparams/models/<model>.yaml`` holds everything about one model (how to load it, its mask hook,
the weights MPol adapts, its per-method options chosen on the dev split);
``hparams/methods/<method>.yaml`` holds one method's options and builds its adapter. The main
run, the benchmark, the sweep, the speed and soak benchmarks, the tests and
:class:`~speechbrain_mpol.enhancer.MPolEnhancer` all read them through this module, so a
setting is written once.

A preset may name a ``base`` preset of the same kind and override some of its keys (the
project's own MetricGAN+ is SpeechBrain's MetricGAN+ with another ``model_source``). A method's
options are, from weakest to strongest: its root file, then for each file of its ``base`` chain
(root first) that file's options and the model preset's ``method_options[<that method>]``, then
the caller's overrides. Method options are hyperpyyaml overrides,
so an unknown option is an error, never silently ignored.

Example
-------
>>> model = load_model_preset("gtcrn_vctk")
>>> model["hook_modules"], model["adapted_params"][0]
(['enhance_model.mask'], 'bn\\\\d?\\\\.')
>>> method = load_method("mpol_default", model)
>>> method["reference"], method["mode"], method["rollback_threshold"]
('noisy_wiener', 'continual', 0.5)
"""

from __future__ import annotations

import os
from pathlib import Path

import ruamel.yaml
from hyperpyyaml import load_hyperpyyaml
from torch import nn

from speechbrain_mpol.hooks import MaskHook, attach_hook

#: The repository's hparams folder, where the ``models/`` and ``methods/`` presets are.
HPARAMS = Path(__file__).resolve().parents[1] / "hparams"


def load_run_hparams(argv: list[str]) -> tuple[dict, dict]:
    """Parse a recipe's command line the SpeechBrain way and load its YAML with the overrides;
    sets the torch thread count to the YAML's ``num_threads`` (if any).

    Arguments
    ---------
    argv : list of str
        ``[hparams_file, --key=value, ...]``.

    Returns
    -------
    tuple of (dict, dict)
        The loaded hyperparameters and SpeechBrain's run options.
    """
    import speechbrain as sb
    import torch

    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    with open(hparams_file) as handle:
        hparams = load_hyperpyyaml(handle, overrides)
    if "num_threads" in hparams:
        torch.set_num_threads(hparams["num_threads"])
    return hparams, run_opts


def preset_file(kind: str, name: str | os.PathLike, folder: str | os.PathLike = HPARAMS) -> Path:
    """The YAML file of preset ``name`` of ``kind`` (``models`` or ``methods``).

    ``name`` is a preset name (``gtcrn_vctk``) or a path to a YAML file.
    """
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        return path
    path = Path(folder) / kind / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (Path(folder) / kind).glob("*.yaml"))
        raise ValueError(f"unknown {kind[:-1]} preset {str(name)!r}; known: {', '.join(known)}")
    return path


def top_level_keys(path: str | os.PathLike) -> list[str]:
    """The top-level keys of a YAML file, read without building any object."""
    with open(path) as handle:
        return list(ruamel.yaml.YAML().load(handle) or {})


def _load(path: Path, overrides: dict) -> dict:
    """Load a hyperpyyaml preset with overrides of its top-level keys (unknown ones raise)."""
    keys = top_level_keys(path)
    unknown = sorted(set(overrides) - set(keys))
    if unknown:
        raise ValueError(f"{path}: unknown option(s) {', '.join(unknown)}; options: "
                         f"{', '.join(k for k in keys if k != 'adapter')}")
    with open(path) as handle:
        return load_hyperpyyaml(handle, overrides)


def merged_method_options(base: dict, own: dict) -> dict:
    """A preset's ``method_options`` on top of its base's, method by method.

    Example
    -------
    >>> merged_method_options({"mpol_default": {"lr": 0.001}},
    ...                       {"mpol_gated": {"gate_threshold": 0.2}})
    {'mpol_default': {'lr': 0.001}, 'mpol_gated': {'gate_threshold': 0.2}}
    >>> merged_method_options({"mpol_default": {"lr": 0.001, "mode": "continual"}},
    ...                       {"mpol_default": {"lr": 0.002}})
    {'mpol_default': {'lr': 0.002, 'mode': 'continual'}}
    """
    merged = {method: dict(options) for method, options in base.items()}
    for method, options in own.items():
        merged.setdefault(method, {}).update(options)
    return merged


def load_model_preset(
    name: str | os.PathLike,
    shared_folder: str | os.PathLike | None = None,
    folder: str | os.PathLike = HPARAMS,
    **overrides,
) -> dict:
    """Load model preset ``name`` (with its ``base`` presets), applying ``overrides``.

    Arguments
    ---------
    name : str or PathLike
        A preset name (``hparams/models/<name>.yaml``) or a YAML file.
    shared_folder : str or PathLike, optional
        The run's shared folder, for presets whose offline sources live there.
    folder : str or PathLike
        The hparams folder holding ``models/``.
    **overrides
        Keys replaced after loading (``model_source=...``); None values are ignored.

    Returns
    -------
    dict
        The preset, with ``name`` set to the preset's name.
    """
    path = preset_file("models", name, folder)
    with open(path) as handle:
        own = ruamel.yaml.YAML(typ="safe").load(handle) if "base" in top_level_keys(path) else None
    if own is not None:
        base, options = own.pop("base"), own.pop("method_options", None) or {}
        preset = load_model_preset(base, shared_folder, folder, **own)
        if options:
            preset["method_options"] = merged_method_options(
                preset.get("method_options") or {}, options)
    else:
        extra = {"shared_folder": str(shared_folder)} if shared_folder is not None and (
            "shared_folder" in top_level_keys(path)) else {}
        with open(path) as handle:
            preset = load_hyperpyyaml(handle, extra)
    preset.update({k: v for k, v in overrides.items() if v is not None})
    preset["name"] = Path(name).stem
    return preset


def load_method(
    name: str | os.PathLike,
    model: dict | None = None,
    folder: str | os.PathLike = HPARAMS,
    **overrides,
) -> dict:
    """Load method preset ``name`` for ``model``: its options and its ``adapter`` factory.

    Arguments
    ---------
    name : str or PathLike
        A method name (``hparams/methods/<name>.yaml``) or a YAML file.
    model : dict, optional
        A model preset: its ``adapted_params`` and ``method_options[name]`` are applied.
    folder : str or PathLike
        The hparams folder holding ``methods/``.
    **overrides
        Method options, strongest last (an unknown option raises ``ValueError``).

    Returns
    -------
    dict
        Every option, and ``adapter``: call it with ``enhancer=`` and ``hook=``.
    """
    name = Path(name).stem if Path(name).suffix else str(name)
    model = model or {}
    chain = [(name, preset_file("methods", name, folder))]  # the method, then its bases
    while "base" in top_level_keys(chain[-1][1]):
        with open(chain[-1][1]) as handle:
            base = ruamel.yaml.YAML(typ="safe").load(handle)["base"]
        chain.append((base, preset_file("methods", base, folder)))
    options = {}
    for link, path in reversed(chain):  # weakest first: the root file's bases, then up
        if path is not chain[-1][1]:
            with open(path) as handle:
                own = ruamel.yaml.YAML(typ="safe").load(handle)
            options.update({k: v for k, v in own.items() if k != "base"})
        options.update(model.get("method_options", {}).get(link, {}))
    options.update(overrides)
    root = chain[-1][1]
    if "adapted_params" in top_level_keys(root) and "adapted_params" in model:
        options.setdefault("adapted_params", model["adapted_params"])
    method = _load(root, options)
    method["name"] = name
    return method


def build_adapter(
    enhancer: nn.Module,
    model: dict,
    method: str | dict = "mpol_default",
    **overrides,
) -> nn.Module:
    """Attach the model's mask hook and build the method's adapter around ``enhancer``.

    Arguments
    ---------
    enhancer : speechbrain.inference.interfaces.Pretrained
        The loaded enhancer.
    model : dict
        Its model preset (:func:`load_model_preset`).
    method : str or dict
        A method name, or a method already loaded with :func:`load_method`.
    **overrides
        Method options (only when ``method`` is a name).

    Returns
    -------
    Adapter
        The method's :class:`~speechbrain_mpol.adapter.Adapter`.
    """
    if isinstance(method, str):
        method = load_method(method, model, **overrides)
    return method["adapter"](enhancer=enhancer, hook=model_hook(enhancer, model))


def model_hook(enhancer: nn.Module, model: dict) -> MaskHook:
    """Attach the mask hook that ``model`` names to ``enhancer``."""
    return attach_hook(enhancer, model["hook"], model["hook_modules"])


def load_enhancer(
    model: dict,
    run_opts: dict | None = None,
    savedir: str | os.PathLike | None = None,
    strict: bool = False,
):
    """Load the enhancer a model preset names: its ``model_source``, else its offline sources.

    Arguments
    ---------
    model : dict
        A model preset (:func:`load_model_preset`).
    run_opts : dict, optional
        Forwarded to ``from_hparams`` (``{"device": "cuda"}``).
    savedir : str or PathLike, optional
        Where the files of a hub id are kept (default: derived from the id).
    strict : bool
        Raise instead of falling back to an offline source.

    Returns
    -------
    Pretrained
        The loaded enhancer; its ``load_report`` says which model ran and why
        (:class:`~speechbrain_mpol.loading.LoadReport`).
    """
    from speechbrain_mpol import loading

    return loading.load_enhancer(model["enhancer_class"], str(model["model_source"]), savedir,
                                 fallbacks=model.get("offline_sources", []),
                                 run_opts={"device": (run_opts or {}).get("device", "cpu")},
                                 strict=strict)

