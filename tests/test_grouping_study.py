"""The grouping study's bookkeeping (no training): samples to reach a target, the table."""
import pytest

from grpokit.demos.study import STRATEGIES, StudySettings, main, markdown, samples_to_reach, summarise


def test_samples_to_reach():
    curve = [(0, 0.30), (256, 0.35), (512, 0.42), (768, 0.40)]
    assert samples_to_reach(curve, 0.42) == 512
    assert samples_to_reach(curve, 0.35) == 256
    assert samples_to_reach(curve, 0.5) is None


def test_summary_and_table_by_hand():
    s = StudySettings(steps=4, prompts=4, generations=4, eval_every=1)  # budget 64 completions
    results = [
        {"strategy": "grpo", "seed": 0, "curve": [[16, 0.2], [32, 0.3], [48, 0.3], [64, 0.4]]},
        {"strategy": "grpo", "seed": 1, "curve": [[16, 0.3], [32, 0.5], [48, 0.4], [64, 0.5]]},
        {"strategy": "budget-0.6", "seed": 0, "curve": [[10, 0.3], [20, 0.4], [30, 0.45], [40, 0.45]]},
        {"strategy": "budget-0.6", "seed": 1, "curve": [[10, 0.2], [20, 0.2], [30, 0.5], [40, 0.5]]},
    ]
    cold = {0: 0.1, 1: 0.1}
    rows = {r["strategy"]: r for r in summarise(results, cold, s.budget)}
    assert rows["grpo"]["samples_to_grpo_final"] == pytest.approx((64 + 32) / 2)
    assert rows["budget-0.6"]["samples_to_grpo_final"] == pytest.approx((20 + 30) / 2)
    assert rows["budget-0.6"]["share_of_grpo_budget"] == pytest.approx(25 / 64)
    assert rows["budget-0.6"]["final_mean"] == pytest.approx(0.475)
    table = markdown(list(rows.values()), s, cold, [0, 1])
    # mean curves, (0, cold) first: GRPO (0, .1) (16, .25) (32, .4) (48, .35) (64, .45), target .45;
    # budget-0.6 (0, .1) (10, .25) (20, .3) (30, .475) (40, .475) reaches it at 30
    assert rows["grpo"]["mean_curve_samples"] == pytest.approx(64)
    assert rows["budget-0.6"]["mean_curve_samples"] == pytest.approx(30)
    assert rows["budget-0.6"]["mean_curve_share"] == pytest.approx(30 / 64)
    # area under the curve per evaluation, cold start included: seed 0 (.1+.3+.4+.45+.45)/5 - (.1+.2+.3+.3+.4)/5
    # = .34 - .26 = .08, seed 1 (.1+.2+.2+.5+.5)/5 - (.1+.3+.5+.4+.5)/5 = .30 - .36 = -.06;
    # mean .01, se = stdev(.08, -.06) / sqrt(2) = .07
    assert rows["budget-0.6"]["auc_lift"] == pytest.approx(0.01)
    assert rows["budget-0.6"]["auc_lift_se"] == pytest.approx(0.07)
    assert rows["grpo"]["auc_lift"] == pytest.approx(0.0)
    assert "| budget-0.6 | 2 | 47.5% +- 3.5 | 25 | 39% | 2/2 | 30 (47%) | +1.0 +- 7.0 |" in table
    assert "Met by: budget-0.6. On the mean curve over seeds: budget-0.6." in table


def test_seed_where_grpo_did_not_improve_is_left_out():
    results = [{"strategy": "grpo", "seed": 0, "curve": [[16, 0.1]]},
               {"strategy": "shrink", "seed": 0, "curve": [[16, 0.1]]}]
    rows = summarise(results, {0: 0.2}, 16)
    assert all(r["compared"] == 0 and r["samples_to_grpo_final"] is None for r in rows)


def test_study_cli_rejects_unknown_strategy(capsys):
    with pytest.raises(SystemExit):
        main(["grouping", "--strategies", "grpo,semantik"])
    assert "valid:" in capsys.readouterr().err
    assert "grpo" in STRATEGIES and "budget-0.6" in STRATEGIES


def test_report_only_summarises_finished_runs_without_training(tmp_path, capsys):
    import json

    from grpokit.demos.study import StudySettings, study_grouping

    s = StudySettings()
    for seed, cold in ((0, 0.2), (1, 0.3)):
        base = tmp_path / s.task / f"seed{seed}"
        (base / "cold_start").mkdir(parents=True)
        (base / "cold_start" / "cold_start.json").write_text(json.dumps({"model": "x", "accuracy": cold}))
        for name, final in (("grpo", cold + 0.1), ("shrink", cold + 0.12)):
            if seed == 1 and name == "shrink":
                continue  # not finished: left out, not trained
            (base / name).mkdir()
            curve = [[s.budget // 2, cold + 0.05], [s.budget, final]]
            (base / name / "result.json").write_text(json.dumps({"strategy": name, "seed": seed, "curve": curve,
                                                                  "seconds": 1.0, "steps": s.steps}))
    res = study_grouping(s, [0, 1, 2], ["grpo", "shrink"], tmp_path, report_only=True)
    out = capsys.readouterr().out
    assert "seed 2: no finished cold start, left out" in out and "shrink                 not run" in out
    rows = {r["strategy"]: r for r in res["rows"]}
    assert rows["grpo"]["seeds"] == 2 and rows["shrink"]["seeds"] == 1
    assert rows["shrink"]["samples_to_grpo_final"] == s.budget  # reaches 0.3 only at its last evaluation
    assert (tmp_path / "study.md").is_file() and (tmp_path / "study.png").is_file()
