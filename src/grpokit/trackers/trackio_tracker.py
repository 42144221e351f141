"""trackio: metrics per step, the config, samples as a trackio Table.

trackio keeps its runs in a local SQLite store (TRACKIO_DIR, default
$HF_HOME/trackio); `trackio show --project grpokit` opens its dashboard. The project is
TRACKIO_PROJECT, else "grpokit"; nothing is sent anywhere unless TRACKIO_SPACE_ID or
TRACKIO_SERVER_URL is set (trackio's own settings).
"""
from __future__ import annotations

import os

from grpokit.trackers.base import TRACKERS, GrowingTable, RunInfo, TrackerEntry


class TrackioTracker:
    def __init__(self, info: RunInfo):
        import trackio

        self.trackio = trackio
        self.project = os.environ.get("TRACKIO_PROJECT") or "grpokit"
        # embed=False: do not start a dashboard server from a training run.
        self.run = trackio.init(project=self.project, name=info.name, config=info.config,
                                resume="allow" if info.resume else "never", embed=False,
                                auto_log_gpu=False, auto_log_cpu=False)
        self.table = GrowingTable()

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(dict(metrics), step=step)

    def log_samples(self, step: int, rows: list[dict]) -> None:
        if not rows:
            return
        # As with W&B, the latest table logged is the one shown: it carries every step so far.
        self.table.add(step, rows)
        self.run.log({"samples": self.trackio.Table(columns=self.table.columns,
                                                    data=[list(r) for r in self.table.rows])}, step=step)

    def close(self) -> None:
        self.run.finish()


TRACKERS.add("trackio", TrackerEntry(open=TrackioTracker, module="trackio", extra="trackio"),
             doc="trackio run in its local store (TRACKIO_DIR; `trackio show` opens the dashboard)")
