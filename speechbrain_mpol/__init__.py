"""speechbrain-mpol: test-time adaptation of mask-based speech enhancers by mask polarization.

The package follows the pipeline: ``audio`` (audio in) -> ``hooks`` (mask out)
-> ``objective`` (MPol loss) -> ``adapter`` (test-time updates) -> ``brain`` (dataset runs);
``recipes/`` hold the command-line entry points.
"""

__version__ = "0.1.0"
