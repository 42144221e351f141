"""Experiment trackers (`run.report_to`): TensorBoard, Weights & Biases, MLflow, trackio.

Each is an optional extra (`pip install 'grpokit[tensorboard]'`); its adapter imports the
tracker's package only when a run opens it. See base.py for the interface.
"""
from grpokit.trackers.base import TRACKERS, RunInfo, Tracker, TrackerEntry, missing_package
from grpokit.trackers import mlflow_tracker, tensorboard_tracker, trackio_tracker, wandb_tracker  # noqa: F401 (register)


def open_trackers(names: list[str], info: RunInfo) -> list[Tracker]:
    """Open the named trackers (in order); a missing package raises with its install line."""
    out = []
    for name in names:
        problem = missing_package(name)
        if problem is not None:
            for t in out:
                t.close()
            raise ImportError(f"run.report_to: {problem}")
        out.append(TRACKERS.get(name).open(info))
    return out


__all__ = ["TRACKERS", "RunInfo", "Tracker", "TrackerEntry", "missing_package", "open_trackers"]
