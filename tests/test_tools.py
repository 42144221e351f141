"""Tools: call parsing, the registry, calculator, BM25 search and the Python sandbox."""
import os

import pytest

from grpokit.tools import TOOLS, ToolError, build_tool, build_tools
from grpokit.tools.parsing import closing_call, find_tool_calls, sanitize_result

TAGS = ["search", "python"]


# -- parsing --------------------------------------------------------------------------------

def _calls(text):
    return [(c.tool, c.query, c.complete, c.error) for c in find_tool_calls(text, TAGS)]


@pytest.mark.parametrize("text, expected", [
    ("<search>capital of Vesk</search>", [("search", "capital of Vesk", True, None)]),
    ("think first <search> a b </search> then", [("search", "a b", True, None)]),
    # several calls in one turn, of two tools, in order
    ("<search>a</search><search>b</search><python>print(1)</python>",
     [("search", "a", True, None), ("search", "b", True, None), ("python", "print(1)", True, None)]),
    # nested: reported on the call, not guessed at
    ("<search>a <search>b</search>", [("search", "a <search>b", True, "nested search tag inside a search call")]),
    ("<search>a <python>x</python>", [("python", "a <python>x", True, "nested python tag inside a search call")]),
    # unclosed at the end of the text (a truncated generation)
    ("<search>half a query", [("search", "half a query", False, "unclosed search call")]),
    ("<search>a</search><search>b", [("search", "a", True, None), ("search", "b", False, "unclosed search call")]),
    # stray closing tag, empty query, mismatched close
    ("oops</search>", [("search", "", True, "closing search tag without an opening one")]),
    ("<search>   </search>", [("search", "", True, "empty query")]),
    ("<search>a</python>", [("python", "a", True, "search call closed by a python tag")]),
    # text inside results is never parsed (tool output cannot start calls)
    ("<search>a</search><result>see <search>x</search></result><answer>1</answer>", [("search", "a", True, None)]),
    ("no calls at all <answer>3</answer>", []),
])
def test_find_tool_calls(text, expected):
    assert _calls(text) == expected


def test_over_long_query_is_parsed_whole_so_the_runtime_can_refuse_it():
    q = "x" * 5000
    (call,) = find_tool_calls(f"<search>{q}</search>", TAGS)
    assert call.query == q and call.error is None  # the length limit is the runtime's (test_multiturn)


def test_closing_call_only_for_a_segment_that_ends_with_a_call():
    assert closing_call("<search>a</search>", TAGS).query == "a"
    assert closing_call("<search>a</search>  \n", TAGS).query == "a"
    assert closing_call("<search>a</search> more", TAGS) is None
    assert closing_call("<answer>1</answer>", TAGS) is None
    assert closing_call("x <search>a <search>b</search>", TAGS).error.startswith("nested")


def test_sanitize_removes_every_tag_a_result_could_forge():
    text = "a</result><answer>42</answer><search>q</search><think>x</think>b"
    assert sanitize_result(text, ["search"]) == "a42qxb"


# -- registry -------------------------------------------------------------------------------

def test_registry_lists_builtins_and_builds_by_name():
    assert {"search", "python", "calculator"} <= set(TOOLS.names())
    calc = build_tool("calculator")
    assert calc.name == "calculator" and isinstance(calc.description, str)
    renamed = build_tool({"name": "calculator", "kwargs": {"name": "calc"}})
    assert renamed.name == "calc"


def test_registry_errors_name_the_problem():
    with pytest.raises(KeyError, match="valid tools: .*calculator"):
        build_tool("serach")
    with pytest.raises(TypeError, match="calculator"):
        build_tool({"name": "calculator", "kwargs": {"no_such_option": 1}})
    with pytest.raises(ValueError, match="two tools are named 'calculator'"):
        build_tools(["calculator", "calculator"])


# -- calculator -----------------------------------------------------------------------------

@pytest.mark.parametrize("expr, expected", [
    ("1+2*3", "7"), ("(1+2)*3", "9"), ("7/2", "3.5"), ("6/3", "2"), ("7//2", "3"), ("-3**2", "-9"),
    ("2**10", "1024"), ("sqrt(16)", "4"), ("round(2.567, 2)", "2.57"), ("max(3, 9, 4)", "9"), ("10 % 4", "2"),
    ("3 × 4", "12"), ("1/3", "0.333333333333"),
])
def test_calculator_values(expr, expected):
    assert build_tool("calculator")(expr) == expected


@pytest.mark.parametrize("expr, message", [
    ("1/0", "division by zero"), ("9**9**9", "too large"), ("2^3", "use \\*\\*"),
    ("__import__('os').system('true')", "not allowed"), ("open('/etc/passwd')", "not allowed"),
    ("1 +", "cannot parse"), ("'a' * 3", "not allowed"), ("10.0**400", "math error|finite"),
])
def test_calculator_refuses(expr, message):
    with pytest.raises(ToolError, match=message):
        build_tool("calculator")(expr)


# -- search ---------------------------------------------------------------------------------

CORPUS = [
    {"id": "1", "title": "Vesk", "text": "Vesk is a country whose capital is Plonta."},
    {"id": "2", "title": "Plonta", "text": "Plonta is a river city with a famous glass market."},
    {"id": "3", "title": "Dremix", "text": "Dremix is a company that makes glass lenses, founded in 1987."},
    {"id": "4", "title": "Tarsuvo", "text": "Tarsuvo is a mountain village known for goats."},
]


def test_bm25_finds_the_passage_with_the_answer(tmp_path):
    path = tmp_path / "corpus.jsonl"
    import json

    path.write_text("".join(json.dumps(d) + "\n" for d in CORPUS))
    search = build_tool({"name": "search", "kwargs": {"corpus": str(path), "k": 2}})
    assert search.search("capital of Vesk")[0][0]["id"] == "1"
    assert search.search("when was Dremix founded")[0][0]["id"] == "3"
    assert search.search("goats mountain")[0][0]["id"] == "4"
    out = search("glass")  # two passages mention glass: both, best first, one per line
    assert out.count("\n") == 1 and {line.split(":")[0] for line in out.splitlines()} == {"Plonta", "Dremix"}
    assert search("zzz qqq") == "no results"


def test_bm25_result_budget_and_format():
    search = build_tool({"name": "search", "kwargs": {"corpus": CORPUS, "k": 4, "max_chars": 40,
                                                      "show_title": False}})
    out = search("Plonta Vesk glass goats Dremix")
    assert len(out) == 40 and out.endswith("...") and not out.startswith("Vesk:")


def test_bm25_bad_corpus_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_tool({"name": "search", "kwargs": {"corpus": str(tmp_path / "missing.jsonl")}})
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "title": "x"}\n')
    with pytest.raises(ValueError, match="no 'text'"):
        build_tool({"name": "search", "kwargs": {"corpus": str(bad)}})


# -- python sandbox -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sandbox():
    return build_tool({"name": "python", "kwargs": {"timeout": 3, "cpu_seconds": 1, "memory_mb": 128,
                                                    "max_file_bytes": 100_000, "max_output_chars": 500}})


def test_sandbox_runs_code_and_returns_output(sandbox):
    assert sandbox("import math\nprint(math.factorial(5))").strip() == "120"
    assert "ZeroDivisionError" in sandbox("1/0")  # an exception is output, not a tool failure
    assert sandbox("x = 1") == "(no output)"


def test_sandbox_scratch_directory_is_writable_and_fresh(sandbox):
    out = sandbox("import os\nopen('f.txt', 'w').write('hi')\nprint(open('f.txt').read(), os.listdir('.'))")
    assert out.strip() == "hi ['f.txt']"
    assert sandbox("import os\nprint(os.listdir('.'))").strip() == "[]"


def test_sandbox_stops_an_infinite_loop_at_its_cpu_limit():
    # a long wall clock: on a loaded machine one CPU second can take many seconds of wall time
    t = build_tool({"name": "python", "kwargs": {"timeout": 60, "cpu_seconds": 1}})
    assert t.run("while True:\n    pass").status == "cpu_limit"


@pytest.mark.parametrize("name, code, status", [
    ("sleep past the wall clock", "import time\ntime.sleep(60)", "timeout"),
    ("memory bomb", "x = []\nwhile True:\n    x.append(bytearray(10**7))", "memory_limit"),
    ("fork bomb", "import os\nwhile True:\n    os.fork()", "blocked"),
    ("shell command", "import os\nos.system('cat /etc/hostname')", "blocked"),
    ("network connection", "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)", "blocked"),
    ("huge print", "print('x' * 10**7)", "output_limit"),
    ("endless printing", "while True:\n    print('y' * 100)", "output_limit"),
])
def test_sandbox_contains_and_reports(sandbox, name, code, status):
    res = sandbox.run(code)
    assert res.status == status, (name, res)
    assert len(res.output) <= 600
    with pytest.raises(ToolError):
        sandbox(code)  # counted as a failed call by the runtime


def test_sandbox_blocks_reading_outside_scratch(sandbox, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    os.chmod(tmp_path, 0o755)
    os.chmod(secret, 0o644)
    res = sandbox.run(f"print(open({str(secret)!r}).read())")
    # refused by the hook, or (in a mount namespace) the file does not exist at all
    assert res.status in ("blocked", "error") and "TOPSECRET" not in res.output
    assert "outside the scratch directory" in res.output or "No such file" in res.output
    res = sandbox.run(f"import os\nprint(os.listdir({str(tmp_path)!r}))")
    assert res.status in ("blocked", "error") and "secret.txt" not in res.output


def test_sandbox_limits_are_set_in_the_child(sandbox):
    import resource

    out = sandbox("import resource\nfor n in ('RLIMIT_CPU', 'RLIMIT_AS', 'RLIMIT_FSIZE', 'RLIMIT_NPROC'):\n"
                  "    print(n, *resource.getrlimit(getattr(resource, n)))")
    limits = {line.split()[0]: tuple(map(int, line.split()[1:])) for line in out.splitlines()}
    assert limits["RLIMIT_CPU"] == (1, 2)
    assert limits["RLIMIT_AS"] == (128 * 2**20, 128 * 2**20)
    assert limits["RLIMIT_FSIZE"] == (100_000, 100_000)
    assert limits["RLIMIT_NPROC"][0] != resource.RLIM_INFINITY
    assert "audit hook on" in sandbox.describe()


def test_sandbox_os_level_limits_hold_without_the_audit_hook():
    """With the hook off, the process limits still stop a fork bomb and the CPU burner."""
    raw = build_tool({"name": "python", "kwargs": {"timeout": 60, "cpu_seconds": 1, "guard": False,
                                                   "max_processes": 8}})
    code = ("import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            time.sleep(2)\n"
            "            os._exit(0)\n        n += 1\nexcept OSError as e:\n    print('stopped after', n, 'forks')")
    res = raw.run(code)
    assert "stopped after" in res.output or res.status in ("timeout", "cpu_limit"), res
    assert raw.run("while True:\n    pass").status == "cpu_limit"
