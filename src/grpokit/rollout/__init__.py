"""Phase 1: turning prompts into sampled completions (no reward or advantage logic)."""
from grpokit.rollout.generate import GenerationOutput, generate
from grpokit.rollout.batch import build_rollout_batch

__all__ = ["GenerationOutput", "generate", "build_rollout_batch"]
