"""Baselines MPol is judged against, on the same :class:`~speechbrain_mpol.adapter.Adapter`
interface: the unadapted source model, mask-entropy minimization (TENT-like), BatchNorm
statistics re-estimation, and online RemixIT."""

from speechbrain_mpol.baselines.bn_stats import BNStatsAdapter
from speechbrain_mpol.baselines.entropy import EntropyAdapter
from speechbrain_mpol.baselines.remixit import RemixITAdapter
from speechbrain_mpol.baselines.source import SourceAdapter

__all__ = ["BNStatsAdapter", "EntropyAdapter", "RemixITAdapter", "SourceAdapter"]
