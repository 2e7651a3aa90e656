#!/usr/bin/env python3
"""Train the project's MetricGAN+ source model on the corpus source domain and export it.

The generator has the hub MetricGAN+ architecture and features (hparams/export/metricgan.yaml);
it is trained on LibriSpeech + LJSpeech speech mixed on the fly with ESC-50 noise
(hparams/source_corpus.yaml), exported to ``pretrained/metricgan_libri`` and scored on the
in-domain test set. The logic is in :mod:`speechbrain_mpol.source_training`.

Usage::

    python recipes/train_source.py hparams/source_metricgan.yaml
    python recipes/train_source.py hparams/source_metricgan.yaml --eval_only=True
"""

import sys

from speechbrain.inference.enhancement import SpectralMaskEnhancement

from speechbrain_mpol.source_training import MetricGANSourceBrain, main

if __name__ == "__main__":
    main(sys.argv[1:], MetricGANSourceBrain, SpectralMaskEnhancement)
