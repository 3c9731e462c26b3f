"""Fan-out: several configured models at once, at most the per-DHIS2 limit, each in its own process.

``chap-scheduler-run --all`` (or several ids) starts one child process per model, each re-invoking the
command for that one id with the same options. Processes rather than threads: a run executed in process
shares process state (signal handlers for Ctrl-C, ``gc.freeze`` during the fetch, Dagster's own globals),
and a child that crashes or leaks takes only its own model with it.

Plain Python, no Dagster: the limit is computed from the run queue's settings handed in as data.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FanOutLimit:
    value: int
    source: str  # said once on stderr, so the operator knows which setting to change


def fan_out_limit(
    tag_limits: Sequence[Mapping[str, object]] | None,
    max_concurrent_runs: int | None,
    tag_key: str,
    tag_value: str,
    fallback: int,
    fallback_name: str,
) -> FanOutLimit:
    """The limit the run queue applies to runs tagged ``tag_key: tag_value``; the fallback when it sets none.

    The queue's limit wins when the instance has one (runs from the command line then obey the same
    number as the daemon's); the fallback setting applies only to an instance without a limit for the tag.
    A ``max_concurrent_runs`` below it (not -1, which means no limit) caps it too.
    """
    found: list[int] = []
    for entry in tag_limits or []:
        if entry.get("key") != tag_key or not isinstance(entry.get("limit"), int):
            continue
        value = entry.get("value")
        if value is None or value == tag_value or (isinstance(value, Mapping) and value.get("applyLimitPerUniqueValue")):
            found.append(int(entry["limit"]))  # type: ignore[arg-type]
    if found:
        limit, source = min(found), f"the run queue's limit for {tag_key} (dagster.yaml tag_concurrency_limits)"
    else:
        limit, source = fallback, f"{fallback_name} (the instance sets no run-queue limit for {tag_key})"
    if max_concurrent_runs is not None and 0 <= max_concurrent_runs < limit:
        limit, source = max_concurrent_runs, "the run queue's max_concurrent_runs (dagster.yaml)"
    return FanOutLimit(max(1, limit), source)


def _default_sigint() -> None:
    """In the child, before exec: SIGINT back to its default. A command started in the background by a
    non-interactive shell inherits SIGINT *ignored*, and the child would then never stop on our Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class Child:
    key: str
    process: subprocess.Popen
    output: object  # the temporary file that holds the child's stdout
    started: float = field(default_factory=time.monotonic)

    def read_output(self) -> str:
        self.output.seek(0)  # type: ignore[attr-defined]
        text = self.output.read()  # type: ignore[attr-defined]
        self.output.close()  # type: ignore[attr-defined]
        return text


@dataclass
class Finished:
    key: str
    returncode: int
    output: str
    seconds: float


class FanOut:
    """Runs one command per key, at most ``limit`` at once; ``wait()`` returns the ones that finished.

    Each child gets its own session, so a Ctrl-C in the terminal reaches only the parent. The parent's
    signal handler calls ``request_interrupt()`` (it only sets a flag, so it is safe at any moment);
    the next ``wait()`` then stops launching and sends each running child one SIGINT, which cancels its
    run the way a single-model command does.
    """

    def __init__(self, keys: Sequence[str], command: Callable[[str], list[str]], limit: int,
                 env: Mapping[str, str] | None = None, poll_seconds: float = 0.05) -> None:
        self.pending = list(keys)
        self.command = command
        self.limit = max(1, limit)
        self.env = dict(env) if env is not None else None
        self.poll_seconds = poll_seconds
        self.running: dict[str, Child] = {}
        self.never_started: list[str] = []
        self._requests = 0  # Ctrl-Cs asked for
        self._forwarded = 0  # Ctrl-Cs passed on to the running children

    @property
    def interrupted(self) -> bool:
        return self._requests > 0

    def busy(self) -> bool:
        return bool(self.pending or self.running)

    def request_interrupt(self) -> None:
        self._requests += 1

    def _start(self, key: str) -> None:
        out = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
        process = subprocess.Popen(self.command(key), stdout=out, stdin=subprocess.DEVNULL, env=self.env,
                                   start_new_session=True, text=True, preexec_fn=_default_sigint)
        self.running[key] = Child(key, process, out)

    def _forward_interrupts(self) -> None:
        if self._forwarded >= self._requests:
            return
        self._forwarded = self._requests
        self.never_started += self.pending
        self.pending = []
        for child in self.running.values():
            if child.process.poll() is None:
                try:
                    os.kill(child.process.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass

    def wait(self) -> list[Finished]:
        """Launch what the limit allows, then block until at least one child has finished."""
        while self.pending or self.running:
            self._forward_interrupts()
            while self.pending and len(self.running) < self.limit:
                self._start(self.pending.pop(0))
            done = [c for c in self.running.values() if c.process.poll() is not None]
            if done:
                for child in done:
                    del self.running[child.key]
                return [Finished(c.key, int(c.process.returncode), c.read_output(), time.monotonic() - c.started)
                        for c in done]
            time.sleep(self.poll_seconds)
        return []
