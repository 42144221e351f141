"""Rewards as text -> number tables, and RewardSet's combination and error handling."""
from __future__ import annotations

import time

import pytest
import torch

from grpokit.rewards import REWARDS, RewardError, RewardSet, reward
from grpokit.rewards.format import format as format_reward
from grpokit.rewards.format import stated_answer
from grpokit.rewards.length import exact_match, f1, length, normalize_answer
from grpokit.rewards.math import accuracy
from grpokit.rewards.parsing import (evaluate_text, extract_answer, find_equations, parse_number,
                                     think_section)
from grpokit.rewards.steps import reasoning_steps
from grpokit.types import RewardOutput

# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text, expected", [
    ("<think>x</think><answer> 42 </answer>", "42"),
    ("<answer>1</answer> then <answer>2</answer>", "2"),  # the last one
    ("so 16 - 3 = 13\n#### 1,234\n", "1,234"),
    ("#### 5\n#### 7", "7"),
    ("the answer is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
    ("\\boxed{1} and \\boxed{2}", "2"),
    ("<answer>18", None),  # unclosed: truncated generation
    ("the answer is 18", "18"),  # an explicit "answer is" statement
    ("I think it is 18", None),  # no last-number fallback by default
    ("\\boxed{unclosed", None),
    ("", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("1,234", 1234.0), ("$5", 5.0), ("-3.5", -3.5), ("12.", 12.0), ("3/4", 0.75), ("-3/4", -0.75),
    ("18 apples.", 18.0), ("50%", 50.0), ("\\boxed{18}", 18.0), ("$18$", 18.0), ("\\frac{3}{4}", 0.75),
    ("-$5", -5.0), ("$-5", -5.0), ("18.00", 18.0), ("$1,234.50", 1234.5), ("1e3", 1000.0), ("−7", -7.0),
    (7, 7.0), (2.5, 2.5),
    ("1,2", None), ("1 3/4", None), ("the 5", None), ("7/0", None), ("abc", None), ("", None),
    ("3 or 4", None), (None, None), (float("nan"), None),
])
def test_parse_number(text, expected):
    assert parse_number(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("<think>plan</think><answer>1</answer>", "plan"),
    ("plan</think><answer>1</answer>", "plan"),  # template opened the tag
    ("<think>cut off mid", "cut off mid"),
    ("<answer>1</answer>", None),
])
def test_think_section(text, expected):
    assert think_section(text) == expected


@pytest.mark.parametrize("expr, expected", [
    ("12 x 2", 24.0), ("12×2", 24.0), ("(3+4)*5", 35.0), ("2+3*4", 14.0), ("10-4-3", 3.0), ("8/4/2", 1.0),
    ("-3+5", 2.0), ("5--3", 8.0), ("1,000+200", 1200.0), ("$12*2", 24.0), ("2(3+4)", 14.0),
    ("1/0", None), ("(3+4", None), ("3+", None), ("2 apples", None), ("", None), ("3 4", None),
])
def test_evaluate_text(expr, expected):
    assert evaluate_text(expr) == expected


@pytest.mark.parametrize("text, expected", [
    ("48/2 = 24", [("48/2", "24", True)]),
    ("she earned 0.2 x 50 = $10.", [("0.2*50", "10", True)]),
    ("3+4+5=12", [("3+4+5", "12", True)]),
    ("(3+4)*5 = 36", [("(3+4)*5", "36", False)]),
    ("1,000 + 200 = 1,200", [("1000+200", "1200", True)]),
    ("37+48=85 85-12=73", [("37+48", "85", True), ("85-12", "73", True)]),
    ("2*3+4 = 6+4 = 10", [("2*3+4", "6+4", True), ("6+4", "10", True)]),
    ("Step 1. 5+3=8, then", [("5+3", "8", True)]),
    ("$12 \\times 2 = \\$24", [("12*2", "24", True)]),
    # GSM8K: the annotation and the prose around it are one step
    ("Natalia sold 48/2 = <<48/2=24>>24 clips.", [("48/2", "24", True)]),
    ("Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.", [("12/60", "0.2", True)]),
    ("40 items - 4 items = <<40-4=36>>36 items", [("40-4", "36", True)]),
    ("<<3+4=8>>", [("3+4", "8", False)]),
    # not checkable: no operator, algebra, left side cut off by words, a dash in prose
    ("x = 5 and 24 = 24", []), ("3x + 7 = 22", []), ("2 pounds * 1/3 = 2/3 pounds", []),
    ("120 books - 20 - 25 = 75", []), ("5 / 0 = 3", []), ("no equations here", []),
])
def test_find_equations(text, expected):
    assert [(e.expr, e.result, e.holds) for e in find_equations(text)] == expected


# ----------------------------------------------------------------------------- accuracy

@pytest.mark.parametrize("completion, gold, expected", [
    ("<answer>18</answer>", "18", 1.0),
    ("<answer>1,234</answer>", "1234", 1.0),
    ("<answer>1234</answer>", "1,234", 1.0),  # GSM8K-style gold with a comma
    ("<answer>$18</answer>", "18", 1.0),
    ("<answer>18.00</answer>", 18, 1.0),
    ("<answer>18 dollars.</answer>", "18", 1.0),
    ("<answer>\\boxed{18}</answer>", "18", 1.0),
    ("The final answer is \\boxed{18}", "18", 1.0),  # boxed without tags
    ("work...\n#### 18", "18", 1.0),  # GSM8K marker without tags
    ("<answer>3/4</answer>", "0.75", 1.0),
    ("<answer>\\frac{3}{4}</answer>", "3/4", 1.0),
    ("<answer>0.75</answer>", "\\frac{3}{4}", 1.0),
    ("<answer>-5</answer>", -5, 1.0),
    ("<answer>18</answer>", 18.0000001, 1.0),  # within 1e-6 relative
    ("<answer>18.01</answer>", "18", 0.0),
    ("<answer>17</answer>", "18", 0.0),
    ("<answer></answer>", "18", 0.0),
    ("<answer>18", "18", 0.0),  # unclosed tag: no answer
    ("I think it is 18", "18", 0.0),  # no answer form: 0 (no last-number fallback)
    ("The answer is 18.", "18", 1.0),  # stated in words
    ("<answer>\\sqrt{2}</answer>", "\\sqrt{2}", 1.0),  # symbolic, via math_verify
    ("<answer>x^2+1</answer>", "1+x^2", 1.0),
    ("<answer>\\frac{\\pi}{2}</answer>", "\\pi/2", 1.0),
    ("<answer>banana</answer>", "18", 0.0),
    ("<answer>}{\\frac{</answer>", "\\sqrt{2}", 0.0),  # garbage never raises
    ("<answer>72</answer>", "Natalia sold 48/2 = 24 clips.\n#### 72", 1.0),  # raw GSM8K rationale as gold
])
def test_accuracy(completion, gold, expected):
    assert accuracy(completion, answer=gold) == expected


# The forms an instruct model writes, in precedence order (extract_answer's docstring):
# <answer> tags > "####" > \\boxed > "answer is" phrase > (last_number=True only) last number.
@pytest.mark.parametrize("text, strict, lenient", [
    ("<answer>18</answer> #### 17 \\boxed{16} The answer is 15. 14", "18", "18"),  # tags win
    ("#### 17\n\\boxed{16} The answer is 15. 14", "17", "17"),  # then the marker
    ("\\boxed{16} The answer is 15. 14", "16", "16"),  # then boxed
    ("The answer is 15. Check: 14", "15", "15"),  # then the phrase
    ("17 + 21 = 38", None, "38"),  # then the last number, only when asked
    ("Final answer: $1,080", "$1,080", "$1,080"),
    ("So the answer is -5.", "-5", "-5"),
    ("The answer is **42**.", "42", "42"),
    ("The answer is: 7 apples", "7", "7"),
    ("She has 3.5 cups left.", None, "3.5"),  # a sentence's period is not a decimal point
    ("40 - 5", None, "5"),  # a dash with spaces is subtraction, not a sign
    ("x = -5.", None, "-5"),
    ("the answer is unclear", None, None),  # the phrase needs a number
    ("<answer>18", None, "18"),  # unclosed tag: no answer, but its number is the last one
    ("no numbers at all", None, None),
    ("", None, None),
])
def test_answer_forms_precedence(text, strict, lenient):
    assert extract_answer(text) == strict
    assert extract_answer(text, last_number=True) == lenient


@pytest.mark.parametrize("completion, last_number, expected", [
    ("17 + 21 = 38", False, 0.0),
    ("17 + 21 = 38", True, 1.0),
    ("17 + 21 = 38, so 38 apples.", True, 1.0),
    ("38 = 17 + 21", True, 0.0),  # the last number is 21: an intermediate value does not count
    ("#### 37\n17 + 21 = 38", True, 0.0),  # a stated answer beats the last number
    ("The answer is $38.", False, 1.0),
    ("The answer is 38.5", False, 0.0),
])
def test_accuracy_last_number_option(completion, last_number, expected):
    assert accuracy(completion, answer="38", last_number=last_number) == expected


def test_accuracy_without_answer_field_names_it():
    with pytest.raises(ValueError, match="'answer'.*steps"):
        accuracy("<answer>1</answer>", steps=["1+0=1"])


# ----------------------------------------------------------------------------- format

# think_ok: a good think block directly followed by <answer>; the score needs answer_ok.
@pytest.mark.parametrize("text, score, think_ok, answer_ok", [
    ("<think>add them</think><answer>5</answer>", 1.0, 1, 1),
    ("  <think>add\nthem</think>\n\n<answer> 5 </answer>\n", 1.0, 1, 1),
    ("<answer>5</answer>", 0.5, 0, 1),  # think missing
    ("<think></think><answer>5</answer>", 0.5, 0, 1),  # empty reasoning
    ("<think>a</think>junk<answer>5</answer>", 0.5, 0, 1),  # text between blocks
    ("preamble <think>a</think><answer>5</answer>", 0.5, 0, 1),  # text before think
    ("<think>a<answer>5</answer>", 0.5, 0, 1),  # unclosed think
    ("<think>a</think><think>b</think><answer>5</answer>", 0.5, 0, 1),  # think twice
    ("</think>a<think><answer>5</answer>", 0.5, 0, 1),  # think tags out of order
    ("<think>a</think><answer>5", 0.0, 1, 0),  # unclosed answer
    ("<think>a</think><answer> </answer>", 0.0, 1, 0),  # blank answer
    ("<think>a</think><answer>5</answer> trailing", 0.0, 1, 0),  # text after answer
    ("<think>a</think></answer>5<answer>", 0.0, 0, 0),  # answer tags out of order
    ("<answer>5</answer><think>a</think>", 0.0, 0, 0),  # blocks out of order
    ("<think>a</think><answer>1</answer><answer>2</answer>", 0.0, 1, 0),  # answer twice
    ("just text", 0.0, 0, 0),
    ("", 0.0, 0, 0),
])
def test_format(text, score, think_ok, answer_ok):
    out = format_reward(text)
    assert isinstance(out, RewardOutput)
    assert (out.score, out.parts["think_ok"], out.parts["answer_ok"]) == (score, think_ok, answer_ok)


@pytest.mark.parametrize("text, score", [
    ("<think>add them</think><answer>5</answer>", 1.0),
    ("<answer>5</answer>", 0.0),  # think missing: open-r1 / R1 score 0
    ("<think></think><answer>5</answer>", 0.0),
    ("just text", 0.0),
])
def test_format_answer_only_zero_requires_the_think_block(text, score):
    assert format_reward(text, answer_only=0.0).score == score


def test_format_answer_only_reaches_it_through_recipe_kwargs():
    from grpokit.rewards import RewardSet

    scores = RewardSet([("format", 1.0, {"answer_only": 0.25})]).score(["p"], ["<answer>5</answer>"], [{}])
    assert scores.total.tolist() == [0.25]


@pytest.mark.parametrize("text, score", [
    ("12 + 7 = 19. The answer is 19.", 1.0),
    ("The answer is 5", 1.0),  # a wrong value still states an answer: accuracy judges it
    ("so 3 + 4 = 7\n#### 7", 1.0),
    ("\\boxed{42}", 1.0),
    ("<think>x</think><answer>8</answer>", 1.0),
    ("17 + 21 = 38", 0.0),  # a last number is not a statement
    ("#### ", 0.0),  # a marker without an answer
    ("<answer>5", 0.0),  # unclosed tag
    ("", 0.0),
])
def test_stated_answer(text, score):
    assert stated_answer(text) == score
    assert RewardSet([("stated_answer", 0.5, {})]).score(["p"], [text], [{}]).total.tolist() == [0.5 * score]


# ----------------------------------------------------------------------------- steps

@pytest.mark.parametrize("text, steps, score, written, correct", [
    ("<think>37+48=85 85-12=73</think><answer>73</answer>", None, 1.0, 2, 2),
    ("<think>37+48=85 85-12=70</think><answer>70</answer>", None, 0.5, 2, 1),
    ("<think>37+48=86 86-12=75</think><answer>75</answer>", None, 0.0, 2, 0),
    ("<think>no arithmetic</think><answer>73</answer>", None, 0.0, 0, 0),
    ("<think>I guess</think> 99+1=100 outside the think block", None, 0.0, 0, 0),
    ("no think tag: 2 x 3 = 6 and 6 + 1 = 8", None, 0.5, 2, 1),  # whole text
    # with gold steps: the fraction of gold results reached by correct equations, in order
    ("<think>37+48=85 85-12=73</think>", ["37+48=85", "85-12=73"], 1.0, 2, 2),
    ("<think>37+48=85 85-12=73</think>", [85, 73], 1.0, 2, 2),
    ("<think>37+48=85 85-12=73</think>", ["<<37+48=85>>", "73"], 1.0, 2, 2),
    ("<think>37+48-12=73</think>", ["37+48=85", "85-12=73"], 0.5, 1, 1),  # skipped a step
    ("<think>37+48=85 85-12=72</think>", ["37+48=85", "85-12=73"], 0.5, 2, 1),
    ("<think>85-12=73 37+48=85</think>", ["37+48=85", "85-12=73"], 0.5, 2, 2),  # out of order
    ("<think>37+48=84 84+1=85</think>", ["37+48=85"], 1.0, 2, 1),  # 85 reached, correctly
    ("<think>5*17=85</think>", ["37+48=85"], 1.0, 1, 1),  # another correct route counts
    ("<think>1+1=2</think>", [], 1.0, 1, 1),  # empty gold list: plain correctness
    ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs.\nShe makes 9 * 2 = $<<9*2=18>>18.",
     ["16-3-4=9", "9*2=18"], 1.0, 2, 2),
])
def test_reasoning_steps(text, steps, score, written, correct):
    out = reasoning_steps(text, steps=steps)
    assert out.score == pytest.approx(score)
    assert out.parts == {"written": written, "correct": correct}


def test_reasoning_steps_bad_gold_step_is_an_error():
    with pytest.raises(ValueError, match="gold step 1 .*'eighty'"):
        reasoning_steps("<think>1+1=2</think>", steps=["1+1=2", "eighty"])
    with pytest.raises(ValueError, match="list of steps"):
        reasoning_steps("<think>1+1=2</think>", steps="1+1=2")


# ----------------------------------------------------------------------------- length and QA

@pytest.mark.parametrize("n, expected", [(0, 0.0), (50, 0.0), (75, -0.5), (99, -0.98), (100, -1.0), (150, -1.0)])
def test_length_soft_penalty(n, expected):
    assert length("a" * n, max_chars=100, buffer=50) == pytest.approx(expected)


def test_length_hard_cut_and_bad_settings():
    assert length("a" * 100, max_chars=100, buffer=0) == 0.0
    assert length("a" * 101, max_chars=100, buffer=0) == -1.0
    with pytest.raises(ValueError, match="buffer"):
        length("a", max_chars=10, buffer=20)


@pytest.mark.parametrize("completion, gold, em, f1_score", [
    ("<answer>The Eiffel Tower!</answer>", "eiffel tower", 1.0, 1.0),
    ("<answer>Paris</answer>", ["London", "paris"], 1.0, 1.0),
    ("<answer>Paris, France</answer>", "Paris", 0.0, 2 / 3),
    ("Paris", "Paris", 1.0, 1.0),  # no tag: the whole text
    ("<answer>Rome</answer>", "Paris", 0.0, 0.0),
    ("<answer>the</answer>", "a", 1.0, 1.0),  # both normalise to nothing
    ("<answer>42</answer>", 42, 1.0, 1.0),
])
def test_exact_match_and_f1(completion, gold, em, f1_score):
    assert exact_match(completion, answer=gold) == em
    assert f1(completion, answer=gold) == pytest.approx(f1_score)


def test_normalize_answer():
    assert normalize_answer("  The  Quick, brown fox. ") == "quick brown fox"


def test_qa_rewards_need_an_answer():
    with pytest.raises(ValueError, match="'answer'"):
        exact_match("x")
    with pytest.raises(ValueError, match="empty list"):
        f1("x", answer=[])


def test_builtins_are_registered():
    assert {"accuracy", "format", "reasoning_steps", "length", "exact_match", "f1"} <= set(REWARDS.names())


# ----------------------------------------------------------------------------- RewardSet

PROMPTS = ["p0", "p1", "p2"]
COMPLETIONS = ["<think>1+1=2</think><answer>2</answer>", "<answer>3</answer>", "nothing"]
FIELDS = [{"answer": "2"}, {"answer": "2"}, {"answer": "5"}]


def test_weighted_total_and_parts():
    rs = RewardSet([("accuracy", 1.0, {}), ("format", 0.5, {}), ("reasoning_steps", 0.25)])
    s = rs.score(PROMPTS, COMPLETIONS, FIELDS)
    assert rs.names == ["accuracy", "format", "reasoning_steps"]
    assert s.per_reward["accuracy"].tolist() == [1.0, 0.0, 0.0]
    assert s.per_reward["format"].tolist() == [1.0, 0.5, 0.0]
    assert s.total.tolist() == [1.0 + 0.5 + 0.25, 0.25, 0.0]
    assert s.parts["format/answer_ok"].tolist() == [1.0, 1.0, 0.0]
    assert s.parts["reasoning_steps/written"].tolist() == [1.0, 0.0, 0.0]
    assert s.not_applicable == {"accuracy": 0, "format": 0, "reasoning_steps": 0}
    assert s.total.dtype == torch.float32 and s.total.shape == (3,)


def test_kwargs_reach_the_function_and_unknown_kwargs_fail_early():
    s = RewardSet([("length", 2.0, {"max_chars": 10, "buffer": 0})]).score(PROMPTS, COMPLETIONS, FIELDS)
    assert s.total.tolist() == [-2.0, -2.0, 0.0]
    # a typo in a recipe's kwargs fails when the set is built, for functions with named
    # parameters only and for those whose catch-all is `**_` (ignored example columns)
    with pytest.raises(TypeError, match="'length' got kwargs it does not accept: max_len; it accepts: buffer, max_chars"):
        RewardSet([("length", 1.0, {"max_len": 10})])
    with pytest.raises(TypeError, match="'_strict' got kwargs it does not accept: max_len"):
        RewardSet([(_strict, 1.0, {"max_len": 1})])


def _strict(completion, *, max_chars=5, buffer=1):
    return 0.0


def test_native_function_gets_only_the_keywords_it_declares():
    seen = []

    def needs_answer(text, answer, prompt):  # positional name differs from 'completion'
        seen.append((text, answer, prompt))
        return 1

    rs = RewardSet([needs_answer])
    rs.score(["p"], ["c"], [{"answer": "a", "unused": 1, "text": "clash"}], completion_ids=[[1, 2]])
    assert seen == [("c", "a", "p")]


def test_var_keyword_function_gets_everything():
    got = {}

    def everything(completion, **kw):
        got.update(kw)
        return True

    RewardSet([(everything, 1.0, {"extra": 3})]).score(["p"], ["c"], [{"answer": "a"}], completion_ids=[[7]])
    assert got == {"answer": "a", "prompt": "p", "completion_ids": [7], "extra": 3}


def test_none_means_not_applicable():
    def only_even(completion, *, answer, **_):
        return None if int(answer) % 2 else 1.0

    s = RewardSet([(only_even, 2.0)]).score(PROMPTS, COMPLETIONS, FIELDS)
    assert s.per_reward["only_even"].tolist() == [1.0, 1.0, 0.0]
    assert s.total.tolist() == [2.0, 2.0, 0.0]
    assert s.not_applicable == {"only_even": 1}


def test_trl_style_function_is_called_once_per_batch():
    calls = []

    def trl_reward(prompts, completions, answer, completion_ids=None, **kwargs):
        calls.append((prompts, completions, answer, completion_ids, kwargs))
        return [float(c.endswith("</answer>")) for c in completions][:-1] + [None]

    s = RewardSet([(trl_reward, 1.0, {"scale": 2})]).score(PROMPTS, COMPLETIONS, FIELDS, completion_ids=[[1], [2], [3]])
    assert len(calls) == 1
    prompts, completions, answer, ids, kwargs = calls[0]
    assert (prompts, completions, answer, ids, kwargs) == (PROMPTS, COMPLETIONS, ["2", "2", "5"], [[1], [2], [3]],
                                                           {"scale": 2})
    assert s.per_reward["trl_reward"].tolist() == [1.0, 1.0, 0.0]
    assert s.not_applicable == {"trl_reward": 1}


def test_trl_style_conversational_completions():
    def chat_reward(prompts, completions, **kwargs):
        return [float(c[0]["content"] == "hi") for c in completions]

    prompts = [[{"role": "user", "content": "say hi"}]] * 2
    s = RewardSet([chat_reward]).score(prompts, ["hi", "bye"], [{}, {}])
    assert s.total.tolist() == [1.0, 0.0]


def test_duplicate_names_get_a_suffix_and_specs_resolve(tmp_path):
    f = tmp_path / "my_rewards.py"
    f.write_text("def shout(completion, **_):\n    return float(completion.isupper())\n")
    rs = RewardSet([("accuracy", 1.0), ("accuracy", 0.5), (f"{f}:shout", 1.0),
                    ("grpokit.rewards.length:f1", 1.0)])
    assert rs.names == ["accuracy", "accuracy_2", "shout", "f1"]
    s = rs.score(["p"], ["LOUD"], [{"answer": "loud"}])
    assert s.per_reward["shout"].tolist() == [1.0] and s.per_reward["f1"].tolist() == [1.0]


def test_recipe_style_items():
    from grpokit.config.schema import RewardSpec

    rs = RewardSet([RewardSpec("length", 0.5, {"max_chars": 10, "buffer": 0}), {"name": "format", "weight": 2},
                    "accuracy"])
    assert rs.weights == {"length": 0.5, "format": 2.0, "accuracy": 1.0}
    with pytest.raises(ValueError, match="expected keys name, weight, kwargs; got name, wieght"):
        RewardSet([{"name": "format", "wieght": 2}])


def test_unknown_reward_name_lists_choices():
    with pytest.raises(KeyError, match="accuracy.*did you mean 'accuracy'"):
        RewardSet([("acuracy", 1.0)])


def test_bad_weight_is_rejected():
    with pytest.raises(ValueError, match="weight"):
        RewardSet([("accuracy", float("nan"))])


def _raises(completion, **_):
    if "boom" in completion:
        raise ZeroDivisionError("division by zero")
    return 1.0


def _returns(value):
    def bad(completion, **_):
        return value if "bad" in completion else 1.0
    return bad


@pytest.mark.parametrize("fn, match", [
    (_raises, r"'_raises' raised ZeroDivisionError: division by zero \(sample 1, completion 'xx boom"),
    (_returns(float("nan")), r"'bad' returned nan as its score for sample 1; expected a finite number"),
    (_returns(float("inf")), r"'bad' returned inf .* sample 1"),
    (_returns("0.5"), r"'bad' returned a str .* sample 1; expected a float"),
    (_returns([1.0]), r"'bad' returned a list .* sample 1"),
    (_returns(RewardOutput(1.0, {"p": float("nan")})), r"'bad' returned nan as its part 'p' for sample 1"),
])
def test_broken_functions_raise_reward_error(fn, match):
    completions = ["fine", "xx boom bad " + "y" * 200]
    with pytest.raises(RewardError, match=match) as info:
        RewardSet([fn]).score(["p", "p"], completions, [{}, {}])
    assert "y" * 100 not in str(info.value)  # the excerpt is short
    if fn is _raises:
        assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_trl_function_errors():
    def wrong_count(prompts, completions, **_):
        return [1.0]

    def not_a_list(prompts, completions, **_):
        return 1.0

    def bad_item(prompts, completions, **_):
        return [1.0, "x"]

    with pytest.raises(RewardError, match="'wrong_count' .* returned 1 values for 2 completions"):
        RewardSet([wrong_count]).score(["a", "b"], ["c", "d"], [{}, {}])
    with pytest.raises(RewardError, match="'not_a_list' .* returned float"):
        RewardSet([not_a_list]).score(["a", "b"], ["c", "d"], [{}, {}])
    with pytest.raises(RewardError, match="'bad_item' returned a str .* sample 1"):
        RewardSet([bad_item]).score(["a", "b"], ["c", "d"], [{}, {}])


def test_missing_answer_field_names_the_sample():
    with pytest.raises(RewardError, match=r"'accuracy' raised ValueError.*'answer'.*sample 0"):
        RewardSet([("accuracy", 1.0)]).score(["p"], ["<answer>1</answer>"], [{"question": "q"}])


def test_mismatched_batch_lengths():
    with pytest.raises(ValueError, match="2 prompts, 1 completions"):
        RewardSet([("format", 1.0)]).score(["a", "b"], ["c"], [{}])


def test_reward_decorator_registers(monkeypatch):
    monkeypatch.setattr(REWARDS, "_items", dict(REWARDS._items))
    monkeypatch.setattr(REWARDS, "_docs", dict(REWARDS._docs))

    @reward("always_one")
    def always_one(completion, **_):
        """Always 1."""
        return 1.0

    assert REWARDS.get("always_one") is always_one and REWARDS.doc("always_one") == "Always 1."
    assert RewardSet([("always_one", 3.0)]).score(["p"], ["c"], [{}]).total.tolist() == [3.0]


def test_builtin_rewards_are_fast_enough():
    # 256 completions per step must not make reward scoring a bottleneck.
    completion = ("<think>37+48=85 85-12=73 73*2=146 146-6=140</think><answer>140</answer>")
    n = 256
    rs = RewardSet([("accuracy", 1.0), ("format", 0.2), ("reasoning_steps", 0.2), ("length", 0.1)])
    fields = [{"answer": "140", "steps": ["37+48=85", "85-12=73", "73*2=146", "146-6=140"]}] * n
    rs.score(["p"] * n, [completion] * n, fields)  # warm up
    start = time.perf_counter()
    s = rs.score(["p"] * n, [completion] * n, fields)
    elapsed = time.perf_counter() - start
    assert s.total[0].item() == pytest.approx(1.0 + 0.2 + 0.2)
    assert elapsed < 0.5, f"scoring 256 completions took {elapsed * 1000:.0f} ms"  # loose: shared CI CPUs

