"""Ctrl-C and SIGTERM during training: finish the step, checkpoint, say how to resume.

    with StopRequests() as stop:
        for step in ...:
            ...
            if stop.requested:
                save(); raise Interrupted(stop.signum, step, run_dir)

The first SIGINT or SIGTERM only sets a flag: a step cut in half would leave the
optimizer, the sampler and the grouper out of step with each other, and the step's
work is usually seconds to minutes. A second signal raises KeyboardInterrupt at once
(the user means it). Handlers are installed only in the main thread, where Python
delivers signals; elsewhere (a training thread) the loop simply never sees a request.
"""
from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """Training stopped on a signal after checkpointing; exit_code is 128 + the signal number
    (130 for SIGINT, 143 for SIGTERM), as a shell reports a process killed by it."""

    def __init__(self, signum: int, step: int, run_dir: str, saved: bool):
        self.signum, self.step, self.run_dir, self.saved = signum, step, str(run_dir), saved
        self.exit_code = 128 + int(signum)
        name = signal.Signals(signum).name
        if saved:
            msg = (f"stopped by {name} after step {step}; checkpoint saved. "
                   f"Resume with: grpokit train --out {self.run_dir} --resume")
        else:
            msg = f"stopped by {name} before the first step; nothing to resume"
        super().__init__(msg)


class StopRequests:
    """Context manager: while active, SIGINT/SIGTERM set `requested` instead of stopping."""

    def __init__(self, *, announce: bool = True):
        self.signum: int | None = None
        self._announce = announce
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            self._restore()
            raise KeyboardInterrupt  # the second signal: stop now, no checkpoint
        self.signum = signum
        if self._announce:
            print(f"\ngrpokit: {signal.Signals(signum).name} received; finishing this step and saving a "
                  "checkpoint (press Ctrl-C again to quit at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def __exit__(self, *exc: Any) -> None:
        self._restore()
