"""``chap-scheduler-run check | info | --version``: the operator's preflight from the shell.

``check`` runs ``core.preflight`` (one line per check: mark, finding, fix; ``--json`` for
monitoring) and exits 0 when nothing failed. ``info`` prints the resolved configuration with
where each value came from; secrets only as set/unset.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import TextIO

from pydantic import ValidationError

from .core.errors import redact_url
from .core.preflight import default_dotenv, is_secret_name, render_text, secret_values
from .settings import SchedulerSettings

PACKAGE = "chap-scheduler-dagster"
LOCATION_MODULE = "chap_scheduler_dagster.definitions"
# The names workspace.yaml (host, dagster dev) and deploy/docker/workspace.yaml give the code location.
LOCATION_NAMES = "chap_scheduler_dagster (workspace.yaml), dhis2 (docker compose)"
DHIS2_VARIABLES = ("DHIS2_BASE_URL", "DHIS2_USERNAME", "DHIS2_PASSWORD", "DHIS2_TOKEN")
OTHER_VARIABLES = ("DAGSTER_HOME",)


def package_version() -> str:
    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        return "0.0.0+unknown"


def _use_unicode(stream: TextIO) -> bool:
    # ✓/✗ only where a person reads them; logs, pipes and old consoles get plain ASCII.
    encoding = (getattr(stream, "encoding", "") or "").lower()
    return bool(getattr(stream, "isatty", lambda: False)()) and "utf" in encoding


# ---- check ---------------------------------------------------------------------------------


def check_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="chap-scheduler-run check",
        description="Will my predictions work? Checks settings, DHIS2, the route 'chap', chap-core, each configured "
        "model and the Dagster daemon. Reads only. Exit 0 when nothing failed (warnings allowed), 1 otherwise.",
    )
    parser.add_argument("model_ids", nargs="*", help="configured-model ids to check (default: every one chap lists)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of lines")
    args = parser.parse_args(argv)

    import dagster as dg  # the Dagster import is the slow part; only check needs it

    from .defs.health import preflight_here

    instance = None
    instance_error: Exception | None = None
    if os.environ.get("DAGSTER_HOME"):
        try:
            instance = dg.DagsterInstance.get()
        except Exception as exc:  # noqa: BLE001 - reported as a failed check
            instance_error = exc
    try:
        preflight = preflight_here(os.environ, instance, tuple(args.model_ids))
    finally:
        if instance is not None:
            instance.dispose()
    if instance_error is not None:
        from .core.preflight import ERROR, Check, scrub

        preflight.checks.append(Check(
            "Dagster instance", ERROR,
            f"the instance in DAGSTER_HOME does not open: {type(instance_error).__name__}: {instance_error}",
            "Check dagster.yaml in DAGSTER_HOME and its DAGSTER_PG_* variables.",
        ))
        scrub(preflight, secret_values(os.environ))
    if args.json:
        print(json.dumps(preflight.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(render_text(preflight, unicode=_use_unicode(sys.stdout)))
    return preflight.exit_code


# ---- info ----------------------------------------------------------------------------------


def resolved_settings(environ: dict[str, str] | os._Environ, dotenv: dict[str, str | None]) -> list[tuple[str, str, str]]:
    """(name, shown value, source) for every setting: env, .env or default. Secrets: set/unset."""
    rows: list[tuple[str, str, str]] = []
    try:
        settings = SchedulerSettings()
        values = settings.model_dump()
    except ValidationError:
        values = {}
    for name, info in SchedulerSettings.model_fields.items():
        env_name = f"CHAP_SCHEDULER_{name.upper()}"
        if environ.get(env_name):
            source = "env"
        elif dotenv.get(env_name):
            source = ".env"
        else:
            source = "default"
        value = values.get(name, info.default) if values else "(invalid: see chap-scheduler-run check)"
        secret = "SecretStr" in str(info.annotation)
        rows.append((env_name, ("set" if value else "unset") if secret else _shown(env_name, value), source))
    for env_name in DHIS2_VARIABLES + OTHER_VARIABLES:
        if environ.get(env_name):
            value, source = environ[env_name], "env"
        elif dotenv.get(env_name):
            value, source = dotenv[env_name] or "", ".env (not read by this command or EnvVar; export it)"
        else:
            value, source = "", "unset"
        rows.append((env_name, _shown(env_name, value), source))
    return rows


def _shown(name: str, value: object) -> str:
    if is_secret_name(name):
        return "set" if value not in (None, "") else "unset"
    if value in (None, ""):
        return "-"
    if name == "DHIS2_BASE_URL":
        return redact_url(str(value))
    return str(value)


def info_main(argv: list[str]) -> int:
    argparse.ArgumentParser(
        prog="chap-scheduler-run info",
        description="Print the resolved configuration (value and source of every setting; secrets as set/unset), "
        "the versions and the code location.",
    ).parse_args(argv)
    from importlib.metadata import version as dist_version

    settings_location = SchedulerSettings().location_name if _settings_ok() else "?"
    lines = [
        f"chap-scheduler-run {package_version()}",
        f"dagster {dist_version('dagster')}, python {sys.version.split()[0]}",
        f"code location: module {LOCATION_MODULE}; location name {LOCATION_NAMES}",
        f"DHIS2 namespace (CHAP_SCHEDULER_LOCATION_NAME): {settings_location or '(none: single DHIS2)'}",
        f".env: {os.path.abspath('.env') if os.path.isfile('.env') else 'none in ' + os.getcwd()}",
        "",
    ]
    rows = resolved_settings(os.environ, default_dotenv())
    width = max(len(r[0]) for r in rows)
    value_width = min(40, max(len(r[1]) for r in rows))
    for name, value, source in rows:
        lines.append(f"{name:<{width}}  {value:<{value_width}}  {source}")
    text = "\n".join(lines)
    dotenv_values = {k: v for k, v in default_dotenv().items() if v}
    for secret in secret_values({**dotenv_values, **os.environ}):  # belt and braces: nothing above formats a secret
        text = text.replace(secret, "***")
    print(text)
    return 0


def _settings_ok() -> bool:
    try:
        SchedulerSettings()
    except ValidationError:
        return False
    return True


# ---- --version -----------------------------------------------------------------------------


def version_main(argv: list[str]) -> int:
    from importlib.metadata import version as dist_version

    print(f"chap-scheduler-run {package_version()} (dagster {dist_version('dagster')})")
    return 0
