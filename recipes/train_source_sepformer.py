#!/usr/bin/env python3
"""Train the project's SepFormer source model on the corpus source domain and export it.

A small SepFormer (hparams/export/sepformer.yaml) trained with negative SI-SNR on LibriSpeech +
LJSpeech speech mixed on the fly with ESC-50 noise (hparams/source_corpus.yaml), exported to
``pretrained/sepformer_libri`` and scored on the in-domain test set. The logic is in
:mod:`speechbrain_mpol.source_training`.

Usage::

    python recipes/train_source_sepformer.py hparams/source_sepformer.yaml
    python recipes/train_source_sepformer.py hparams/source_sepformer.yaml --eval_only=True
"""

import sys

from speechbrain.inference.separation import SepformerSeparation

from speechbrain_mpol.source_training import SepformerSourceBrain, main

if __name__ == "__main__":
    main(sys.argv[1:], SepformerSourceBrain, SepformerSeparation)
