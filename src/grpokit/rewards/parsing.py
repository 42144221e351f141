"""Pure text helpers shared by the rewards: answer extraction, number parsing, the think
section, and a finder for the arithmetic equations a solution writes down.

Nothing here imports torch or knows about rewards; every function is text in, value out.
"""
from __future__ import annotations

import math
import re
from typing import NamedTuple

# --------------------------------------------------------------------------- answers

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_GSM8K_FINAL = re.compile(r"####[ \t]*([^\n]*)")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
# "-5", "$1,080.50"; a sign only when it touches the number ("40 - 5" ends in 5, not -5),
# and a sentence's closing period is not a decimal point.
_SIGNED_NUMBER = r"-?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
# "answer is 18", "answer: 18", "answer is: $18", "answer would be 18" -- case-insensitive
_ANSWER_PHRASE = re.compile(r"answer\s*(?:is|=|:|would be|will be)\s*:?\s*\**\s*(" + _SIGNED_NUMBER + ")",
                            re.IGNORECASE)
_ANY_NUMBER = re.compile(r"(?<![\w.])" + _SIGNED_NUMBER)


def extract_answer(text: str, *, last_number: bool = False) -> str | None:
    """The final answer a completion states, stripped, or None.

    Looked for in this order (the first form present wins, the last occurrence of it):
      1. the content of the last complete `<answer>...</answer>` pair;
      2. the rest of the line after the last GSM8K marker `#### x`;
      3. the content of the last `\\boxed{...}` (braces balanced);
      4. the number after the last "answer is" / "answer:" phrase ("The answer is 18.",
         "Final answer: $1,080"): an explicit statement, as instruct models write it;
      5. only with last_number=True: the last number in the text ("17 + 21 = 38" -> "38").
    An unclosed `<answer>` (a truncated generation) is not an answer. No form -> None.
    Form 5 is off by default: it credits an intermediate result that happens to equal the
    answer and lets a policy skip stating one (see rewards/math.py); a recipe turns it on
    for a weak model whose stated answers are too rare to learn from.
    """
    tags = _ANSWER_TAG.findall(text)
    if tags:
        return tags[-1].strip()
    finals = _GSM8K_FINAL.findall(text)
    if finals:
        return finals[-1].strip()
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    phrases = _ANSWER_PHRASE.findall(text)
    if phrases:
        return phrases[-1]
    if last_number:
        numbers = _ANY_NUMBER.findall(text)
        if numbers:
            return numbers[-1]
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` with balanced braces, or None."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(starts):  # the last one that closes
        depth = 1
        for i in range(start, len(text)):
            c = text[i]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i].strip()
    return None


# --------------------------------------------------------------------------- numbers

# One number as people write it: thousands commas only in groups of three, so "1,2"
# (a list, or a European decimal) is not read as 12.
_NUM = r"(?:\d{1,3}(?:,\d{3})+(?:\.\d*)?|\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_NUMBER = re.compile(
    r"""^\s*
    (?P<sign1>[-+]?)\s*\$?\s*(?P<sign2>[-+]?)\s*      # "-$5", "$-5", "+3"
    (?P<num>""" + _NUM + r""")
    (?:\s*/\s*(?P<den>""" + _NUM + r"""))?            # "3/4"
    \s*%?                                             # "50%" reads as 50
    [A-Za-z\s.]*                                      # trailing units / period: "18 apples."
    $""",
    re.VERBOSE,
)
_FRAC = re.compile(r"^\s*([-+]?)\s*\\[dt]?frac\s*\{\s*([^{}]+?)\s*\}\s*\{\s*([^{}]+?)\s*\}\s*$")
_LATEX_WRAPPERS = (("\\$", "$"), ("\\%", "%"), ("\\!", ""), ("\\,", ""), ("−", "-"))


def parse_number(s: object) -> float | None:
    """Read one number written the way solutions write it; None when `s` is not one.

    Accepts ints/floats as they are, and strings such as "1,234", "$5", "-$5", "-3.5",
    "12." (trailing period), "3/4" and "\\frac{3}{4}" (-> 0.75), "50%" (-> 50: GSM8K
    golds are the bare number), "18 apples" (trailing words are units), "\\boxed{18}" and
    "$18$". Text with anything else around the number (a second number, a leading word,
    "1 3/4") is not a single number and gives None, so the caller can try symbolic
    comparison. Division by zero gives None.
    """
    if isinstance(s, bool):
        return float(s)
    if isinstance(s, (int, float)):
        return float(s) if math.isfinite(s) else None
    if not isinstance(s, str):
        return None
    text = s.strip()
    if not text or len(text) > 200:  # long text is prose, not a number; keep the regex cheap
        return None
    boxed = last_boxed(text) if "boxed" in text else None
    if boxed is not None:
        text = boxed
    for old, new in _LATEX_WRAPPERS:
        text = text.replace(old, new)
    if text.count("$") == 2 and text.startswith("$") and text.endswith("$"):
        text = text[1:-1]  # "$18$" is math mode, not two dollar signs
    frac = _FRAC.match(text)
    if frac:
        sign, num, den = frac.groups()
        return _divide(sign, parse_number(num), parse_number(den))
    m = _NUMBER.match(text)
    if m is None:
        return None
    if m["sign1"] and m["sign2"]:
        return None  # "-$-5"
    sign = m["sign1"] or m["sign2"]
    value = _to_float(m["num"])
    if m["den"] is not None:
        return _divide(sign, value, _to_float(m["den"]))
    return -value if sign == "-" else value


def _to_float(num: str) -> float:
    return float(num.replace(",", ""))


def _divide(sign: str, num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den == 0:
        return None
    value = num / den
    return -value if sign == "-" else value


def numbers_close(a: float, b: float, rel: float = 1e-6) -> bool:
    """|a - b| <= rel * max(|a|, |b|), with an absolute floor of `rel` * 1e-3 near zero."""
    return math.isclose(a, b, rel_tol=rel, abs_tol=rel * 1e-3)


# --------------------------------------------------------------------------- think

def think_section(text: str) -> str | None:
    """The reasoning inside `<think>...</think>`, or None when there is no think tag.

    Both tags: the text between the first `<think>` and the first `</think>` after it.
    Only `</think>` (the chat template already opened the tag): the text before it.
    Only `<think>` (generation truncated mid-thought): everything after it.
    """
    open_at = text.find("<think>")
    if open_at >= 0:
        body_at = open_at + len("<think>")
        close_at = text.find("</think>", body_at)
        return text[body_at:] if close_at < 0 else text[body_at:close_at]
    close_at = text.find("</think>")
    return text[:close_at] if close_at >= 0 else None


# --------------------------------------------------------------------------- arithmetic

# 'x' is a times sign only between operands ("12 x 2", "12x2", "(3+4)x2"); in "3x+7" or
# at the start of a run (the end of "tax", "box") it is a letter, i.e. junk.
_TOKEN = re.compile(r"\s*(?:(" + _NUM + r")|((?<=[\d)\s])x(?=\s*[\d.($])|[-+*/×÷·()=])|(\$)|(.))", re.DOTALL)
_MUL = {"*", "x", "×", "·"}


def lex(expr: str) -> list[tuple[str | float, int, int]]:
    """(token, start, end) triples: numbers as floats, operators `+ - * / ( ) =` (x × · -> *,
    ÷ -> /), "?" for any other character; '$' (currency) is dropped. A number written
    directly against '(' multiplies it: "2(3+4)" -> 2 * (3+4); "Step 2 (3+4)" does not."""
    out: list[tuple[str | float, int, int]] = []
    for m in _TOKEN.finditer(expr):
        num, op, _dollar, other = m.groups()
        if num:
            out.append((_to_float(num), m.start(1), m.end(1)))
        elif op:
            tok = "*" if op in _MUL else "/" if op == "÷" else op
            if tok == "(" and out and (isinstance(out[-1][0], float) or out[-1][0] == ")") and out[-1][2] == m.start(2):
                out.append(("*", m.start(2), m.start(2)))
            out.append((tok, m.start(2), m.end(2)))
        elif other and not other.isspace():
            out.append(("?", m.start(4), m.end(4)))
    return out


_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2, "u-": 3, "u+": 3}  # "u-": unary minus


def evaluate(tokens: list) -> float | None:
    """Value of an arithmetic token list, or None when it is not a well-formed expression.

    The usual grammar, evaluated with an operator stack (a hand-written parser, never
    eval(); iterative because this runs for every equation of every completion):
      expr := term (('+'|'-') term)*      term := unary (('*'|'/') unary)*
      unary := ('+'|'-') unary | NUMBER | '(' expr ')'
    Binary operators are left associative. Division by zero -> None.
    """
    nums: list[float] = []
    ops: list[str] = []
    want_operand = True
    try:
        for tok in tokens:
            if want_operand:
                if isinstance(tok, float):
                    nums.append(tok)
                    want_operand = False
                elif tok == "(":
                    ops.append(tok)
                elif tok == "-" or tok == "+":
                    ops.append("u" + tok)
                else:
                    return None
            elif tok == ")":
                while ops and ops[-1] != "(":
                    _apply(nums, ops.pop())
                if not ops:
                    return None  # unbalanced ')'
                ops.pop()
            elif tok in ("+", "-", "*", "/"):
                prec = _PRECEDENCE[tok]
                while ops and ops[-1] != "(" and _PRECEDENCE[ops[-1]] >= prec:
                    _apply(nums, ops.pop())
                ops.append(tok)
                want_operand = True
            else:
                return None
        if want_operand:
            return None  # empty, or ends with an operator
        while ops:
            op = ops.pop()
            if op == "(":
                return None  # unclosed '('
            _apply(nums, op)
    except (ZeroDivisionError, OverflowError):
        return None
    value = nums[0]
    return value if math.isfinite(value) else None


def _apply(nums: list[float], op: str) -> None:
    if op == "u-":
        nums[-1] = -nums[-1]
    elif op != "u+":
        b = nums.pop()
        a = nums[-1]
        nums[-1] = a + b if op == "+" else a - b if op == "-" else a * b if op == "*" else a / b


def evaluate_text(expr: str) -> float | None:
    """Value of an arithmetic string: "12 x 2" -> 24.0, "(3+4)*5" -> 35.0, "2 apples" -> None."""
    return evaluate([t for t, _, _ in lex(expr)])


class Equation(NamedTuple):
    """One written equation `expr = result` with both sides evaluated."""

    expr: str  # left side, normalised: "48/2", "12*2"
    result: str  # right side, normalised: "24"
    left: float
    right: float
    pos: int  # offset of its '=' (annotations: where they stood) in the annotation-free text

    @property
    def holds(self) -> bool:
        return numbers_close(self.left, self.right)


# Runs of characters that can make up a written equation. Newlines end a run: one line,
# one chain of equations.
_RUN = re.compile(r"[0-9.,()+\-*/x×÷·$= \t]+")
_ANNOTATION = re.compile(r"<<([^<>]*?)=([^<>=]*?)>>")
_LATEX_OPS = (("\\times", "×"), ("\\cdot", "·"), ("\\div", "÷"), ("\\$", "$"), ("\\left", ""), ("\\right", ""),
              ("−", "-"))
_MAX_PART_TOKENS = 48  # a longer operand list is not a step anyone writes; bounds the search
_OPS = ("+", "-", "*", "/")


def find_equations(text: str) -> list[Equation]:
    """Every arithmetic equation written in `text`, in order of appearance.

    Two sources:
      * GSM8K calculator annotations `<<48/2=24>>`;
      * equations in the prose: "48/2 = 24", "12 x 2 = $24", "3+4+5=12", "(3+4)*5 = 35",
        "1,000 + 200 = 1,200". A chain "2*3+4 = 6+4 = 10" gives two equations
        (2*3+4 = 6+4, 6+4 = 10), each judged on its own; "37+48=85 85-12=73" gives two.
    Each side is the longest well-formed expression touching the '=' ("Step 1. 5+3=8"
    -> 5+3 = 8). Skipped, as not checkable: left sides without a binary operator ("x = 5",
    "24 = 24"), and left sides cut off by prose ("2 pounds * 1/3 = 2/3": the expression
    runs on into words, so "1/3 = 2/3" is not what was claimed; likewise "3x + 7 = 22").
    An annotation directly inside a prose equation with the same result (the GSM8K
    pattern "48/2 = <<48/2=24>>24") is the same step and is counted once.
    """
    if "=" not in text:
        return []
    for old, new in _LATEX_OPS:
        if old in text:
            text = text.replace(old, new)
    annotations: list[Equation] = []
    if "<<" in text:
        annotations, text = _strip_annotations(text)
    prose = []
    for run in _RUN.finditer(text):
        if "=" in run.group():
            prose.extend(_run_equations(run.group(), run.start()))
    kept = [a for a in annotations if not any(_same_step(e, a, text) for e in prose)]
    return sorted(prose + kept, key=lambda e: e.pos)


def _same_step(prose: Equation, note: Equation, text: str) -> bool:
    # The annotation sat between this prose equation's '=' and its result
    # ("48/2 = <<48/2=24>>24", "= $<<12/60=0.2>>0.2") and agrees with it.
    return (prose.pos < note.pos and text[prose.pos + 1:note.pos].strip(" \t$") == ""
            and numbers_close(prose.right, note.right))


def _strip_annotations(text: str) -> tuple[list[Equation], str]:
    """Remove `<<a=b>>` from text; return the parsed annotations (pos = the offset in the
    clean text where each one was) and the clean text."""
    found, pieces, last, removed = [], [], 0, 0
    for m in _ANNOTATION.finditer(text):
        pieces.append(text[last:m.start()])
        left, right = _tokens(m.group(1)), _tokens(m.group(2))
        lv, rv = evaluate(left), evaluate(right)
        if lv is not None and rv is not None and _has_operator(left):
            found.append(Equation(_show(left), _show(right), lv, rv, m.start() - removed))
        removed += m.end() - m.start()
        last = m.end()
    pieces.append(text[last:])
    return found, "".join(pieces)


def _tokens(expr: str) -> list:
    return [t for t, _, _ in lex(expr)]


def _run_equations(run: str, offset: int) -> list[Equation]:
    """Split one run at its '=' signs and read an equation across each '='."""
    lexed = lex(run)
    cuts = [i for i, (t, _, _) in enumerate(lexed) if t == "="]
    bounds = [-1] + cuts + [len(lexed)]
    out = []
    for k, cut in enumerate(cuts):
        left = _left_side(lexed[bounds[k] + 1:cut])
        if left is None or not _has_operator(left[0]):
            continue
        right = _right_side([t for t, _, _ in lexed[cut + 1:bounds[k + 2]]])
        if right is not None:
            out.append(Equation(_show(left[0]), _show(right[0]), left[1], right[1], offset + lexed[cut][1]))
    return out


def _left_side(lexed: list[tuple[str | float, int, int]]) -> tuple[list, float] | None:
    """The longest valid suffix and its value, unless prose cuts it off: the token before
    it must not be an operator or '(' ("2 pounds * 1/3"), and a leading sign must touch
    its number ("books - 20 - 25" is a dash in a sentence, "-3 + 5" a negative number)."""
    tokens = [t for t, _, _ in lexed]
    lo = max(0, len(tokens) - _MAX_PART_TOKENS)
    for i in range(len(tokens) - 1, lo, -1):  # nothing valid reaches across a break
        if _breaks(tokens[i - 1], tokens[i]):
            lo = i
            break
    for start in range(lo, len(tokens)):
        first = tokens[start]
        if not (isinstance(first, float) or first in ("(", "-", "+")):
            continue
        value = evaluate(tokens[start:])
        if value is None:
            continue
        if start > 0 and (tokens[start - 1] in _OPS or tokens[start - 1] == "("):
            return None
        if first in ("-", "+") and lexed[start + 1][1] != lexed[start][2]:
            return None
        return tokens[start:], value
    return None


def _right_side(tokens: list) -> tuple[list, float] | None:
    """The longest valid prefix and its value ("85 85-12" -> 85, "6+4 " -> 6+4)."""
    hi = min(len(tokens), _MAX_PART_TOKENS)
    for i in range(1, hi):
        if _breaks(tokens[i - 1], tokens[i]):
            hi = i
            break
    for end in range(hi, 0, -1):
        value = evaluate(tokens[:end])
        if value is not None:
            return tokens[:end], value
    return None


def _breaks(prev: object, cur: object) -> bool:
    # Two tokens no expression can hold side by side: junk, or two operands ("85 85").
    return prev == "?" or cur == "?" or ((isinstance(prev, float) or prev == ")")
                                         and (isinstance(cur, float) or cur == "("))


def _has_operator(tokens: list) -> bool:
    # A binary operator: one that follows a number or ')'. "-5" alone has none.
    return any(t in _OPS and (isinstance(p, float) or p == ")") for p, t in zip(tokens, tokens[1:]))


def _show(tokens: list) -> str:
    return "".join(_fmt(t) if isinstance(t, float) else t for t in tokens)


def _fmt(x: float) -> str:
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)
