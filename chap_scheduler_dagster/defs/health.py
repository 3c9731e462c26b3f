"""Preflight in Dagster: the job ``check_connections`` and its asset ``chap_scheduler_health``.

The checks are ``core.preflight``; this module adds what needs Dagster: opening DHIS2 and
chap through the ``dhis2`` resource, the instance and daemon checks, and the asset.

The op reads ``DHIS2_*`` itself instead of requiring the resource, so a missing variable
becomes a failed check in the health table rather than a run that dies before it can say so.
"""


import os
import time
from collections.abc import Mapping

import dagster as dg

from ..core.chap_client import ChapClient
from ..core.credential_scope import Dhis2Credentials
from ..core.dhis2_reader import Dhis2Reader
from ..core.preflight import ERROR, OK, WARNING, Check, Preflight, render_markdown, run_preflight
from ..settings import SchedulerSettings
from .assets import report_asset_key
from .resources import Dhis2Resource

HEALTH_ASSET_NAME = "chap_scheduler_health"
JOB_NAME = "check_connections"
# A daemon beats every 30 s; four missed beats mean it is gone.
DAEMON_FRESH_SECONDS = 120
# Same location prefix as the report asset, so two DHIS2s never share one.
health_asset_key = dg.AssetKey([*report_asset_key.path[:-1], HEALTH_ASSET_NAME])


def _resource(conn: Dhis2Credentials) -> Dhis2Resource:
    return Dhis2Resource(base_url=conn.base_url, username=conn.username, password=conn.password, token=conn.token)


def open_reader(conn: Dhis2Credentials, settings: SchedulerSettings) -> Dhis2Reader:
    return _resource(conn).reader(settings)


def open_chap(conn: Dhis2Credentials, settings: SchedulerSettings) -> ChapClient:
    return _resource(conn).chap(settings)


def instance_checks(instance: dg.DagsterInstance | None, *, now: float | None = None) -> list[Check]:
    """The Dagster instance opens, and whether a daemon is heartbeating."""
    if instance is None:
        return [
            Check("Dagster instance", WARNING, "DAGSTER_HOME is not set: no instance to check; CLI runs go to a "
                  "throw-away instance", "export DAGSTER_HOME=<the instance directory> (.dagster_home in the quickstart)")
        ]
    started = time.perf_counter()
    try:
        storage = type(instance.run_storage).__name__
        launcher = type(instance.run_launcher).__name__
        beats = instance.get_daemon_heartbeats()
        required = list(instance.get_required_daemon_types())
    except Exception as exc:  # noqa: BLE001 - any storage error is the finding
        return [Check("Dagster instance", ERROR, f"the instance in DAGSTER_HOME does not open: {type(exc).__name__}: "
                      f"{exc}", "Check dagster.yaml in DAGSTER_HOME and its DAGSTER_PG_* variables; run "
                      "'dagster instance migrate' after an upgrade.", seconds=time.perf_counter() - started)]
    checks = [Check("Dagster instance", OK, f"opens ({os.environ.get('DAGSTER_HOME', '?')}; {storage}, {launcher})",
                    seconds=time.perf_counter() - started)]
    now = time.time() if now is None else now
    ages = {name: now - beat.timestamp for name, beat in beats.items()}
    stale = sorted(d for d in required if d not in ages or ages[d] > DAEMON_FRESH_SECONDS)
    if not ages:
        checks.append(Check("dagster-daemon", WARNING, "no dagster-daemon has ever heartbeated in this instance: "
                            "schedules, sensors and queued runs do not run",
                            "Start one: dagster-daemon run -w workspace.yaml (dagster dev and docker compose start "
                            "it for you)."))
    elif stale:
        newest = min(ages.values())
        checks.append(Check("dagster-daemon", ERROR, f"not heartbeating: {', '.join(stale)} (newest heartbeat "
                            f"{newest:.0f} s ago): schedules, sensors and queued runs have stopped",
                            "Restart dagster-daemon (docker compose restart daemon) and read its log."))
    else:
        checks.append(Check("dagster-daemon", OK, f"heartbeating: {len(required)} daemons, newest "
                            f"{min(ages.values()):.0f} s ago"))
    return checks


def health_materialization(preflight: Preflight) -> dg.AssetMaterialization:
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name, "string") for name in ("status", "check", "model", "finding", "fix")]
    )
    records = [
        dg.TableRecord({"status": c.status, "check": c.name, "model": c.model, "finding": c.finding,
                        "fix": c.fix if c.status != OK else ""})
        for c in preflight.checks
    ]
    return dg.AssetMaterialization(
        asset_key=health_asset_key,
        description=f"preflight {preflight.status_word}",
        metadata={
            "checks": dg.MetadataValue.table(records, schema=schema),
            "report": dg.MetadataValue.md(render_markdown(preflight)),
            "status": preflight.status_word,
            "failed": preflight.count(ERROR),
            "warnings": preflight.count(WARNING),
            "duration_seconds": round(preflight.duration_seconds, 2),
        },
    )


def preflight_here(
    environ: Mapping[str, str], instance: dg.DagsterInstance | None, model_ids: tuple[str, ...] = ()
) -> Preflight:
    from ..core.preflight import default_dotenv

    return run_preflight(
        environ,
        open_reader=open_reader,
        open_chap=open_chap,
        model_ids=model_ids,
        instance_checks=lambda: instance_checks(instance),
        dotenv=default_dotenv(),
    )


chap_scheduler_health = dg.AssetSpec(
    health_asset_key,
    group_name="chap_predictions",
    description="Preflight: DHIS2, its route 'chap', chap-core, every configured model and the Dagster daemon, "
    "one row per check with the fix. Written by the job check_connections.",
    metadata={"health_metadata_key": "checks"},
)


@dg.op(description="Run every preflight check (reads only) and write the table to chap_scheduler_health.")
def run_preflight_checks(context: dg.OpExecutionContext) -> None:
    preflight = preflight_here(os.environ, context.instance)
    context.log_event(health_materialization(preflight))
    for c in preflight.checks:
        (context.log.error if c.status == ERROR else context.log.warning if c.status == WARNING else context.log.info)(
            f"{c.status}: {c.name}: {c.finding}" + (f" (fix: {c.fix})" if c.fix and c.status != OK else "")
        )
    if not preflight.ok:
        failed = [c.name for c in preflight.checks if c.status == ERROR]
        raise dg.Failure(
            description=f"{len(failed)} preflight check(s) failed: {', '.join(failed)}. "
            f"See the asset {health_asset_key.to_user_string()} for the findings and fixes.",
            allow_retries=False,
        )


# Not tagged chap_scheduler/dhis2: the per-DHIS2 run limit would queue a health check behind
# two hour-long predictions.
@dg.job(
    name=JOB_NAME,
    executor_def=dg.in_process_executor,
    description="Preflight: will the predictions work? Checks DHIS2, the route 'chap', chap-core, every configured "
    "model and the daemon; writes chap_scheduler_health. Sends nothing that writes.",
)
def check_connections() -> None:
    run_preflight_checks()
