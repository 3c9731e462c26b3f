"""Run configured models from the shell: ``chap-scheduler-run 3`` or ``chap-scheduler-run --all``.

Runs go through the real job on the Dagster instance in ``$DAGSTER_HOME`` (so they show
in the UI next to scheduled ones), in this process. Exit status 0 only if every run
succeeded; each outcome line says where its report is.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import ExitStack
from pathlib import Path

import dagster as dg

from . import cli_fanout, notify_cli, preflight_cli
from .cli_runs import cli_run_tags, cli_runs, code_location_name, stop_after_interrupt, unknown_to_chap
from .core.errors import SchedulerError
from .core.report_metadata import Key, text
from .settings import get_settings

JOB_NAME = "dhis2_chap_prediction"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chap-scheduler-run",
        description="Run chap configured models (by chap id) through the dhis2_chap_prediction job.",
        epilog="Other commands: 'chap-scheduler-run check [ids] [--json]' (preflight), 'chap-scheduler-run info', "
        "'chap-scheduler-run --version'.",
    )
    p.add_argument("model_ids", nargs="*", help="chap configured-model ids (partition keys), e.g. 3")
    p.add_argument("--all", action="store_true", help="run every configured model chap lists")
    p.add_argument("--end-mode", choices=["calculated", "fixed", "offset"], default="calculated")
    p.add_argument("--end-date", help="YYYY-MM-DD, with --end-mode fixed")
    p.add_argument("--end-period-offset", type=int, help="periods back from today, with --end-mode offset")
    p.add_argument("--report-dir", type=Path, help="also write each run report as <dir>/<id>.md")
    p.add_argument(
        "--force",
        action="store_true",
        help="predict even when the inputs are unchanged since the last successful prediction (default: skip)",
    )
    p.add_argument(
        "--code-location",
        help="the code location's name in the Dagster workspace (default: read from ./workspace.yaml)",
    )
    # Hidden: set by a fan-out for its children (cli_fanout.py).
    p.add_argument("--model-name", help=argparse.SUPPRESS)
    p.add_argument(cli_fanout.CHILD_FLAG, action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # Subcommands, one line each; the implementation lives in its own module.
    subcommands = {
        "check": preflight_cli.check_main,
        "info": preflight_cli.info_main,
        "--version": preflight_cli.version_main,
        "notify-test": notify_cli.main,
    }
    if argv and argv[0] in subcommands:
        return subcommands[argv[0]](argv[1:])
    args = _parser().parse_args(argv)
    if not args.all and not args.model_ids:
        _parser().error("name one or more configured-model ids, or --all")
    if not os.environ.get("DAGSTER_HOME") and not args.one_of_many:
        print("DAGSTER_HOME is not set: runs and reports go to a temporary instance and vanish.", file=sys.stderr)

    from .defs.assets import report_asset_key
    from .defs.partitions import configured_models_partitions
    from .definitions import defs

    window = {"end_mode": args.end_mode}
    if args.end_date:
        window["end_date"] = args.end_date
    if args.end_period_offset is not None:
        window["end_period_offset"] = args.end_period_offset

    with (
        dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral() as instance,
        ExitStack() as stack,
    ):
        model_ids = list(args.model_ids)
        listed = []
        if args.all:
            try:
                listed = _list_models(defs)
                model_ids += [str(s.id) for s in listed]
            except SchedulerError as exc:
                print(f"could not list configured models: {exc} — {exc.hint}", file=sys.stderr)
                return 2
        known = set(instance.get_dynamic_partitions(configured_models_partitions.name))
        new = [m for m in model_ids if m not in known]
        # An id chap does not have gets no partition, run or report (nor an overview row).
        unknown = [] if args.all else unknown_to_chap(new, lambda: _list_models(defs))
        for model_id in unknown:
            print(f"configured model {model_id}: NOT IN CHAP — chap lists no configured model with this id; nothing was run")
        model_ids = [m for m in model_ids if m not in unknown]
        new = [m for m in new if m not in unknown]
        if new:
            instance.add_dynamic_partitions(configured_models_partitions.name, new)
        failures = len(unknown)
        names = {str(s.id): s.name for s in listed}
        if args.model_name and len(model_ids) == 1:
            names[model_ids[0]] = args.model_name
        # Several models: each in its own process, at most the per-DHIS2 limit at once (cli_fanout.py).
        limit = cli_fanout.limit_for(instance) if len(model_ids) > 1 else None
        if limit and limit.value > 1 and os.environ.get("DAGSTER_HOME"):
            location = args.code_location or code_location_name()
            failures += cli_fanout.run_models(model_ids, args, location, names, limit, main)
            return 1 if failures else 0
        # Runs carry the code location's origin, so the UI lists, re-executes and relaunches them.
        runs = stack.enter_context(cli_runs(instance, JOB_NAME, args.code_location))
        for model_id in model_ids:
            result = runs.run(
                model_id,
                {
                    "ops": {"probe_covariates": {"config": window}}
                    | ({"submit_prediction": {"config": {"force": True}}} if args.force else {}),
                    "loggers": {"console": {"config": {"log_level": "INFO"}}},
                },
                cli_run_tags(names.get(model_id)),
            )
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=report_asset_key, asset_partitions=[model_id]), limit=1
            ).records
            report = records[0].asset_materialization if records and records[0].run_id == result.run_id else None
            meta = report.metadata if report else {}
            status = text(meta, Key.STATUS) if report else ("succeeded" if result.is_success else "failed")
            where = f"asset {report_asset_key.to_user_string()} partition {model_id}, run {result.run_id}"
            line = f"configured model {model_id}: {status.upper()}"
            if text(meta, Key.FAILED_STEP):
                line += f" at {text(meta, Key.FAILED_STEP)}: {text(meta, Key.ERROR)}"
                # The fix, as `check` prints it: the report's "What to do", not only in Dagster's log on stderr.
                fix = text(meta, Key.HINT).strip().replace("\n", "\n       ")
                line += f"\n  fix: {fix}" if fix else ""
            elif status == "skipped" and Key.ERROR in meta:
                line += f": {text(meta, Key.ERROR)}"
            warned = text(meta, Key.WARNINGS_TEXT)
            for warning in filter(None, warned.splitlines()):  # succeeded with warnings: say which, one a line
                line += f"\n  warning: {warning}"
            print(f"{line}\n  report: {where}")
            if report and args.report_dir:
                args.report_dir.mkdir(parents=True, exist_ok=True)
                path = args.report_dir / f"{model_id}.md"
                path.write_text(text(meta, Key.REPORT))
                print(f"  report file: {path}")
            failures += 0 if result.is_success else 1
            if status == "canceled":  # Ctrl-C: say what may still run in chap, and stop here
                stop_after_interrupt(runs, result, text(meta, Key.REPORT),
                                     remaining=not args.one_of_many)
                break
    return 1 if failures else 0


def _list_models(defs: dg.Definitions):
    # Outside a run the resource reports a missing or refused DHIS2_* variable when used (a SchedulerError).
    with dg.build_resources({"dhis2": defs.resources["dhis2"]}) as resources:
        with resources.dhis2.chap(get_settings()) as chap:
            return chap.list_prediction_setups()


if __name__ == "__main__":
    raise SystemExit(main())
