"""Text prompts through a chat template: when they are wrapped, with which system prompt."""
from __future__ import annotations

import pytest

from grpokit.model.policy import create_tiny, encode_prompts, render_prompt, uses_chat_template
from grpokit.tasks.formats import FINAL_ANSWER_FORMAT, resolve_system_prompt, task_system_prompt

# A ChatML-style template like an instruct model's (SmolLM2, Qwen), with a default system turn.
CHATML = ("{% for m in messages %}{% if loop.first and m['role'] != 'system' %}{{ '<s>default</s>' }}{% endif %}"
          "{{ '<' + m['role'] + '>' + m['content'] + '</' + m['role'] + '>' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<assistant>' }}{% endif %}")


@pytest.fixture(scope="module")
def char_tok():
    return create_tiny("tiny:xs", [])[1]


@pytest.fixture()
def chat_tok():
    tok = create_tiny("tiny:xs", [])[1]
    tok.chat_template = CHATML
    return tok


def test_text_is_wrapped_as_a_user_message_with_the_system_prompt(chat_tok):
    assert render_prompt(chat_tok, "What is 2+3?", "Answer after ####.") == \
        "<system>Answer after ####.</system><user>What is 2+3?</user><assistant>"


def test_text_without_system_prompt_keeps_the_templates_default(chat_tok):
    assert render_prompt(chat_tok, "Hi", None) == "<s>default</s><user>Hi</user><assistant>"


def test_off_keeps_text_as_it_is(chat_tok):
    assert render_prompt(chat_tok, "Hi", "sys", chat_template="off") == "Hi"
    assert encode_prompts(chat_tok, ["Hi"], chat_template="off") == [chat_tok("Hi")["input_ids"]]


def test_encoded_prompt_is_the_rendered_text_without_extra_special_tokens(chat_tok):
    # The template writes its own markers; the tokenizer must not add a BOS/EOS on top.
    want = chat_tok("<s>default</s><user>Hi</user><assistant>", add_special_tokens=False)["input_ids"]
    assert encode_prompts(chat_tok, ["Hi"]) == [want]


def test_chat_messages_keep_their_own_system_message(chat_tok):
    msgs = [{"role": "system", "content": "mine"}, {"role": "user", "content": "q"}]
    assert render_prompt(chat_tok, msgs, "task's") == "<system>mine</system><user>q</user><assistant>"


def test_tiny_char_tokenizer_leaves_text_unchanged(char_tok):
    # Its template renders message prompts only; text prompts stay exactly as before.
    assert not uses_chat_template(char_tok, "Compute 1+2.")
    assert render_prompt(char_tok, "Compute 1+2.", FINAL_ANSWER_FORMAT) == "Compute 1+2."
    assert encode_prompts(char_tok, ["Compute 1+2."], system_prompt="x") == [char_tok("Compute 1+2.")["input_ids"]]
    # ...unless asked: "on" wraps text in the char template too
    assert render_prompt(char_tok, "q", "s", chat_template="on") == "<|system|>s\n<|user|>q\n<|assistant|>"


def test_on_without_a_template_and_unknown_modes_are_errors(char_tok):
    bare = create_tiny("tiny:xs", [])[1]
    bare.chat_template = None
    with pytest.raises(ValueError, match="chat_template=on but the tokenizer has no chat template"):
        render_prompt(bare, "q", chat_template="on")
    assert render_prompt(bare, "q", "sys") == "q"  # auto: nothing to wrap with
    with pytest.raises(ValueError, match="data.chat_template: expected one of auto, on, off, got 'yes'"):
        render_prompt(char_tok, "q", chat_template="yes")


@pytest.mark.parametrize("configured, spec, expected", [
    (None, "task:gsm8k", FINAL_ANSWER_FORMAT),
    (None, "task:gsm8k:test", FINAL_ANSWER_FORMAT),
    (None, "gsm8k:/data/test.jsonl", FINAL_ANSWER_FORMAT),
    (None, "task:arithmetic", FINAL_ANSWER_FORMAT),
    (None, "task:search_qa", None),  # a task without one
    (None, "prompts.jsonl", None),  # a data file: no task format known
    ("Be brief.", "task:gsm8k", "Be brief."),  # the recipe's wins
    ("", "task:gsm8k", None),  # explicitly none
])
def test_resolve_system_prompt(configured, spec, expected):
    assert resolve_system_prompt(configured, spec) == expected


def test_gsm8k_format_names_the_marker_the_reward_reads():
    from grpokit.rewards.parsing import extract_answer

    assert "####" in task_system_prompt("task:gsm8k")
    assert extract_answer(FINAL_ANSWER_FORMAT + "\n2+3=5\n#### 5") == "5"
