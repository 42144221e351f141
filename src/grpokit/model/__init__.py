"""Policy and reference loading, forward helpers, tokenizers and device placement: the one
place that knows transformers' internals."""
