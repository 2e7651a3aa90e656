"""Baselines MPol is judged against, on the same :class:`~speechbrain_mpol.adapter.Adapter`
interface: the unadapted source model (an ``Adapter`` without objective), mask-entropy
minimization (TENT-like, an objective), BatchNorm statistics re-estimation and online RemixIT
(adapters with their own update rule)."""

from speechbrain_mpol.baselines.bn_stats import BNStatsAdapter
from speechbrain_mpol.baselines.entropy import MaskEntropy
from speechbrain_mpol.baselines.remixit import RemixITAdapter

__all__ = ["BNStatsAdapter", "MaskEntropy", "RemixITAdapter"]
