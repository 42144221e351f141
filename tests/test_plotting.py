"""Plots are written as PNGs; missing and sparse keys are handled."""
import json
import warnings

from grpokit.logging import RunLogger
from grpokit.plotting import ema, plot_metrics, plot_stages

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def rows(n, **extra):
    out = [{"step": s, "reward": (s % 3) / 3, "accuracy": s / n} for s in range(1, n + 1)]
    for r in out:
        if r["step"] % 10 == 0:  # sparse key: only some rows
            r.update(extra)
    return out


def test_plot_metrics_png(tmp_path):
    out = plot_metrics(rows(40, eval_accuracy=0.5), tmp_path / "sub" / "curves.png",
                       keys=("reward", "eval_accuracy", "missing"), title="t")
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in out.parent.iterdir()] == ["curves.png"]  # no temp file left


def test_plot_metrics_from_file_with_nulls(tmp_path):
    with RunLogger(tmp_path, console=False) as log:
        for s in range(1, 5):
            log.log_step(s, {"reward": float("nan") if s == 2 else s})
    out = plot_metrics(tmp_path / "metrics.jsonl", tmp_path / "m.png")  # accuracy absent: skipped
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_no_key_present_still_writes(tmp_path):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = plot_metrics([{"step": 1, "x": 1}], tmp_path / "empty.png", keys=("reward",))
    assert out.read_bytes()[:8] == PNG_MAGIC and w


def test_plot_stages(tmp_path):
    sft = [{"step": s, "loss": 2 / s, "accuracy": s / 30} for s in range(1, 31)]
    out = plot_stages([("SFT", sft), ("GRPO", rows(20))], tmp_path / "stages.png",
                      keys=("loss", "reward", "accuracy"))
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_stages_beside_arms(tmp_path):
    from matplotlib.colors import to_hex

    from grpokit.plotting import plot_stages_and_arms, stages_and_arms_figure

    sft = [{"step": s, "loss": 2 / s} for s in range(1, 31)]
    arms = [("GRPO", [(0.0, 0.2), (1.5, 0.3), (3.0, 0.4)]), ("control", [(0.0, 0.2), (3.1, 0.25)])]
    fig = stages_and_arms_figure([("SFT", sft), ("GRPO", rows(20))], arms, ("loss", "reward"), "minutes", "acc",
                                 "same start", first_color=1)
    right = fig.subfigs[1].axes[0]
    assert [len(ax.lines) > 0 for ax in fig.subfigs[0].axes] == [True, True]  # one panel per key present
    lines = right.get_lines()
    assert [line.get_label() for line in lines] == ["GRPO", "control"]
    assert list(lines[0].get_xdata()) == [0.0, 1.5, 3.0] and list(lines[1].get_ydata()) == [0.2, 0.25]
    assert [to_hex(line.get_color()) for line in lines] == ["#ff7f0e", "#2ca02c"]  # C1, C2
    assert (right.get_xlabel(), right.get_ylabel(), right.get_title()) == ("minutes", "acc", "same start")
    out = plot_stages_and_arms([("SFT", sft)], arms, tmp_path / "both.png", keys=("loss",), arms_x="m", arms_y="a")
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_ema_debiased():
    # t=2: acc = 0.5*(0.5*0) + 0.5*10 = 5, debiased by 1 - 0.5**2 = 0.75 -> 6.667
    assert ema([0.0, 10.0], 0.5) == [0.0, 5.0 / 0.75]
    assert all(abs(v - 2.0) < 1e-12 for v in ema([2.0] * 5, 0.9))
    assert ema([1.0, 3.0], 0.0) == [1.0, 3.0]


def test_run_plot_has_integer_steps_a_title_and_full_range_for_shares(tmp_path):
    from grpokit.plotting import plot_run, stages_figure

    rows = [{"step": s, "reward": 0.1 * s, "accuracy": 0.02 + 0.01 * s} for s in range(1, 4)]
    fig = stages_figure([("", rows)], keys=("reward", "accuracy"), title="my-run")
    reward_ax, acc_ax = fig.axes
    assert fig._suptitle.get_text() == "my-run"
    ticks = [t for t in acc_ax.get_xticks() if 1 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks)  # no tick at step 1.5
    assert acc_ax.get_ylim() == (-0.03, 1.03)  # a share is drawn on [0, 1]
    assert reward_ax.get_ylim()[1] < 0.5  # other metrics keep their own range

    run = tmp_path / "runs" / "gsm8k-tiny"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert plot_run(run, keys=("reward",)) == run / "metrics.png"
    assert (run / "metrics.png").read_bytes()[:4] == b"\x89PNG"
