#!/usr/bin/env python3
"""Prepare the corpus source domain: CSV manifests and the fixed validation and test mixtures.

Reads ``<corpus_folder>/MANIFEST.tsv`` (default ``<shared_folder>/corpus``) and writes, under
``--save_folder``: ``speech_train.csv`` and ``noise_train.csv`` (mixed on the fly in training),
``valid.csv`` and ``test.csv`` with their audio (mixed once, seeded). The mixing options are
those of ``hparams/source_corpus.yaml``; see :mod:`speechbrain_mpol.source_corpus`.

Usage::

    python recipes/prepare_corpus.py
    python recipes/prepare_corpus.py --corpus_folder /data/corpus --save_folder data/corpus_source
"""

import argparse
import logging
import sys
from pathlib import Path

from hyperpyyaml import load_hyperpyyaml

from speechbrain_mpol.audio import AudioError
from speechbrain_mpol.shared import REPO
from speechbrain_mpol.source_training import prepare_from_hparams


def main(argv: list[str] | None = None) -> None:
    """Parse, load the options, prepare."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus_folder", help="default: <shared_folder>/corpus")
    parser.add_argument("--save_folder", help="default: data_folder of the options file")
    parser.add_argument("--options", default=str(REPO / "hparams" / "source_corpus.yaml"),
                        help="the mixing options (default: hparams/source_corpus.yaml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = {}
    if args.corpus_folder:
        overrides["corpus_folder"] = str(Path(args.corpus_folder).resolve())
    if args.save_folder:
        overrides["data_folder"] = args.save_folder
    try:
        with open(args.options) as handle:
            corpus = load_hyperpyyaml(handle, overrides)
        manifests = prepare_from_hparams(corpus)
    except (FileNotFoundError, FileExistsError, AudioError) as err:
        sys.exit(f"error: {err}")
    for name, path in manifests.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
