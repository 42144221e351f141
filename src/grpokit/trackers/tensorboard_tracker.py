"""TensorBoard: scalars per step, the config and sample completions as text.

Event files go to RUN_DIR/tensorboard (`tensorboard --logdir RUN_DIR/tensorboard`).
Written through torch.utils.tensorboard, which needs the `tensorboard` package.
"""
from __future__ import annotations

from grpokit.trackers.base import TRACKERS, RunInfo, TrackerEntry, flatten, sample_columns


class TensorBoardTracker:
    def __init__(self, info: RunInfo):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = info.run_dir / "tensorboard"
        # purge_step: on resume, TensorBoard drops the events a crashed run wrote after its
        # last checkpoint, so each step is shown once.
        self.writer = SummaryWriter(log_dir=str(self.log_dir), flush_secs=30,
                                    purge_step=info.start_step + 1 if info.resume else None)
        params = flatten(info.config)
        table = "| key | value |\n|---|---|\n" + "\n".join(f"| {k} | {_cell(v)} |" for k, v in params.items())
        self.writer.add_text("config", table, global_step=0)

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, global_step=step)

    def log_samples(self, step: int, rows: list[dict]) -> None:
        # TensorBoard's text plugin renders markdown: one table per step.
        if not rows:
            return
        cols = sample_columns(rows)
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_cell(r.get(c, step if c == "step" else "")) for c in cols) + " |" for r in rows]
        self.writer.add_text("samples", "\n".join(lines), global_step=step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def _cell(v) -> str:
    """A markdown table cell: pipes escaped, line breaks kept as <br>."""
    if isinstance(v, float):
        v = f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", "<br>")


TRACKERS.add("tensorboard", TrackerEntry(open=TensorBoardTracker, module="tensorboard", extra="tensorboard"),
             doc="TensorBoard event files in RUN_DIR/tensorboard (scalars, config and samples as text)")
