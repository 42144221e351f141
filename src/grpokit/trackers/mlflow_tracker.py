"""MLflow: metrics per step, the config as run parameters, samples as a table artifact.

The run goes to MLFLOW_TRACKING_URI when set (a server, or sqlite:///...), else to a
file store in RUN_DIR/mlruns (`mlflow ui --backend-store-uri RUN_DIR/mlruns`); the
experiment is MLFLOW_EXPERIMENT_NAME, else "grpokit". Metric names have "/" replaced by
"." because MLflow's file store keeps each metric in a file named after it, and
"reward" next to "reward/accuracy" would need a file and a directory of one name.
"""
from __future__ import annotations

import os

from grpokit.trackers.base import TRACKERS, RunInfo, TrackerEntry, flatten

SAMPLES_TABLE = "samples.json"
RUN_ID_FILE = "mlflow-run-id"  # in RUN_DIR: a resumed run appends to the same MLflow run
# MLflow rejects longer parameter values (the limit of its stores).
_MAX_PARAM = 6000


class MlflowTracker:
    def __init__(self, info: RunInfo):
        # The file store is in "maintenance mode" in MLflow 3 and refuses to open unless
        # allowed; it is still the store that needs no server and no database.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no network calls from a training run
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keeps grpokit's bar clean
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param

        self._metric, self._param = Metric, Param
        uri = os.environ.get("MLFLOW_TRACKING_URI") or (info.run_dir / "mlruns").resolve().as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        self.tracking_uri = uri
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "grpokit"
        exp = self.client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(name)
        id_file = info.run_dir / RUN_ID_FILE
        self.run_id = id_file.read_text().strip() if info.resume and id_file.is_file() else None
        if self.run_id is not None:
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            self.run_id = self.client.create_run(exp_id, run_name=info.name,
                                                 tags={"grpokit.run_dir": str(info.run_dir.resolve())}).info.run_id
            params = [Param(k, str(v)[:_MAX_PARAM]) for k, v in flatten(info.config).items()]
            for i in range(0, len(params), 100):  # log_batch takes at most 100 parameters
                self.client.log_batch(self.run_id, params=params[i:i + 100])
            info.run_dir.mkdir(parents=True, exist_ok=True)
            id_file.write_text(self.run_id + "\n")

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        import time

        now = int(time.time() * 1000)
        batch = [self._metric(k.replace("/", "."), float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(batch), 1000):  # log_batch takes at most 1000 metrics
            self.client.log_batch(self.run_id, metrics=batch[i:i + 1000])

    def log_samples(self, step: int, rows: list[dict]) -> None:
        if not rows:
            return
        # One table for the run: log_table appends to an existing artifact of that name.
        cols: dict[str, list] = {}
        for c in dict.fromkeys(["step"] + [k for r in rows for k in r]):
            cols[c] = [r.get(c, step) if c == "step" else r.get(c) for r in rows]
        self.client.log_table(self.run_id, data=cols, artifact_file=SAMPLES_TABLE)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


TRACKERS.add("mlflow", TrackerEntry(open=MlflowTracker, module="mlflow", extra="mlflow"),
             doc="MLflow run (file store in RUN_DIR/mlruns unless MLFLOW_TRACKING_URI is set)")
