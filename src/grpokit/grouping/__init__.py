"""Phase 2, group formation: Experience -> `Groups` (a group id per completion at one
scale, or ids at several scales with weights, shrinkage, rows pooled from earlier steps).

The recipe key `algorithm.grouping` names a strategy (`grpokit list groupers`) or
gives module:function (or module:Class); `algorithm.group.*` holds the options the
recipe sets, and `make_grouper` refuses one the strategy does not use, naming the valid
ones (`grouper_options`).

    prompt       the completions of one prompt (standard GRPO; the default)
    batch        the whole step is one group
    semantic     prompts with similar contexts (k-means on context embeddings)
    adaptive     semantic clusters that split when bimodal and merge when alike
    reward       prompts of like running success rate (stateful)
    complexity   prompts of like complexity (a dataset field, or prompt length)
    temporal     a replay window of the last K steps pooled into the groups (stateful)
    multiscale   prompt in cluster in batch, per-scale advantages combined with weights

Two wrappers combine with any of them: `algorithm.group.shrink` (small groups'
baselines shrunk toward their parent's) and `algorithm.group.budget` (self-tuning
completions per prompt under a sample budget). Around any grouper, the loop's
`algorithm.dynamic_sampling` (grpokit.rollout.dynamic) hands it only prompts with reward
spread; `observe` shows it the dropped ones for its success statistics.
"""
from __future__ import annotations

from grpokit.grouping.base import Groups, observe, stateful
from grpokit.grouping.factory import GROUPERS, by_batch, by_prompt, check_options, grouper_options, make_grouper
from grpokit.grouping.multiscale import MultiscaleGrouper
from grpokit.grouping.reward import ComplexityGrouper, RewardGrouper, SuccessTracker
from grpokit.grouping.selftune import Budgeted, Shrunk
from grpokit.grouping.semantic import AdaptiveGrouper, SemanticGrouper, kmeans
from grpokit.grouping.temporal import TemporalGrouper

__all__ = [
    "GROUPERS", "AdaptiveGrouper", "Budgeted", "ComplexityGrouper", "Groups", "MultiscaleGrouper", "RewardGrouper",
    "SemanticGrouper", "Shrunk", "SuccessTracker", "TemporalGrouper", "by_batch", "by_prompt", "kmeans",
    "check_options", "grouper_options", "make_grouper", "observe", "stateful",
]

GROUPERS.add("semantic", SemanticGrouper,
             doc="prompts with similar contexts: k-means (cosine) on context embeddings, every step")
GROUPERS.add("adaptive", AdaptiveGrouper,
             doc="semantic clusters that split when rewards are bimodal and merge when small or alike")
GROUPERS.add("reward", RewardGrouper, doc="prompts of like difficulty: buckets of running success rate (stateful)")
GROUPERS.add("complexity", ComplexityGrouper,
             doc="prompts of like complexity: a dataset field (e.g. number of steps) or prompt length")
GROUPERS.add("temporal", TemporalGrouper,
             doc="a replay window of the last K steps pooled into the groups, optionally trained on (stateful)")
GROUPERS.add("multiscale", MultiscaleGrouper,
             doc="prompt in cluster in batch: per-scale advantages combined with fixed or self-tuned weights")
