"""Training curves as PNG files.

Figures are drawn with matplotlib's object API (Figure + FigureCanvasAgg), so no global
backend is selected and a user's pyplot session is left alone. matplotlib is imported
inside the functions: importing grpokit stays fast for commands that draw nothing.
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

# Series shorter than this are drawn as points only: EMA of a handful of eval points
# says nothing the points do not.
_MIN_SMOOTH_POINTS = 10
# Metrics that are shares in [0, 1]: drawn on the whole [0, 1] range, so that accuracy
# going from 2% to 4% does not fill the plot like 0% to 100% would.
SHARE_KEYS = ("accuracy", "eval/accuracy", "zero_std_groups", "finished", "clip_fraction",
              "tools/share_with_call", "tools/failure_rate")


def plot_run(run_dir: str | os.PathLike, keys: Sequence[str] = ("reward", "accuracy", "eval/accuracy", "len"),
             name: str = "metrics.png") -> Path:
    """RUN_DIR/metrics.png from RUN_DIR/metrics.jsonl, titled with the run's name."""
    d = Path(run_dir)
    return plot_metrics(d / "metrics.jsonl", d / name, keys=keys, title=d.resolve().name)


def plot_metrics(metrics: list[dict] | str | os.PathLike, out_png: str | os.PathLike,
                 keys: Sequence[str] = ("reward", "accuracy"), title: str | None = None,
                 x: str = "step") -> Path:
    """One subplot per key present: the raw curve plus its EMA when the series is long.

    `metrics` is a list of rows or a metrics.jsonl path (or run directory). Rows lacking a
    key (or holding null for it) are skipped for that key, so metrics logged only on some
    steps (eval accuracy) are drawn at those steps, not as zeros. Keys in no row are skipped.
    """
    return plot_stages([("", _rows(metrics))], out_png, keys, title=title, x=x)


def plot_stages(stages: Sequence[tuple[str, list[dict] | str | os.PathLike]], out_png: str | os.PathLike,
                keys: Sequence[str] = ("loss", "reward", "accuracy"), title: str | None = None,
                x: str = "step") -> Path:
    """Consecutive stages (e.g. SFT then GRPO) on one continuing x axis.

    Stage k is shifted right by the last x of the stages before it; each stage gets its own
    colour, a dashed vertical line where it starts (after the first) and its name on top.
    """
    return _save(stages_figure(stages, keys, title=title, x=x), out_png)


def stages_figure(stages: Sequence[tuple[str, list[dict] | str | os.PathLike]],
                  keys: Sequence[str] = ("loss", "reward", "accuracy"), title: str | None = None,
                  x: str = "step") -> Any:
    """The matplotlib Figure that `plot_stages` saves."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    placed = _placed(stages, x)  # stage files are read once
    fig = Figure(figsize=(9, 0.6 + 2.4 * max(1, len(_present(placed, keys, x)))), layout="constrained")
    FigureCanvasAgg(fig)
    _draw_stages(fig, placed, keys, title, x)
    return fig


def plot_stages_and_arms(stages: Sequence[tuple[str, list[dict] | str | os.PathLike]],
                         arms: Sequence[tuple[str, Sequence[tuple[float, float]]]], out_png: str | os.PathLike,
                         keys: Sequence[str], arms_x: str, arms_y: str, arms_title: str | None = None,
                         first_color: int = 0) -> Path:
    """The stages (left, as plot_stages draws them) beside a comparison of arms (right):
    one line of (x, y) points per arm, e.g. GRPO against a control from the same start.
    Arm i is drawn in colour C{first_color + i}, so an arm can keep its stage's colour."""
    return _save(stages_and_arms_figure(stages, arms, keys, arms_x, arms_y, arms_title, first_color), out_png)


def stages_and_arms_figure(stages: Sequence[tuple[str, list[dict] | str | os.PathLike]],
                           arms: Sequence[tuple[str, Sequence[tuple[float, float]]]], keys: Sequence[str],
                           arms_x: str, arms_y: str, arms_title: str | None = None, first_color: int = 0) -> Any:
    """The matplotlib Figure that `plot_stages_and_arms` saves."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    placed = _placed(stages, "step")
    n = max(1, len(_present(placed, keys, "step")))
    fig = Figure(figsize=(14, max(4.0, 0.6 + 2.4 * n)), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subfigures(1, 2, width_ratios=[1.6, 1.0])
    _draw_stages(left, placed, keys, None, "step")
    ax = right.subplots(1, 1)
    for i, (name, points) in enumerate(arms):
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", markersize=4, linewidth=1.5, color=f"C{first_color + i}", label=name)
    ax.set_xlabel(arms_x)
    ax.set_ylabel(arms_y)
    ax.grid(alpha=0.3)
    if any(points for _, points in arms):
        ax.legend(loc="best", fontsize=9)
    if arms_title:
        ax.set_title(arms_title, fontsize=10)
    return fig


def _placed(stages, x: str) -> list[tuple[str, float, list[dict]]]:
    """(name, offset, rows) per non-empty stage; offsets make the x axis continue."""
    placed, offset = [], 0.0
    for name, rows in stages:
        rows = _rows(rows)
        xs = [r[x] for r in rows if _is_number(r.get(x))]
        if not xs:
            continue
        placed.append((name, offset, rows))
        offset += max(xs)
    return placed


def _present(placed, keys: Sequence[str], x: str) -> list[str]:
    """The keys with data in some placed stage, in the order given."""
    return [k for k in keys if any(_series(rows, k, x)[0] for _, _, rows in placed)]


def _draw_stages(fig: Any, placed, keys: Sequence[str], title: str | None, x: str) -> None:
    """Draw the placed stages (`_placed`) into `fig` (a Figure or SubFigure): one subplot
    per key present."""
    from matplotlib.ticker import MaxNLocator

    present = _present(placed, keys, x)
    axes = fig.subplots(max(1, len(present)), 1, sharex=True, squeeze=False)[:, 0]
    if title:
        fig.suptitle(title)
    if not present:
        warnings.warn(f"plot: none of the keys {list(keys)} has data; writing an empty figure", stacklevel=2)
        axes[0].text(0.5, 0.5, f"no data for {', '.join(keys)}", ha="center", va="center",
                     transform=axes[0].transAxes)

    multi = len(placed) > 1
    for ax, key in zip(axes, present):
        for i, (_name, off, rows) in enumerate(placed):
            xs, ys = _series(rows, key, x)
            if xs:
                _draw(ax, [off + v for v in xs], ys, color=f"C{i}" if multi else "C0")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ys = [v for _, _, rows in placed for v in _series(rows, key, x)[1]]
        if key in SHARE_KEYS and ys and min(ys) >= 0 and max(ys) <= 1:
            ax.set_ylim(-0.03, 1.03)
    if x == "step":  # steps are whole numbers: no tick at 2.5
        axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    if multi or (placed and placed[0][0]):
        for i, (name, off, _rows_) in enumerate(placed):
            for ax in axes:
                if i > 0:
                    ax.axvline(off, color="0.4", linestyle="--", linewidth=1)
            # x in data units, y in axes units: the label sits just above the top plot.
            axes[0].text(off, 1.02, f" {name}", transform=axes[0].get_xaxis_transform(),
                         color=f"C{i}" if multi else "0.2", ha="left", va="bottom", fontsize=9)
    axes[-1].set_xlabel(x)


def ema(values: Sequence[float], weight: float) -> list[float]:
    """Exponential moving average, debiased (as in TensorBoard) so it does not start at 0."""
    out, acc = [], 0.0
    for t, v in enumerate(values, start=1):
        acc = weight * acc + (1.0 - weight) * v
        out.append(acc / (1.0 - weight ** t) if weight > 0 else v)
    return out


def _draw(ax: Any, xs: list[float], ys: list[float], color: str) -> None:
    if len(ys) < _MIN_SMOOTH_POINTS:
        ax.plot(xs, ys, color=color, marker="o", markersize=3, linewidth=1)
        return
    # Memory of ~n/20 points (2..50): enough to see the trend through GRPO's noise, short
    # enough that the curve does not visibly lag a rising reward.
    weight = 1.0 - 1.0 / min(50.0, max(2.0, len(ys) / 20.0))
    ax.plot(xs, ys, color=color, alpha=0.3, linewidth=1)
    ax.plot(xs, ema(ys, weight), color=color, linewidth=2)


def _series(rows: Iterable[dict], key: str, x: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        xv, yv = r.get(x), r.get(key)
        if _is_number(xv) and _is_number(yv):
            xs.append(float(xv))
            ys.append(float(yv))
    return xs, ys


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _rows(metrics: list[dict] | str | os.PathLike) -> list[dict]:
    if isinstance(metrics, (str, os.PathLike)):
        from .logging import read_metrics
        return read_metrics(metrics)
    return list(metrics)


def _save(fig: Any, out_png: str | os.PathLike) -> Path:
    """Write to a temp file beside the target, then rename: readers never see half a PNG."""
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        fig.savefig(tmp, format=out.suffix.lstrip(".").lower() or "png", dpi=110)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
