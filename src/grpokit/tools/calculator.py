"""`calculator`: arithmetic on numbers, parsed with `ast` and evaluated by a small
interpreter of its own (never eval).

Accepted: numbers, + - * / // % **, unary +/-, parentheses, the constants pi and e,
and the functions abs, round, min, max, sqrt, log (natural, or log(x, base)), log10,
exp, sin, cos, tan, floor, ceil. Everything else is an error result. Results are
bounded (integers up to `max_bits` bits, exponents up to 10,000) so `9**9**9` is
refused instead of hanging the trainer.
"""
from __future__ import annotations

import ast
import math
import operator

from grpokit.tools.base import ToolError, tool

_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCS = {"abs": abs, "round": round, "min": min, "max": max, "sqrt": math.sqrt, "log": math.log,
          "log10": math.log10, "exp": math.exp, "sin": math.sin, "cos": math.cos, "tan": math.tan,
          "floor": math.floor, "ceil": math.ceil}
_CONSTS = {"pi": math.pi, "e": math.e}


def format_number(x: float | int) -> str:
    if isinstance(x, int):
        return str(x)
    if math.isfinite(x) and x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.12g}"


@tool("calculator", doc="arithmetic expressions (+ - * / // % **, sqrt, log, ...) parsed safely, no eval")
class Calculator:
    """Evaluate an arithmetic expression; kwargs: name (the tag), max_query_chars, max_bits."""

    description = "evaluate an arithmetic expression, e.g. (3+4)*2/7"

    def __init__(self, *, name: str = "calculator", max_query_chars: int = 200, max_bits: int = 4096):
        self.name, self.max_query_chars, self.max_bits = name, max_query_chars, max_bits

    def __call__(self, query: str) -> str:
        expr = query.strip().replace("×", "*").replace("÷", "/")
        if "^" in expr:
            raise ToolError("use ** for powers (^ is not supported)")
        try:
            tree = ast.parse(expr, mode="eval")
        except SyntaxError:
            raise ToolError(f"cannot parse {expr!r} as arithmetic") from None
        try:
            return format_number(self._eval(tree.body))
        except ZeroDivisionError:
            raise ToolError("division by zero") from None
        except (OverflowError, ValueError) as e:
            raise ToolError(f"math error: {e}") from None

    def _check(self, x):
        if isinstance(x, int) and x.bit_length() > self.max_bits:
            raise ToolError(f"result too large (over {self.max_bits} bits)")
        if isinstance(x, float) and not math.isfinite(x):
            raise ToolError("result is not a finite number")
        return x

    def _eval(self, node: ast.AST):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return self._check(node.value)
        if isinstance(node, ast.Name) and node.id in _CONSTS:
            return _CONSTS[node.id]
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](self._eval(node.operand))
        if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
            a, b = self._eval(node.left), self._eval(node.right)
            if isinstance(node.op, ast.Pow):
                self._check_pow(a, b)
            if isinstance(node.op, ast.Mult) and isinstance(a, int) and isinstance(b, int):
                if a.bit_length() + b.bit_length() > self.max_bits + 1:
                    raise ToolError(f"result too large (over {self.max_bits} bits)")
            return self._check(_BIN[type(node.op)](a, b))
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
                and not node.keywords and len(node.args) <= 3):
            args = [self._eval(a) for a in node.args]
            return self._check(_FUNCS[node.func.id](*args))
        shown = ast.unparse(node) if hasattr(ast, "unparse") else type(node).__name__
        raise ToolError(f"not allowed in a calculation: {shown!r}")

    def _check_pow(self, a, b) -> None:
        if abs(b) > 10_000:
            raise ToolError("exponent too large")
        if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1:
            if a.bit_length() * b > self.max_bits + b:
                raise ToolError(f"result too large (over {self.max_bits} bits)")
        if isinstance(a, (int, float)) and a == 0 and b < 0:
            raise ZeroDivisionError
