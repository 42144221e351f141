"""Weights & Biases: metrics per step, the config, samples as a wandb Table.

Offline unless it can be online: with WANDB_MODE unset and no API key (WANDB_API_KEY or
a ~/.netrc entry for the W&B host), the run is written to RUN_DIR/wandb/offline-run-*
and uploaded later with `wandb sync`. With a key, an online start that fails within
`INIT_TIMEOUT` seconds (no network) falls back to offline instead of stopping training.
"""
from __future__ import annotations

import netrc
import os
import uuid
import sys
from urllib.parse import urlparse

from grpokit.trackers.base import TRACKERS, GrowingTable, RunInfo, TrackerEntry

INIT_TIMEOUT = 30.0  # seconds; wandb's own default (90) is long to wait for a network that is not there
RUN_ID_FILE = "wandb-run-id"  # in RUN_DIR: a resumed run appends to the same W&B run


def has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbTracker:
    def __init__(self, info: RunInfo):
        import wandb

        self.wandb = wandb
        mode = os.environ.get("WANDB_MODE") or ("online" if has_api_key() else "offline")
        info.run_dir.mkdir(parents=True, exist_ok=True)
        id_file = info.run_dir / RUN_ID_FILE
        run_id = id_file.read_text().strip() if info.resume and id_file.is_file() else uuid.uuid4().hex[:8]
        kw = dict(project=os.environ.get("WANDB_PROJECT") or "grpokit", name=info.name, id=run_id,
                  resume="allow", config=info.config, dir=str(info.run_dir), reinit="create_new")
        try:
            self.run = wandb.init(mode=mode, settings=wandb.Settings(init_timeout=INIT_TIMEOUT, silent=True), **kw)
        except Exception as e:  # noqa: BLE001 - any failure to reach W&B: keep training, offline
            if mode == "offline":
                raise
            print(f"wandb: could not start online ({type(e).__name__}: {e}); logging offline instead",
                  file=sys.stderr)
            mode = "offline"
            self.run = wandb.init(mode=mode, settings=wandb.Settings(silent=True), **kw)
        self.mode = mode
        id_file.write_text(run_id + "\n")
        self.table = GrowingTable()

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(dict(metrics), step=step)

    def log_samples(self, step: int, rows: list[dict]) -> None:
        if not rows:
            return
        # A W&B table logged again replaces the one shown: log the run's rows so far, so
        # the table in the UI holds every step's samples (the columns of the first rows).
        self.table.add(step, rows)
        self.run.log({"samples": self.wandb.Table(columns=self.table.columns, data=self.table.rows)}, step=step)

    def close(self) -> None:
        self.run.finish()


TRACKERS.add("wandb", TrackerEntry(open=WandbTracker, module="wandb", extra="wandb"),
             doc="Weights & Biases run (offline in RUN_DIR/wandb without an API key; `wandb sync` uploads it)")
