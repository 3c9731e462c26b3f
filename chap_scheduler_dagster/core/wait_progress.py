"""Log lines while a run waits on chap: at every status change and at least once a minute.

A prediction can take an hour (CHAP_SCHEDULER_PREDICTION_TIMEOUT_SECONDS). Without these
lines the run's log is silent for all of it. Each line names the chap job, the status, and
the time waited against the timeout, so "is it stuck?" is answered from the log alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

Log = Callable[[str], None]
HEARTBEAT_SECONDS = 60.0


@dataclass
class WaitProgress:
    job_id: str
    timeout_seconds: float
    log: Log
    clock: Callable[[], float] = time.monotonic
    every_seconds: float = HEARTBEAT_SECONDS
    started: float = field(init=False)
    _last_line: float = field(init=False)
    _status: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.started = self._last_line = self.clock()

    def _elapsed(self) -> str:
        return f"{self.clock() - self.started:.0f} s of the {self.timeout_seconds:g} s timeout"

    def on_status(self, status: str) -> None:
        """chap reported a new status (or that it is not reachable right now)."""
        self._status = status
        self._last_line = self.clock()
        self.log(f"chap job {self.job_id}: {status} ({self._elapsed()})")

    def on_poll(self, status: str) -> None:
        """Every poll; writes a line when the last one is a minute old."""
        self._status = status or self._status
        if self.clock() - self._last_line >= self.every_seconds:
            self._last_line = self.clock()
            self.log(f"still waiting on chap job {self.job_id}: {self._status} ({self._elapsed()})")
