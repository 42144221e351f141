"""What `grpokit train` does for the report: groups.jsonl each step, report.html every
`run.report_every` steps (0 = only at the end) and at the end."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from grpokit.report.groups import GroupLog
from grpokit.report.page import write_report

log = logging.getLogger("grpokit")


class RunReporter:
    def __init__(self, run_dir: str | os.PathLike, *, every: int = 0, field: str = "steps", grouper: str = "group",
                 resume: bool = False):
        self.run_dir, self.every = Path(run_dir), every
        self.groups = GroupLog(run_dir, field=field, name=grouper, resume=resume)

    def on_step(self, step: int, rewards: torch.Tensor, grouping: Any, fields: Sequence[dict]) -> None:
        """After the step's metrics and samples are logged."""
        self.groups.write(step, rewards, grouping, fields)
        if self.every and step % self.every == 0:
            self.write()

    def write(self) -> Path | None:
        """The report of this run; a failure is logged, never fatal to training."""
        try:
            return write_report([self.run_dir])
        except Exception as e:  # noqa: BLE001 - a report bug must not cost a training run
            log.warning("run report not written: %s: %s", type(e).__name__, e)
            return None
