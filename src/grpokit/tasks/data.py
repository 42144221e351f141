"""Load prompt rows (for GRPO and evaluation) and supervised traces (for the cold start).

A data spec is one of
  task:NAME[:SPLIT]  a built-in task (grpokit.tasks): its prompts, or its traces for SFT;
                     options of the task after `?`: task:mixture?max_ops=3&gsm8k_share=0
  gsm8k:PATH         one GSM8K JSONL file ({"question", "answer": "... #### 72"})
  gsm8k:hf:...       GSM8K rows from a `datasets` dataset in the local cache (below)
  hf:NAME[:CONFIG[:SPLIT]]  a Hugging Face `datasets` dataset from the local cache, read
                     offline (HF_DATASETS_OFFLINE=1 semantics: the hub is never contacted),
                     e.g. hf:openai/gsm8k:main:train; CONFIG may be empty (hf:user/data::test);
                     SPLIT defaults to the caller's (train for data.train, test for data.eval)
  PATH.jsonl         one JSON object per line, read here so errors name file:line
  PATH.json / .csv / .parquet / a directory   read through `datasets.load_dataset`

Prompt rows: the prompt column (`prompt_field`) holds text or chat messages
[{"role": ..., "content": ...}]; every other column goes to Example.fields (answer,
steps, ...) for the rewards. SFT rows: `prompt` + `completion`, or `messages` whose last
message is the assistant's (prompt = the messages before it, completion = its content).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from grpokit.tasks.jsonl import read_jsonl
from grpokit.types import Example, SFTExample

_DATASETS_BUILDERS = {".json": "json", ".csv": "csv", ".parquet": "parquet"}
_FORMS = "a .jsonl/.json/.csv/.parquet file, a directory, task:NAME[:SPLIT], hf:NAME[:CONFIG[:SPLIT]] or gsm8k:PATH"
HUB_PREFIX = "hf:"


def load_prompts(spec: str, *, prompt_field: str = "prompt", split: str = "train", n: int | None = None,
                 seed: int = 0) -> list[Example]:
    """Prompt rows named by `spec` (see the module docstring).

    n: keep the first n rows (None or 0: all). seed only reaches generated tasks; files
    keep their order (training shuffles prompts itself). split picks the task split or a
    directory's split; a single file is one split and ignores it.
    Example.id is the row's index in the file (or task split).
    """
    _check_n(n)
    if spec.startswith("task:"):
        name, task_split = _task_spec(spec, split)
        from grpokit.tasks import get_task

        return get_task(name).prompts(task_split, n or None, seed)
    if spec.startswith("gsm8k:"):
        rows = _gsm8k_rows(spec, split)
        return rows[:n] if n else rows
    out = []
    for i, (where, row) in enumerate(_rows(spec, split, n)):
        out.append(Example(id=i, prompt=_prompt_of(row, prompt_field, where),
                           fields={k: v for k, v in row.items() if k != prompt_field}))
    return out


def load_sft(spec: str, *, n: int | None = None, seed: int = 0) -> list[SFTExample]:
    """Supervised traces named by `spec`: a task's traces(n, seed), the traces of a GSM8K
    file (`<think>{solution}</think><answer>{answer}</answer>`), or rows of a file with
    `prompt`+`completion` or `messages`. n: the first n rows (None or 0: all)."""
    _check_n(n)
    if spec.startswith("task:"):
        name, split = _task_spec(spec, "train")
        if split != "train":
            raise ValueError(f"{spec!r}: traces always come from the task's train split; drop ':{split}'")
        from grpokit.tasks import get_task

        return get_task(name).traces(n or None, seed)  # type: ignore[arg-type]
    if spec.startswith("gsm8k:"):
        from grpokit.tasks.gsm8k import trace

        rows = _gsm8k_rows(spec, "train")
        return [trace(e) for e in (rows[:n] if n else rows)]
    return [_sft_of(row, where) for where, row in _rows(spec, "train", n)]


# ----------------------------------------------------------------------------- rows

def _gsm8k_rows(spec: str, split: str) -> list[Example]:
    """gsm8k:PATH (a JSONL file) or gsm8k:hf:... (rows of a cached hub dataset)."""
    from grpokit.tasks.gsm8k import load_gsm8k, parse_gsm8k_row

    source = spec[len("gsm8k:"):]
    if not source.startswith(HUB_PREFIX):
        return load_gsm8k(_existing(source, spec))
    out = []
    for where, row in _rows(source, split, None):
        try:
            out.append(parse_gsm8k_row(row, id=len(out)))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    return out


def parse_hub_spec(spec: str, default_split: str) -> tuple[str, str | None, str]:
    """hf:NAME[:CONFIG[:SPLIT]] -> (NAME, CONFIG or None, SPLIT)."""
    parts = spec[len(HUB_PREFIX):].split(":")
    if not parts[0] or len(parts) > 3 or parts[0].startswith(("/", ".", "~")):
        raise ValueError(f"data {spec!r}: expected hf:NAME[:CONFIG[:SPLIT]], e.g. hf:openai/gsm8k:main:train "
                         "(a dataset name, not a path; a local file is given by its path)")
    config = parts[1] if len(parts) > 1 and parts[1] else None
    split = parts[2] if len(parts) > 2 and parts[2] else default_split
    return parts[0], config, split


def _read_hub_cache(spec: str, split: str) -> list[dict]:
    """Rows of a cached `datasets` dataset, offline: the hub is never contacted."""
    name, config, split = parse_hub_spec(spec, split)
    import datasets
    from huggingface_hub import constants

    # As HF_DATASETS_OFFLINE=1 / HF_HUB_OFFLINE=1 would, for this call only (the
    # variables are read when the libraries are imported, so they are set here).
    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    quiet = not datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity_error()  # not "Using the latest cached version": that is the point
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except ConnectionError:  # offline and nothing cached under that name
        raise FileNotFoundError(
            f"data {spec!r}: dataset {name!r} is not in the local datasets cache ({datasets.config.HF_DATASETS_CACHE}); "
            f"grpokit reads hub datasets offline: load it once where the hub is reachable "
            f"(datasets.load_dataset({name!r}{f', {config!r}' if config else ''})) and point HF_DATASETS_CACHE "
            "at that cache") from None
    except (ValueError, FileNotFoundError) as e:  # unknown config or split: datasets lists what is cached
        raise ValueError(f"data {spec!r}: {' '.join(str(e).split())}") from None
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved
        datasets.logging.set_verbosity(verbosity)
        if not quiet:
            datasets.enable_progress_bars()
    return ds.to_list()


def _rows(spec: str, split: str, n: int | None) -> Iterator[tuple[str, Any]]:
    """(location for errors, row) pairs of a local file or directory, or of a cached hub
    dataset (hf:...), at most n."""
    if spec.startswith(HUB_PREFIX):
        yield from _limited(((f"{spec} row {i}", row) for i, row in enumerate(_read_hub_cache(spec, split))), spec, n)
        return
    path = _existing(spec, spec)
    if path.suffix == ".jsonl":
        rows: Iterator[tuple[str, Any]] = ((f"{path}:{line_no}", row) for line_no, row in read_jsonl(path))
    else:
        rows = ((f"{path} row {i}", row) for i, row in enumerate(_read_with_datasets(path, split)))
    yield from _limited(rows, str(path), n)


def _limited(rows: Iterator[tuple[str, Any]], source: str, n: int | None) -> Iterator[tuple[str, Any]]:
    """At most n rows (all when n is 0 or None), each checked to be an object; none is an error."""
    count = 0
    for where, row in rows:
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object (one row), got {type(row).__name__} {_short(row)}")
        yield where, row
        count += 1
        if n and count >= n:
            return
    if count == 0:
        raise ValueError(f"{source}: no rows")


def _read_with_datasets(path: Path, split: str) -> list[dict]:
    builder = None if path.is_dir() else _DATASETS_BUILDERS.get(path.suffix)
    if not path.is_dir() and builder is None:
        raise ValueError(f"{path}: unsupported file type {path.suffix or '(none)'!r}; expected {_FORMS}")
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ImportError(f"{path}: reading {path.suffix or 'directories'} needs the 'datasets' package") from e
    quiet = not datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a local file loads in a blink; keep the console clean
    try:
        if builder is None:
            ds = datasets.load_dataset(str(path), split=split)
        else:  # a single file is one split, which datasets calls "train"
            ds = datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        what = f"a dataset directory (split {split!r})" if builder is None else f"{builder}"
        raise ValueError(f"{path}: could not be read as {what}: {type(e).__name__}: {e}") from e
    finally:
        if not quiet:
            datasets.enable_progress_bars()
    return ds.to_list()


def _prompt_of(row: dict, field: str, where: str) -> Any:
    if field not in row:
        raise ValueError(f"{where}: missing the prompt field {field!r}; the row has fields: "
                         f"{', '.join(row) or 'none'} (set data.prompt_field to the prompt column)")
    return _check_prompt(row[field], f"{where}: field {field!r}")


def _check_prompt(prompt: Any, what: str) -> Any:
    """A prompt is non-blank text, or a non-empty list of {role, content} string messages."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError(f"{what} is empty; expected the prompt text")
        return prompt
    if isinstance(prompt, list):
        if not prompt:
            raise ValueError(f"{what} is an empty message list; expected at least one message")
        for k, msg in enumerate(prompt):
            _check_message(msg, f"{what}, message {k}")
        return prompt
    raise ValueError(f"{what} is {type(prompt).__name__} {_short(prompt)}; expected a string or a list of "
                     "{'role': ..., 'content': ...} messages")


def _check_message(msg: Any, what: str) -> None:
    if not isinstance(msg, dict) or not isinstance(msg.get("role"), str) or not isinstance(msg.get("content"), str):
        raise ValueError(f"{what} is {_short(msg)}; expected {{'role': str, 'content': str}}")


def _sft_of(row: dict, where: str) -> SFTExample:
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or len(messages) < 2:
            raise ValueError(f"{where}: 'messages' must be a list of at least two messages (the prompt, then the "
                             f"assistant's reply), got {_short(messages)}")
        for k, msg in enumerate(messages):
            _check_message(msg, f"{where}: messages[{k}]")
        last = messages[-1]
        if last["role"] != "assistant" or not last["content"].strip():
            raise ValueError(f"{where}: the last message must be a non-empty reply with role 'assistant', "
                             f"got role {last['role']!r}")
        return SFTExample(prompt=messages[:-1], completion=last["content"])
    if "prompt" in row and "completion" in row:
        completion = row["completion"]
        if not isinstance(completion, str) or not completion.strip():
            raise ValueError(f"{where}: field 'completion' is {_short(completion)}; expected non-empty text")
        return SFTExample(prompt=_check_prompt(row["prompt"], f"{where}: field 'prompt'"), completion=completion)
    raise ValueError(f"{where}: expected 'prompt' and 'completion' fields, or 'messages' (a chat ending in the "
                     f"assistant's reply); the row has fields: {', '.join(row) or 'none'}")


# ----------------------------------------------------------------------------- specs

def _task_spec(spec: str, default_split: str) -> tuple[str, str]:
    from grpokit.tasks import split_task_spec

    name, split = split_task_spec(spec)
    if not name or name.startswith("?"):
        from grpokit.tasks import TASKS, load_builtins

        load_builtins()
        raise ValueError(f"{spec!r}: expected task:NAME[:SPLIT][?OPTIONS]; tasks: {', '.join(TASKS.names())}")
    return name, split or default_split


def _existing(path_text: str, spec: str) -> Path:
    path = Path(path_text).expanduser()
    if not path_text or not path.exists():
        raise FileNotFoundError(f"data {spec!r}: {str(path)!r} does not exist; expected {_FORMS}")
    return path


def _check_n(n: int | None) -> None:
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise ValueError(f"n must be a non-negative int (0 or None = all rows), got {n!r}")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
