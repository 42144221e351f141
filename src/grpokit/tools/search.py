"""`search`: BM25 retrieval (the `bm25s` package) over a local corpus of passages.

Corpus: a JSONL file with one {"id", "title", "text"} object per line, a list of such
dicts (a task builds its own: `grpokit.tasks.with_task_corpora`
turns a recipe's `corpus: task:NAME` into the task's passages). Title and text are
indexed together (lowercased words of two or more characters, English stopwords
removed). A query returns the top-k passages, best first, one per line as
`title: text` (or just the text with show_title=False), cut to `max_chars` in all.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from grpokit.tools.base import tool


def load_corpus(spec: str | Path | Sequence[dict]) -> list[dict]:
    """Passages {id, title, text} from a JSONL path or a list of dicts."""
    if isinstance(spec, (list, tuple)):
        rows = [dict(r) for r in spec]
        where = "corpus"
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"search corpus {str(spec)!r} does not exist (expected a JSONL file of "
                                    '{"id", "title", "text"} objects)')
        rows, where = [], str(path)
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{line_no}: malformed JSON ({e.msg})") from None
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or not isinstance(r.get("text"), str):
            raise ValueError(f"{where}: passage {i} has no 'text' string; expected {{id, title, text}}")
        r.setdefault("id", str(i))
        r.setdefault("title", "")
    if not rows:
        raise ValueError(f"{where}: the corpus is empty")
    return rows


@tool("search", doc="BM25 search (bm25s) over a local JSONL corpus of {id, title, text}; top-k passages")
class BM25Search:
    """BM25 over a local corpus. kwargs: corpus (path | list), k (passages
    returned), max_chars (result budget), show_title, name (the tag), max_query_chars."""

    description = "search a local corpus (BM25); returns the best passages"

    def __init__(self, corpus: Any, *, k: int = 3, max_chars: int = 600, show_title: bool = True,
                 name: str = "search", max_query_chars: int = 300, k1: float = 1.5, b: float = 0.75):
        import bm25s
        from bm25s.tokenization import Tokenizer

        if k < 1 or max_chars < 1:
            raise ValueError(f"search: k and max_chars must be >= 1, got k={k}, max_chars={max_chars}")
        self.name, self.k, self.max_chars, self.show_title = name, k, max_chars, show_title
        self.max_query_chars = max_query_chars
        self.docs = load_corpus(corpus)
        self._tokenizer = Tokenizer(stopwords="en")
        tokens = self._tokenizer.tokenize([f"{d['title']}\n{d['text']}" for d in self.docs], update_vocab=True,
                                          return_as="ids", show_progress=False)
        self._bm25 = bm25s.BM25(k1=k1, b=b)
        self._bm25.index(tokens, show_progress=False)

    def search(self, query: str, k: int | None = None) -> list[tuple[dict, float]]:
        """(passage, score) pairs, best first; only passages sharing a word with the query."""
        ids = self._tokenizer.tokenize([query], update_vocab=False, return_as="ids", show_progress=False)[0]
        ids = [i for i in ids if i != 0]  # 0: the empty token that unknown words map to
        if not ids:
            return []
        k = min(k or self.k, len(self.docs))
        # numpy top-k: bm25s would otherwise use JAX when it is installed, which grabs GPU memory
        hits, scores = self._bm25.retrieve([ids], k=k, show_progress=False, n_threads=0, backend_selection="numpy")
        return [(self.docs[int(h)], float(s)) for h, s in zip(hits[0], scores[0]) if s > 0]

    def format(self, doc: dict) -> str:
        return f"{doc['title']}: {doc['text']}" if self.show_title and doc["title"] else doc["text"]

    def __call__(self, query: str) -> str:
        hits = self.search(query)
        if not hits:
            return "no results"
        text = "\n".join(self.format(d) for d, _ in hits)
        return text if len(text) <= self.max_chars else text[: self.max_chars - 3] + "..."
