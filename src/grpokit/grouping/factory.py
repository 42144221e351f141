"""The grouper registry and `make_grouper`, which builds the grouper a recipe names
(composite groupers such as multiscale and temporal build their parts with it too).
The built-in classes register in the package's __init__."""
from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import Tensor

from grpokit.grouping.base import Groups, accepted_kwargs, check_ids
from grpokit.grouping.selftune import Budgeted, Shrunk
from grpokit.registry import Registry
from grpokit.types import Experience

GROUPERS: Registry = Registry("grouper")


# Settings every grouper may receive that are not user options: a class takes them when
# its constructor names them.
CONTEXT = ("seed", "num_generations")
SHRINK_OPTIONS = ("shrink", "prior_dof")  # any grouper (the Shrunk wrapper, or the class itself)
BUDGET_OPTIONS = ("budget", "min_samples", "max_samples", "success", "decay", "field")  # with budget > 0


@GROUPERS.register("prompt")
def by_prompt(exp: Experience) -> Groups:
    """Standard GRPO: the completions of one prompt form one group."""
    return Groups(ids=[exp.prompt_ids], names=["prompt"])


by_prompt.needs_embeddings = False  # type: ignore[attr-defined]


@GROUPERS.register("batch")
def by_batch(exp: Experience) -> Groups:
    """The whole step is one group (a batch-mean baseline, as in REINFORCE with a batch baseline)."""
    return Groups(ids=[torch.zeros_like(exp.prompt_ids)], names=["batch"])


by_batch.needs_embeddings = False  # type: ignore[attr-defined]


class IdsGrouper:
    """A user's grouper function that returns [N] group ids, as a grouper returning Groups."""

    def __init__(self, fn: Callable[[Experience], Tensor], name: str):
        self.fn, self.name = fn, name
        self.needs_embeddings = getattr(fn, "needs_embeddings", True)

    def __call__(self, exp: Experience) -> Groups:
        out = self.fn(exp)
        if isinstance(out, Groups):
            return out
        return Groups(ids=[check_ids(out, exp.prompt_ids.numel(), self.name)], names=[self.name])


def own_options(obj: Any) -> set[str]:
    """The options a grouper declares: its constructor's keyword parameters (a function
    grouper declares none), without the context settings."""
    if not inspect.isclass(obj):
        return set()
    params = inspect.signature(obj.__init__).parameters
    return {k for k, p in params.items() if k != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD} - set(CONTEXT)


def grouper_options(spec: Any, options: dict[str, Any] | None = None) -> set[str]:
    """Every option `make_grouper(spec, **options)` uses: the grouper's own, those of the
    groupers it is made of (multiscale's scales, temporal's base; `parts(options)`), the
    shrinkage options, and the budget options when a budget is set."""
    options = options or {}
    obj = GROUPERS.resolve(spec) if isinstance(spec, str) else spec
    valid = own_options(obj) | set(SHRINK_OPTIONS) | {"budget"}
    parts = getattr(obj, "parts", None)
    if callable(parts):
        for sub in parts(options):
            valid |= grouper_options(sub, {k: v for k, v in options.items() if k != "budget"})
    if options.get("budget"):
        valid |= set(BUDGET_OPTIONS)
    return valid


def options_for(spec: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The subset of options that grouper `spec` uses (a composite hands each part its own)."""
    valid = grouper_options(spec, options)
    return {k: v for k, v in options.items() if k in valid}


def make_grouper(spec: Any = "prompt", *, seed: int = 0, num_generations: int = 8, **options: Any) -> Any:
    """The grouper a recipe names, built with its options; it returns `Groups`.

    spec: a registered name, module:attr, or a function / class itself. A class is
    instantiated with its options; a function returning [N] ids is wrapped (`IdsGrouper`).
    An option the grouper does not use (see `grouper_options`) raises ValueError naming
    the valid ones: a misspelt or misplaced `algorithm.group.*` never passes silently.
    Then, when asked: shrink -> baselines shrunk toward the parent scale (a class that
    takes `shrink` itself, like multiscale, handles it; others are wrapped in `Shrunk`);
    budget > 0 -> wrapped in `Budgeted` (self-tuning completions per prompt).
    An unknown name raises RegistryError listing the valid ones.
    """
    name = spec if isinstance(spec, str) else getattr(spec, "__name__", type(spec).__name__)
    obj = GROUPERS.resolve(spec) if isinstance(spec, str) else spec
    valid = grouper_options(obj, options)
    unused = sorted(set(options) - valid)
    if unused:
        raise ValueError(f"algorithm.group.{unused[0]}: not an option of grouper {name!r}"
                         f"{' without a budget' if unused[0] in BUDGET_OPTIONS else ''} "
                         f"(its options: {', '.join(sorted(valid))})")
    shrink, prior_dof = options.pop("shrink", False), options.pop("prior_dof", 2.0)
    budget = options.pop("budget", 0.0)
    wrap_kw = {k: options[k] for k in ("min_samples", "max_samples") if k in options}
    own = own_options(obj)
    handles_shrink = False
    if inspect.isclass(obj):
        kw = {k: v for k, v in options.items() if k in own or getattr(obj, "parts", None)}
        if "shrink" in own:
            kw.update(shrink=shrink, prior_dof=prior_dof)
            handles_shrink = True
        elif "prior_dof" in own:
            kw["prior_dof"] = prior_dof
        kw.update(accepted_kwargs(obj, {"seed": seed, "num_generations": num_generations}))
        if getattr(obj, "parts", None):  # a composite: its parts get the context too
            kw.update(seed=seed, num_generations=num_generations)
        for k in ("min_samples", "max_samples"):
            if k not in own:
                kw.pop(k, None)
        grouper = obj(**kw)
    elif callable(obj):
        grouper = obj if obj in (by_prompt, by_batch) else IdsGrouper(obj, name)
    else:
        raise TypeError(f"grouper {name!r} is a {type(obj).__name__}, not a function or class")
    if shrink and not handles_shrink:
        grouper = Shrunk(grouper, prior_dof=prior_dof)
    if budget and budget > 0:
        grouper = Budgeted(grouper, budget=budget, num_generations=num_generations, **wrap_kw,
                           **{k: options[k] for k in ("success", "decay", "field") if k in options})
    return grouper


def check_options(spec: str, **options: Any) -> list[str]:
    """Problems building the grouper `spec` with these options (for `grpokit validate`):
    [] when it builds; else one message naming the `algorithm.group.*` key at fault."""
    from grpokit.registry import RegistryError

    try:
        make_grouper(spec, **options)
    except (ValueError, TypeError, RegistryError) as e:
        return [str(e)]
    return []
