"""Fan-out: several configured models at once, at most the per-DHIS2 limit, each in its own process.

``chap-scheduler-run --all`` (or several ids) starts one child process per model, each running the
command for that one id with the same options. Processes rather than threads: a run executed in process
shares process state (signal handlers for Ctrl-C, ``gc.freeze`` during the fetch, Dagster's own globals),
and a child that crashes or leaks takes only its own model with it.

Children are forked from the command, which has already imported Dagster and loaded the code location:
a new interpreter per model spent about 2 of its 3 CPU-seconds on exactly that, and 20 children at once
on two cores queued for the CPU. Each forked child still creates its own instance and its own run. Fork
only while this process has a single thread (forking a threaded process can copy a lock another thread
holds); otherwise, or where there is no fork, each child is a new interpreter started with ``command``.

Plain Python, no Dagster: the limit is computed from the run queue's settings handed in as data.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
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


def can_fork() -> bool:
    return hasattr(os, "fork") and threading.active_count() == 1


class ForkedProcess:
    """The part of ``subprocess.Popen`` the pool uses, for a child made with ``os.fork``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)  # -N for signal N, as Popen says
        return self.returncode


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    print(exc.code, file=sys.stderr)  # what Python does with sys.exit("message")
    return 1


def _run_forked(run: Callable[[str], int], key: str, stdout_fd: int) -> None:
    """In the forked child: the same start as a new process (own session, stdin from /dev/null, stdout to
    its file, Ctrl-C raising KeyboardInterrupt), then ``run(key)``; never returns into the parent's code."""
    code = 1
    try:
        os.setsid()
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(stdout_fd, 1)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a Ctrl-C forwarded meanwhile lands here
        code = run(key)
    except SystemExit as exc:
        code = _exit_code(exc)
    except KeyboardInterrupt:  # ended by SIGINT, as an interpreter with an uncaught KeyboardInterrupt is
        sys.stdout.flush(), sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:  # noqa: BLE001  (the child's end: say why, like an interpreter would)
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush(), sys.stderr.flush()
        finally:
            os._exit(code)  # not the parent's finally blocks, atexit handlers or open instance


@dataclass
class Child:
    key: str
    process: subprocess.Popen | ForkedProcess
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
    """Runs one child per key, at most ``limit`` at once; ``wait()`` returns the ones that finished.

    A child runs ``forked(key)`` in a fork of this process (its return value is the exit code) when
    ``forked`` is given and this process can fork (``can_fork``); otherwise the command ``command(key)``.

    Each child gets its own session, so a Ctrl-C in the terminal reaches only the parent. The parent's
    signal handler calls ``request_interrupt()`` (it only sets a flag, so it is safe at any moment);
    the next ``wait()`` then stops launching and sends each running child one SIGINT, which cancels its
    run the way a single-model command does.
    """

    def __init__(self, keys: Sequence[str], command: Callable[[str], list[str]], limit: int,
                 env: Mapping[str, str] | None = None, poll_seconds: float = 0.05,
                 forked: Callable[[str], int] | None = None) -> None:
        self.pending = list(keys)
        self.command = command
        self.forked = forked if forked is not None and env is None and can_fork() else None
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
        if self.forked is not None and can_fork():  # checked at each start: a thread may have started since
            self.running[key] = Child(key, self._fork(key, out.fileno()), out)
            return
        process = subprocess.Popen(self.command(key), stdout=out, stdin=subprocess.DEVNULL, env=self.env,
                                   start_new_session=True, text=True, preexec_fn=_default_sigint)
        self.running[key] = Child(key, process, out)

    def _fork(self, key: str, stdout_fd: int) -> ForkedProcess:
        assert self.forked is not None
        sys.stdout.flush(), sys.stderr.flush()  # else the child would print the parent's buffered text again
        gc.freeze()  # the objects loaded so far stay shared with the children instead of being copied
        # SIGINT waits until the child has its own handler (the parent's only sets the pool's flag).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            pid = os.fork()
            if pid == 0:
                _run_forked(self.forked, key, stdout_fd)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        return ForkedProcess(pid)

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
