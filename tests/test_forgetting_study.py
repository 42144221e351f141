"""`grpokit study forgetting`: the table by hand, and a missing stage-1 model named."""
import pytest

from grpokit.demos.forgetting import ForgettingSettings, markdown, run_pair


def _r(name, seed, before_a, after_a, before_b=0.1, after_b=0.3):
    return {"strategy": name, "seed": seed, "cold_a": 0.2, "before_a": before_a, "after_a": after_a,
            "before_b": before_b, "after_b": after_b}


def test_table_by_hand():
    results = [_r("grpo", 0, 0.40, 0.30), _r("grpo", 1, 0.36, 0.32),
               _r("shrink", 0, 0.42, 0.38), _r("shrink", 1, 0.34, 0.34, after_b=0.5)]
    md = markdown(results, ForgettingSettings(task_b="mixture?max_ops=1"), "arithmetic")
    # grpo: A 38.0 -> 31.0, forgetting (.10 + .04) / 2 = +7.0; B .1 -> .3
    assert "| grpo | 2 | 20.0 | 38.0 | 31.0 | +7.0 | 10.0 | 30.0 | - |" in md
    # shrink: drops .04 and .00; minus grpo's: -.06 and -.04; mean -.05, se = stdev / sqrt 2 = .01,
    # t(df 1) 12.706 -> [-17.7, +7.7]
    assert "| shrink | 2 | 20.0 | 38.0 | 36.0 | +2.0 | 10.0 | 40.0 | -5.0 [-17.7, +7.7] (-6.0, -4.0) |" in md


def test_missing_stage_one_model_is_named(tmp_path):
    f = ForgettingSettings(study=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"seed0/grpo/model: no stage-1 model"):
        run_pair(f, "arithmetic", {}, 0, "grpo", tmp_path / "out")


def test_report_only_gathers_finished_pairs_without_training(tmp_path):
    import json

    from grpokit.demos.forgetting import study_forgetting

    study = tmp_path / "study"
    study.mkdir()
    (study / "study.json").write_text(json.dumps({"settings": {"task": "arithmetic"}}))
    out = tmp_path / "out"
    (out / "seed0" / "grpo").mkdir(parents=True)
    (out / "seed0" / "grpo" / "result.json").write_text(json.dumps(_r("grpo", 0, 0.40, 0.30)))
    res = study_forgetting(ForgettingSettings(study=str(study)), [0, 1], ["grpo", "shrink"], out, report_only=True)
    assert [(r["strategy"], r["seed"]) for r in res["results"]] == [("grpo", 0)]  # nothing trained for the rest
    assert "| grpo | 1 | 20.0 | 40.0 | 30.0 | +10.0 |" in (out / "forgetting.md").read_text()
