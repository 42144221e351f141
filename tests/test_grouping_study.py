"""The grouping study's bookkeeping (no training): samples to reach a target, the table."""
import statistics

import pytest

from grpokit.demos.study import STRATEGIES, StudySettings
from grpokit.demos.study_cli import main
from grpokit.demos.study_table import above_cold, markdown, samples_to_reach, summarise


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
    # seed 1 has a cold start but no runs yet: not counted as a seed where GRPO failed
    table = markdown(rows, StudySettings(steps=1, prompts=4, generations=4), {0: 0.2, 1: 0.2}, [0, 1], [], results)
    assert "1 of 1 seeds are left out of the comparison: GRPO did not end above" in table
    assert "1 of 2 seeds have no finished GRPO run yet." in table


def test_seed_where_grpo_gain_is_within_noise_is_left_out():
    # cold 4.0%, GRPO 5.0% on 1,000 problems: se = sqrt((.04*.96 + .05*.95) / 1000) = .00927,
    # z = .01 / .00927 = 1.08 < 1.96: no target. At 6.0%: se = .00974, z = 2.05: a target.
    assert above_cold(0.05, 0.04, 1000) is False
    assert above_cold(0.06, 0.04, 1000) is True
    assert above_cold(0.05, 0.04, 0) is True  # no n: simply above
    results = [{"strategy": "grpo", "seed": 0, "curve": [[16, 0.05]]},
               {"strategy": "shrink", "seed": 0, "curve": [[8, 0.05], [16, 0.05]]},
               {"strategy": "grpo", "seed": 1, "curve": [[16, 0.06]]},
               {"strategy": "shrink", "seed": 1, "curve": [[8, 0.06], [16, 0.06]]}]
    rows = {r["strategy"]: r for r in summarise(results, {0: 0.04, 1: 0.04}, 16, 1000)}
    assert rows["shrink"]["compared"] == 1 and rows["shrink"]["samples_to_grpo_final"] == 8
    table = markdown(list(rows.values()), StudySettings(steps=1, prompts=4, generations=4, eval_size=1000),
                     {0: 0.04, 1: 0.04}, [0, 1], [], results)
    assert "1 of 2 seeds are left out of the comparison: GRPO did not end above its cold-start accuracy there " \
           "by more than 1.96 standard errors (1000 problems each)" in table
    assert "in every seed with a target (1 of 2). Met by: shrink." in table


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


def test_paired_ci_by_hand():
    from grpokit.demos.study_table import paired_ci

    # mean .01; sd = sqrt((0 + .02^2 + .02^2 + .01^2 + .01^2) / 4) = sqrt(.00025); se = sd / sqrt(5)
    # = .0070711; t(.975, df 4) = 2.776 -> half width .019629
    mean, lo, hi = paired_ci([0.01, 0.03, -0.01, 0.02, 0.0])
    assert (mean, lo, hi) == pytest.approx((0.01, 0.01 - 0.019629, 0.01 + 0.019629), abs=1e-6)
    # df 13 is not in the table: the next lower df (12, t 2.179) gives a wider interval
    diffs = [0.0, 0.1] * 7
    half = 2.179 * statistics.stdev(diffs) / 14 ** 0.5
    assert paired_ci(diffs)[2] == pytest.approx(0.05 + half)
    assert paired_ci([0.3]) is None


def test_paired_differences_by_hand():
    from grpokit.demos.study_table import accuracy_at, paired, paired_markdown

    cold = {0: 0.1, 1: 0.2}
    assert accuracy_at([[10, 0.3], [20, 0.4]], 15, 0.1) == 0.3
    assert accuracy_at([[10, 0.3], [20, 0.4]], 5, 0.1) == 0.1  # nothing measured yet: the cold start
    results = [
        {"strategy": "grpo", "seed": 0, "curve": [[50, 0.3], [100, 0.4]], "pass_at": {"1": 0.3, "8": 0.6}, "pass_k": 8},
        {"strategy": "grpo", "seed": 1, "curve": [[50, 0.4], [100, 0.5]], "pass_at": {"1": 0.4, "8": 0.7}, "pass_k": 8},
        # 60% of the budget 100 = 60: the evaluations at 30 and 60 count, the one at 102 (a step's overshoot) not
        {"strategy": "dynamic", "seed": 0, "curve": [[30, 0.35], [60, 0.42], [102, 0.45]],
         "pass_at": {"1": 0.35, "8": 0.62}, "pass_k": 8},
        {"strategy": "dynamic", "seed": 1, "curve": [[30, 0.3], [60, 0.45], [102, 0.47]],
         "pass_at": {"1": 0.42, "8": 0.66}, "pass_k": 8},
    ]
    (row,) = paired(results, cold, 100)
    assert row["seeds"] == [0, 1]
    assert row["final"] == pytest.approx([0.05, -0.03])
    assert row["at_share"] == pytest.approx([0.02, -0.05])
    assert row["pass@1"] == pytest.approx([0.05, 0.02]) and row["pass@8"] == pytest.approx([0.02, -0.04])
    table = "\n".join(paired_markdown([row]))
    # final: mean .01, se = stdev(.05, -.03) / sqrt 2 = .04, t(df 1) 12.706 -> [-49.8, +51.8] points
    assert "| dynamic | +1.0 [-49.8, +51.8] (+5.0, -3.0) |" in table
    assert "pass@8 (final model, sampled)" in table


def test_dynamic_sampling_is_a_study_strategy():
    assert STRATEGIES["dynamic"] == (["algorithm.dynamic_sampling=true"], 1.0)


def test_signal_stats_by_hand():
    from grpokit.demos.study import signal_stats

    rows = [{"trained_rows": 0, "accuracy": 0.0, "completions_total": 16},
            {"trained_rows": 8, "accuracy": 0.0, "completions_total": 32},  # a batch-level baseline: rows, no answer
            {"trained_rows": 4, "accuracy": 0.25, "completions_total": 48},
            {"trained_rows": 16, "accuracy": 0.5, "completions_total": 64}]  # beyond the budget of 48: not counted
    got = signal_stats(rows, per_step=16, budget=48)
    assert got == pytest.approx({"steps_with_a_right_answer": 1 / 3, "steps_with_signal": 2 / 3,
                                 "trained_row_share": 12 / 48})
    # dynamic sampling: 20 completions sampled in two steps (some dropped), 12 rows trained
    dyn = [{"trained_rows": 4, "accuracy": 0.5, "completions_total": 12},
           {"trained_rows": 8, "accuracy": 0.5, "completions_total": 20}]
    assert signal_stats(dyn, per_step=8, budget=16)["trained_row_share"] == pytest.approx(12 / 20)
    assert signal_stats([], 16, 48) == {}


def test_first_significant_gain_by_hand():
    from grpokit.demos.study_table import first_significant_gain, signal_markdown

    # n = 1000, cold .05: at .07, se = sqrt((.05*.95 + .07*.93) / 1000) = .010583, z = 1.89 (not yet);
    # at .075, se = .010818, z = 2.31
    curve = [[100, 0.06], [200, 0.07], [300, 0.075], [400, 0.2]]
    assert first_significant_gain(curve, 0.05, 1000) == 300
    assert first_significant_gain(curve, 0.05, 100) == 400  # 100 problems: .075 is noise (z 0.73)
    assert first_significant_gain([[100, 0.04]], 0.05, 1000) is None
    results = [{"strategy": "grpo", "seed": 0, "curve": curve,
                "signal": {"steps_with_a_right_answer": 0.5, "steps_with_signal": 0.75, "trained_row_share": 0.2}},
               {"strategy": "grpo", "seed": 1, "curve": [[100, 0.05]],
                "signal": {"steps_with_a_right_answer": 0.3, "steps_with_signal": 0.25, "trained_row_share": 0.1}}]
    table = "\n".join(signal_markdown(results, {0: 0.05, 1: 0.05}, 1000, 400))
    assert "| grpo | 40% | 50% | 0.15 | 300 (75% of the budget; 1/2) |" in table


def test_stability_by_hand():
    from grpokit.demos.study_table import collapsed, stability_markdown

    assert collapsed([[1, 0.3], [2, 0.1], [3, 0.15]], 0.2)
    assert not collapsed([[1, 0.1], [2, 0.1], [3, 0.25]], 0.2)  # recovered at the end
    assert not collapsed([[1, 0.1]], 0.2)  # one evaluation is not "stayed there"
    results = [{"strategy": "grpo", "seed": 0, "curve": [[1, 0.3], [2, 0.4]]},
               {"strategy": "grpo", "seed": 1, "curve": [[1, 0.1], [2, 0.2]]},
               {"strategy": "grpo", "seed": 2, "curve": [[1, 0.2], [2, 0.3]]}]
    table = "\n".join(stability_markdown(results, {0: 0.25, 1: 0.25, 2: 0.2}))
    # finals .4 .2 .3: sd .1; worst change .2 - .25 = -.05; seed 1 collapsed (.1 and .2 below .25)
    assert "| grpo | 3 | 10.0 (20.0-40.0) | -5.0 | 1/3 (seeds 1) |" in table


def test_the_study_cold_start_keeps_its_own_stop_rule_and_cap():
    # The study's cold start is the demo's stage 1 with the settings docs/grouping.md measured
    # (20,000 traces, one probe check of 100 every 50 steps, cap 2,200), not the demo's
    # current fixed 1,000 steps on 1,000 traces.
    c = StudySettings(cold_stop=0.05).cold_settings()
    assert (c.sft_traces, c.sft_max_steps, c.sft_eval_every, c.sft_probe_size) == (20000, 2200, 50, 100)
    assert (c.sft_stop_at, c.sft_stop_window, c.control) == (0.05, 1, False)
