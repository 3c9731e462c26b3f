"""The IO manager for the prediction state handed from op to op: stored in the Dagster instance's database.

Why not Dagster's defaults: ``execute_in_process`` (tests, and the command line before) hands
the very same Python object to the next op, so a later step's changes leak back into what an
earlier step "returned", while runs launched by the daemon pickle each output to files under
``$DAGSTER_HOME/storage`` — two behaviours, and files that a run in its own container (the
Docker run launcher) cannot see from the next one. Here every output is pickled into the
instance's key-value table (SQLite in tests and the quickstart, Postgres in deployments), so:

- each step gets a fresh copy of the state its upstream step returned, in tests and production alike;
- a re-execution finds its parent's state wherever the parent ran (any process, host or container);
- nothing is written next to the code or into a volume.

The state is small (the configured model, the window, the report so far, paths and ids; never
the request body or a secret). Rows stay as long as the instance keeps the run's history.
"""

from __future__ import annotations

import base64
import pickle
from collections.abc import Sequence

import dagster as dg

from ..core.errors import SchedulerError

KEY_PREFIX = "chap_scheduler/run_state"


def state_key(identifier: Sequence[str]) -> str:
    """One row per run, step and output: ``chap_scheduler/run_state/<run id>/<step>/<output>``."""
    return "/".join([KEY_PREFIX, *identifier])


class RunStateIOManager(dg.ConfigurableIOManager):
    """Pickles op outputs into the Dagster instance's key-value storage (see module docstring)."""

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        if obj is None:
            return
        data = base64.b64encode(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)).decode("ascii")
        context.step_context.instance.run_storage.set_cursor_values({state_key(context.get_identifier()): data})

    def load_input(self, context: dg.InputContext) -> object:
        upstream = context.upstream_output
        if upstream is None:
            raise SchedulerError("this step has no upstream step to take its state from")
        key = state_key(upstream.get_identifier())
        data = context.instance.run_storage.get_cursor_values({key}).get(key)
        if data is None:
            raise SchedulerError(
                f"the state of step {upstream.step_key} of run {upstream.run_id} is not stored in this Dagster instance",
                hint="Re-execute from an earlier step, or launch a new run of this configured model.",
            )
        try:
            return pickle.loads(base64.b64decode(data))
        except Exception as exc:  # a state written by an older version of this code
            raise SchedulerError(
                f"the state of step {upstream.step_key} of run {upstream.run_id} cannot be read by this "
                f"version of the code ({type(exc).__name__}: {exc})",
                hint="Launch a new run of this configured model instead of re-executing the old one.",
            ) from None
