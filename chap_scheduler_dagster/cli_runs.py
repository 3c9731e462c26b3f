"""Runs started by ``chap-scheduler-run``, created the way the webserver creates them.

A run made with ``JobDefinition.execute_in_process`` has no code-location origin: the UI
cannot re-execute it (``parent_run.remote_job_origin`` is None), the job's Runs and
Partitions tabs do not list it (they filter on the ``.dagster/repository`` tag that only an
origin gives), and "Open in Launchpad" loses its partition. Here the run is created from the
code location's remote job, with its origin and the same tags a launch from the UI gets,
and then executed in this process (``execute_run``, what a run worker does), so the command
line stays synchronous and needs no daemon.

The origin names the code location by its name in the workspace; the webserver finds the job
by that name. It is read from the ``workspace.yaml`` the Dagster processes use (the entry that
loads ``chap_scheduler_dagster.definitions``), or given with ``--code-location``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import yaml
from dagster._core.execution.api import execute_run
from dagster._utils.hosted_user_process import recon_job_from_origin
from dagster._core.definitions.selector import JobSubsetSelector
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from .core.errors import SchedulerError
from .defs.tags import launch_tags

DEFS_MODULE = "chap_scheduler_dagster.definitions"
DEFAULT_LOCATION = "chap_scheduler_dagster"
REPOSITORY = "__repository__"


def code_location_name(workspace: Path | None = None) -> str:
    """The name the workspace gives this code location; the default one when no workspace says."""
    path = workspace or Path("workspace.yaml")
    if not path.is_file():
        return DEFAULT_LOCATION
    try:
        entries = (yaml.safe_load(path.read_text()) or {}).get("load_from") or []
    except yaml.YAMLError:
        return DEFAULT_LOCATION
    names = []
    for entry in entries:
        for kind, spec in (entry or {}).items():
            if not isinstance(spec, dict) or not spec.get("location_name"):
                continue
            if kind == "python_module" and spec.get("module_name") == DEFS_MODULE:
                return str(spec["location_name"])
            names.append(str(spec["location_name"]))
    # A single gRPC entry (docker compose) is this code location under another name.
    return names[0] if len(names) == 1 else DEFAULT_LOCATION


class CliRuns:
    """Creates and executes runs of one job of this code location, with the location's origin."""

    def __init__(self, instance: dg.DagsterInstance, location_name: str, job_name: str) -> None:
        self.instance = instance
        self.job_name = job_name
        origin = InProcessCodeLocationOrigin(
            LoadableTargetOrigin(executable_path=sys.executable, module_name=DEFS_MODULE),
            location_name=location_name,
        )
        self._location = origin.create_location(instance)
        self.selector = JobSubsetSelector(
            location_name=location_name, repository_name=REPOSITORY, job_name=job_name, op_selection=None
        )
        self.remote_job = self._location.get_job(self.selector)
        self.remote_repo = self._location.get_repository(REPOSITORY)

    def close(self) -> None:
        self._location.cleanup()

    def create(self, partition_key: str, run_config: Mapping[str, object], tags: Mapping[str, str]) -> dg.DagsterRun:
        """A NOT_STARTED run of the job for one partition, as a launch from the UI would make it."""
        job_def = self._location.get_reconstructable_job(REPOSITORY, self.job_name).get_definition()
        partition_tags = job_def.get_tags_for_partition_key(partition_key, selected_asset_keys=None)
        run_tags = {**self.remote_job.tags, **partition_tags, **tags}
        plan = self._location.get_execution_plan(
            self.remote_job, run_config, step_keys_to_execute=None, known_state=None, instance=self.instance
        ).execution_plan_snapshot
        return self.instance.create_run(
            job_name=self.job_name,
            run_id=None,
            run_config=run_config,
            resolved_op_selection=None,
            step_keys_to_execute=plan.step_keys_to_execute,
            op_selection=None,
            status=None,
            root_run_id=None,
            parent_run_id=None,
            tags=run_tags,
            job_snapshot=self.remote_job.job_snapshot,
            execution_plan_snapshot=plan,
            parent_job_snapshot=self.remote_job.parent_job_snapshot,
            remote_job_origin=self.remote_job.get_remote_origin(),
            job_code_origin=self.remote_job.get_python_origin(),
            asset_selection=None,
            asset_check_selection=None,
            asset_graph=self.remote_repo.asset_graph,
        )

    def execute(self, run: dg.DagsterRun) -> dg.DagsterRun:
        """Execute the run here, as a run worker would; returns the finished run."""
        recon = recon_job_from_origin(run.job_code_origin)
        execute_run(recon, run, self.instance, raise_on_error=False)
        return self.instance.get_run_by_id(run.run_id) or run

    def run(self, partition_key: str, run_config: Mapping[str, object], tags: Mapping[str, str]) -> dg.DagsterRun:
        return self.execute(self.create(partition_key, run_config, tags))


def unknown_to_chap(model_ids: list[str], list_models: Callable[[], Iterable[object]]) -> list[str]:
    """The ids chap does not list, so no partition, run or report is made for them.

    When chap cannot be asked, none is called unknown: the run then fails at its first step with
    a report that says what is unreachable.
    """
    if not model_ids:
        return []
    try:
        listed = {str(getattr(s, "id", s)) for s in list_models()}
    except SchedulerError:
        return []
    return [m for m in model_ids if m not in listed]


def what_to_do(report_markdown: str) -> str | None:
    """The report's "What to do" advice, for printing."""
    for line in report_markdown.splitlines():
        if line.startswith("- **What to do:** "):
            return line.removeprefix("- **What to do:** ").strip()
    return None


def stop_after_interrupt(runs: CliRuns, run: dg.DagsterRun, report_markdown: str, remaining: bool = True) -> None:
    """After Ctrl-C: print the advice, mark the run canceled in Dagster as in the report, run nothing more."""
    advice = what_to_do(report_markdown)
    if advice:
        print(f"  what to do: {advice}")
    if run.status != dg.DagsterRunStatus.CANCELED:
        runs.instance.report_run_canceled(run, message="interrupted from the command line (Ctrl-C)")
    if remaining:  # a fan-out's child leaves this line to its parent, which knows what remains
        print("  interrupted: the remaining configured models were not run", flush=True)


def cli_run_tags(model_name: str | None = None) -> dict[str, str]:
    return launch_tags("cli", model_name)


@contextmanager
def cli_runs(instance: dg.DagsterInstance, job_name: str, location_name: str | None = None) -> Iterator[CliRuns]:
    runs = CliRuns(instance, location_name or code_location_name(), job_name)
    try:
        yield runs
    finally:
        runs.close()
