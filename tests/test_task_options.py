"""Task options in data specs: task:NAME[:SPLIT][?key=value&...]."""
import pytest

from grpokit.build import default_eval_spec, task_name
from grpokit.config.schema import TrainConfig
from grpokit.config import load_config, validate
from grpokit.tasks import get_task, split_task_spec, task_spec
from grpokit.tasks.data import load_prompts
from grpokit.tasks.formats import task_system_prompt


def test_spec_parts_and_round_trip():
    assert split_task_spec("task:mixture") == ("mixture", "")
    assert split_task_spec("task:mixture:test") == ("mixture", "test")
    assert split_task_spec("task:mixture:test?max_ops=3&gsm8k_share=0") == ("mixture?max_ops=3&gsm8k_share=0", "test")
    assert task_spec("mixture?max_ops=3", "test") == "task:mixture:test?max_ops=3"
    assert task_name("task:mixture?max_ops=3") == "mixture?max_ops=3" and task_name("data.jsonl") is None
    assert default_eval_spec("task:mixture?max_ops=3") == "task:mixture:test?max_ops=3"
    assert task_system_prompt("task:arithmetic:test?max_value=50") == task_system_prompt("task:arithmetic")


def test_options_reach_the_task_with_their_types():
    t = get_task("mixture?min_ops=4&max_ops=6&gsm8k_share=0&train_size=50")
    assert (t.min_ops, t.max_ops, t.gsm8k_share, t.train_size) == (4, 6, 0.0, 50)
    rows = load_prompts("task:mixture:test?min_ops=2&max_ops=2&gsm8k_share=0", split="test", n=20)
    assert {r.fields["difficulty"] for r in rows} == {2} and {r.fields["family"] for r in rows} == {"arithmetic"}
    # without options: the defaults
    assert {r.fields["difficulty"] for r in load_prompts("task:mixture:test", split="test", n=40)} > {2}


@pytest.mark.parametrize("spec, message", [
    ("mixture?max_opz=3", "no option 'max_opz'; options: gsm8k_share, min_ops, max_ops"),
    ("mixture?max_ops=three", "option max_ops='three' is not an integer"),
    ("mixture?max_ops", "option 'max_ops' needs a value"),
    ("mixture?min_ops=5&max_ops=3", "expected 1 <= min_ops <= max_ops"),
])
def test_bad_options_are_one_line(spec, message):
    with pytest.raises(ValueError, match="^.*$") as e:
        get_task(spec)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_validate_names_the_key_and_the_option(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(TrainConfig, None, ["model.name_or_path=tiny:xs", "data.train=task:mixture?max_opz=3"])
    problems = validate(cfg)
    assert any(p.startswith("data.train: task 'task:mixture?max_opz=3': no option 'max_opz'") for p in problems), problems
    cfg = load_config(TrainConfig, None, ["model.name_or_path=tiny:xs", "data.train=task:mixture?min_ops=5&max_ops=3"])
    assert any(p.startswith("data.train: mixture task: expected 1 <= min_ops <= max_ops") for p in validate(cfg))
    cfg = load_config(TrainConfig, None, ["model.name_or_path=tiny:xs", "data.train=task:mixture?max_ops=3&gsm8k_share=0"])
    assert not [p for p in validate(cfg) if p.startswith("data.train")]
