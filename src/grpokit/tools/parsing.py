"""Finding tool calls in generated text, and keeping tool output from forging tags.

A call is `<TOOL>query</TOOL>` where TOOL is a tool's name. The runtime answers it with
`<result>...</result>`; text inside a result is never parsed for calls.

Malformed calls are reported, not guessed at:
  nested      `<search>a <search>b</search>`  -> one call with error "nested search tag inside a search call"
  unclosed    `<search>a` (end of text)        -> a call with complete=False, error "unclosed search call"
  stray close `a</search>`                     -> a call with error "closing search tag without an opening one"
  empty       `<search> </search>`             -> error "empty query"
Error texts name tags without angle brackets: they are shown to the model as results,
and results never contain tags.
Several calls in one text are returned in order.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

RESULT_OPEN, RESULT_CLOSE = "<result>", "</result>"
# Tags the model writes that tool output must never contain (it could fake an answer
# or close the result early).
RESERVED_TAGS = ("<result>", "</result>", "<answer>", "</answer>", "<think>", "</think>")


@dataclass
class ToolCall:
    tool: str  # the tag name
    query: str  # the text between the tags, stripped
    start: int  # index of the opening tag (or of the closing tag for a stray close)
    end: int  # index just past the closing tag (len(text) when unclosed)
    complete: bool = True  # closed by </tool>
    error: str | None = None  # why it cannot be run; None = runnable


def _tag_pattern(tags: Sequence[str]) -> re.Pattern:
    names = "|".join(re.escape(t) for t in sorted(tags, key=len, reverse=True))
    return re.compile(rf"<(/?)({names}|result)>")


def find_tool_calls(text: str, tags: Sequence[str]) -> list[ToolCall]:
    """Every tool call in `text`, in order (see the module docstring for malformed ones)."""
    if not tags:
        return []
    calls: list[ToolCall] = []
    open_tag: str | None = None
    open_at = 0
    nested: str | None = None
    pos = 0
    pattern = _tag_pattern(tags)
    while True:
        m = pattern.search(text, pos)
        if m is None:
            break
        closing, name = m.group(1) == "/", m.group(2)
        pos = m.end()
        if name == "result":
            if open_tag is None and not closing:  # skip a whole result block
                end = text.find(RESULT_CLOSE, pos)
                if end < 0:
                    break
                pos = end + len(RESULT_CLOSE)
            elif open_tag is not None:
                nested = nested or f"result tag inside a {open_tag} call"
            continue
        if open_tag is None:
            if closing:
                calls.append(ToolCall(name, "", m.start(), m.end(), error=f"closing {name} tag without an opening one"))
            else:
                open_tag, open_at, nested = name, m.start(), None
            continue
        if not closing:
            nested = nested or f"nested {name} tag inside a {open_tag} call"
            continue
        query = text[open_at + len(open_tag) + 2:m.start()]
        error = nested
        if error is None and name != open_tag:
            error = f"{open_tag} call closed by a {name} tag"
        if error is None and not query.strip():
            error = "empty query"
        calls.append(ToolCall(open_tag if name == open_tag else name, query.strip(), open_at, m.end(), error=error))
        open_tag, nested = None, None
    if open_tag is not None:
        calls.append(ToolCall(open_tag, text[open_at + len(open_tag) + 2:].strip(), open_at, len(text),
                              complete=False, error=f"unclosed {open_tag} call"))
    return calls


def closing_call(segment: str, tags: Sequence[str]) -> ToolCall | None:
    """The call that ends `segment` (text generated since the last result), or None when
    the segment does not end with a closing tool tag."""
    stripped = segment.rstrip()
    if not any(stripped.endswith(f"</{t}>") for t in tags):
        return None
    calls = find_tool_calls(stripped, tags)
    return calls[-1] if calls and calls[-1].end == len(stripped) else None


def sanitize_result(text: str, tags: Sequence[str]) -> str:
    """Tool output with every reserved tag and tool tag removed."""
    for t in list(RESERVED_TAGS) + [f"<{n}>" for n in tags] + [f"</{n}>" for n in tags]:
        text = text.replace(t, "")
    return text
