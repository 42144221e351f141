from grpokit.demos.spread import PromptRate, histogram, prompt_rates, rate_bin, report


def test_rate_bins():
    assert [rate_bin(r) for r in (0.0, 0.05, 0.1, 0.125, 0.5, 0.875, 0.9, 0.95, 1.0)] == [
        "0", "(0, 10]", "(0, 10]", "(10, 30]", "(30, 50]", "(70, 90]", "(70, 90]", "(90, 100)", "100"]


def test_histogram_lists_every_bin_in_order():
    assert histogram([0.0, 0.0, 0.25, 1.0]) == [("0", 2), ("(0, 10]", 0), ("(10, 30]", 1), ("(30, 50]", 0),
                                                ("(50, 70]", 0), ("(70, 90]", 0), ("(90, 100)", 0), ("100", 1)]


def test_prompt_rates_from_one_row_per_sample():
    one = {"family": "arithmetic", "difficulty": 1}
    gsm = {"family": "gsm8k", "difficulty": 7}
    rates = prompt_rates([3, 3, 3, 3, 5, 5, 5, 5], [one] * 4 + [gsm] * 4, [1, 1, 0, 1, 0, 0, 0, 0])
    assert rates == [PromptRate(3, "arithmetic", 1, 0.75), PromptRate(5, "gsm8k", 7, 0.0)]


def test_report_lines():
    rates = [PromptRate(0, "arithmetic", 1, 0.75), PromptRate(1, "arithmetic", 2, 0.25),
             PromptRate(2, "arithmetic", 10, 1.0), PromptRate(3, "gsm8k", 7, 0.0)]
    lines = report(rates, 4).splitlines()
    assert lines[0] == ("4 prompts x 4 samples; per-prompt success rate from 0% to 100%, mean 50.0%; "
                        "2 prompts (50%) between 0 and 100% (a group with signal)")
    # difficulties sort as numbers (2 before 10), families apart
    assert lines[-4:] == ["| arithmetic | 1 | 1 | 75.0% | 75% | 75% |", "| arithmetic | 2 | 1 | 25.0% | 25% | 25% |",
                          "| arithmetic | 10 | 1 | 100.0% | 100% | 100% |", "| gsm8k | 7 | 1 | 0.0% | 0% | 0% |"]


def test_from_samples_joins_the_eval_rows_with_the_task_fields(tmp_path):
    import json

    from grpokit.demos.spread import from_samples

    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps({"id": i, "reward/accuracy": float(i == 1)}) + "\n" for i in range(3)))
    rates = from_samples(str(path), "task:arithmetic")  # fields without family/difficulty read as "-"
    assert [(r.id, r.family, r.difficulty, r.rate) for r in rates] == [(0, "-", "-", 0.0), (1, "-", "-", 1.0),
                                                                     (2, "-", "-", 0.0)]


def test_report_of_one_sample_per_prompt_counts_right_answers():
    rates = [PromptRate(0, "arithmetic", 1, 1.0), PromptRate(1, "arithmetic", 1, 0.0), PromptRate(2, "gsm8k", 7, 0.0)]
    assert report(rates, 1).splitlines()[-3:] == ["|---|---|---|---|---|", "| arithmetic | 1 | 2 | 1 | 50.0% |",
                                                  "| gsm8k | 7 | 1 | 0 | 0.0% |"]
