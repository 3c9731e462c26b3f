"""Preflight: "will my predictions work?", answered before anything runs.

One ordered list of checks, each with a status (``ok``, ``warning``, ``error``), what was
found and how to fix it. The command line (``chap-scheduler-run check``) and the Dagster job
``check_connections`` both call :func:`run_preflight`; neither adds logic of its own.

Nothing here writes to DHIS2 or chap: every request is a GET. Secrets are never formatted
into a finding; as a second line of defence every finding and fix is scrubbed of the values
of secret environment variables before it leaves this module.

Dagster-free: the caller passes how to open DHIS2 and chap (the ``dhis2`` resource) and the
Dagster instance checks.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import ValidationError

from ..settings import SchedulerSettings
from .analytics_requests import plan_id_filter_blocks
from .chap_client import ChapClient
from .chap_models import PredictionSetup
from .chap_schedules import InvalidCron, timezone, validate_cron
from .credential_scope import BASE_URL_ENV, PASSWORD_ENV, TOKEN_ENV, USERNAME_ENV, Dhis2Credentials
from .dhis2_reader import ORG_UNITS_PATH, Dhis2Reader, org_unit_params
from .errors import Dhis2AuthFailed, SchedulerError, redact_url
from .partition_keys import key_order
from .periods import periods_back
from .run_window import (
    ProbeResult,
    WindowRequest,
    probe_latest_common_period,
    resolve_window,
    row_estimate,
    setup_period_type,
    setup_start,
)

Status = Literal["ok", "warning", "error"]
OK: Status = "ok"
WARNING: Status = "warning"
ERROR: Status = "error"

SCHEMA_VERSION = 1
ENV_PREFIXES = ("DHIS2_", "CHAP_SCHEDULER_")
# Names whose values are never shown: DHIS2 credentials and anything that looks like one
# (webhook URLs carry tokens, SMTP passwords, ...), whoever adds the setting.
_SECRET_NAME = re.compile(r"PASS|TOKEN|SECRET|WEBHOOK|API_KEY|CREDENTIAL|PRIVATE_KEY", re.IGNORECASE)
NUMERIC_VALUE_TYPES = frozenset(
    {
        "NUMBER",
        "INTEGER",
        "INTEGER_POSITIVE",
        "INTEGER_NEGATIVE",
        "INTEGER_ZERO_OR_POSITIVE",
        "PERCENTAGE",
        "UNIT_INTERVAL",
    }
)
DATA_ELEMENTS_PATH = "/api/dataElements"
ROUTE_CODE = "chap"
CLOCK_SKEW_WARNING_SECONDS = 300
# chap's synchronous POSTs can take 30 s and more; DHIS2's route default read timeout is 5 s.
ROUTE_TIMEOUT_ADVISED_SECONDS = 30
# A preflight answers in seconds: one quick retry, not the run's full backoff.
PREFLIGHT_GET_ATTEMPTS = 2
PREFLIGHT_TIMEOUT_SECONDS = 20.0


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


@dataclass
class Check:
    name: str
    status: Status
    finding: str
    fix: str = ""
    model: str = ""  # chap configured-model id, for the per-model checks
    seconds: float = 0.0


@dataclass
class Preflight:
    """The outcome of one preflight: every check in order, and how long it took."""

    checks: list[Check] = field(default_factory=list)
    dhis2_url: str = ""
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    duration_seconds: float = 0.0
    model_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(c.status == ERROR for c in self.checks)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def count(self, status: Status) -> int:
        return sum(1 for c in self.checks if c.status == status)

    @property
    def status_word(self) -> str:
        if not self.ok:
            return "failed"
        return "passed with warnings" if self.count(WARNING) else "passed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": SCHEMA_VERSION,
            "status": self.status_word,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "dhis2_url": self.dhis2_url,
            "checked_at": self.started_at.isoformat(timespec="seconds"),
            "duration_seconds": round(self.duration_seconds, 3),
            "counts": {s: self.count(s) for s in (OK, WARNING, ERROR)},
            "model_seconds": {k: round(v, 3) for k, v in self.model_seconds.items()},
            "checks": [asdict(c) | {"seconds": round(c.seconds, 3)} for c in self.checks],
        }


# ---- rendering ------------------------------------------------------------------------------

_MARKS = {
    True: {OK: "✓", WARNING: "!", ERROR: "✗"},
    False: {OK: "OK  ", WARNING: "WARN", ERROR: "FAIL"},
}


def render_text(preflight: Preflight, *, unicode: bool) -> str:
    """One line per check (mark, name, finding), the fix indented below; a summary line last."""
    marks = _MARKS[unicode]
    lines = []
    for c in preflight.checks:
        lines.append(f"{marks[c.status]} {c.name}: {c.finding}")
        if c.fix and c.status != OK:
            lines.append(f"{'  ' if unicode else '     '}fix: {c.fix}")
    dash = "—" if unicode else "-"
    lines.append(
        f"{preflight.status_word.upper()} {dash} {preflight.count(OK)} ok, {_plural(preflight.count(WARNING), 'warning')}, "
        f"{preflight.count(ERROR)} failed, in {preflight.duration_seconds:.1f} s"
    )
    text = "\n".join(lines)
    return text if unicode else _ascii(text)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


_ASCII = str.maketrans({"…": "...", "—": "-", "–": "-", "×": "x", "→": "->", "‘": "'", "’": "'", "“": '"', "”": '"'})


def _ascii(text: str) -> str:
    """Plain ASCII for logs, pipes and old consoles; messages quoted from DHIS2 or chap may carry anything."""
    return text.translate(_ASCII).encode("ascii", "replace").decode("ascii")


def render_markdown(preflight: Preflight) -> str:
    def cell(text: str) -> str:
        return " ".join(text.split()).replace("|", "\\|")

    lines = [
        f"# chap-scheduler health: {preflight.status_word}",
        "",
        f"DHIS2 `{preflight.dhis2_url or 'not set'}`, checked {preflight.started_at.isoformat(timespec='seconds')} "
        f"in {preflight.duration_seconds:.1f} s.",
        "",
        "| status | check | finding | fix |",
        "|---|---|---|---|",
    ]
    for c in preflight.checks:
        status = "**FAILED**" if c.status == ERROR else c.status
        lines.append(f"| {status} | {cell(c.name)} | {cell(c.finding)} | {cell(c.fix) if c.status != OK else ''} |")
    return "\n".join(lines) + "\n"


# ---- the checks -----------------------------------------------------------------------------


def env_names_set(environ: Mapping[str, str]) -> list[str]:
    return sorted(k for k, v in environ.items() if k.startswith(ENV_PREFIXES) and v)


def connection_from_env(environ: Mapping[str, str]) -> Dhis2Credentials | None:
    """The DHIS2_* variables as they are, incomplete or not (check_settings names what is missing)."""
    base_url = environ.get(BASE_URL_ENV, "").strip()
    if not base_url:
        return None
    return Dhis2Credentials(
        base_url=base_url,
        username=environ.get(USERNAME_ENV, ""),
        password=environ.get(PASSWORD_ENV, ""),
        token=environ.get(TOKEN_ENV, ""),
    )


def check_settings(
    environ: Mapping[str, str], dotenv: Mapping[str, str | None] | None = None
) -> tuple[list[Check], SchedulerSettings]:
    """Parse the CHAP_SCHEDULER_* settings and look at which DHIS2_* are there (names only)."""
    checks = []
    started = time.perf_counter()
    names = env_names_set(environ)
    try:
        settings = SchedulerSettings()
        problems = []
        try:
            timezone(settings.schedule_timezone)
        except InvalidCron as exc:
            problems.append(f"CHAP_SCHEDULER_SCHEDULE_TIMEZONE: {exc}")
        if problems:
            checks.append(Check("settings", ERROR, "; ".join(problems),
                                "Use an IANA time zone name such as UTC or Africa/Freetown."))
            # Already reported; the remaining checks count "today" in UTC rather than crash.
            settings = settings.model_copy(update={"schedule_timezone": "UTC"})
        else:
            checks.append(Check("settings", OK, f"CHAP_SCHEDULER_* settings parse; set: {_names(names)}"))
    except ValidationError as exc:
        # The field and the complaint only: an input value could be a secret.
        problems = [f"CHAP_SCHEDULER_{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()]
        checks.append(
            Check("settings", ERROR, "; ".join(problems),
                  "Fix these variables in the environment or .env (see README, Configuration); "
                  "an empty value means the default.")
        )
        settings = SchedulerSettings.model_construct()
    # DHIS2_* are read from the process environment by Dagster's EnvVar, not from .env by this command.
    dotenv_only = sorted(
        k for k, v in (dotenv or {}).items() if k.startswith("DHIS2_") and v and not environ.get(k)
    )
    missing = []
    if not environ.get("DHIS2_BASE_URL"):
        missing.append("DHIS2_BASE_URL")
    if not environ.get("DHIS2_TOKEN") and not (environ.get("DHIS2_USERNAME") and environ.get("DHIS2_PASSWORD")):
        missing.append("DHIS2_TOKEN or DHIS2_USERNAME and DHIS2_PASSWORD")
    if missing:
        hint = "Set them in the environment of the code location (export, .env under dagster dev/compose)."
        if dotenv_only:
            hint += f" {', '.join(dotenv_only)} are in .env only: export them (set -a; . ./.env; set +a)."
        checks.append(Check("DHIS2 environment", ERROR, f"not set: {', '.join(missing)}", hint))
    else:
        how = "DHIS2_TOKEN (personal access token)" if environ.get("DHIS2_TOKEN") else "DHIS2_USERNAME/DHIS2_PASSWORD"
        finding = f"DHIS2_BASE_URL and {how} are set"
        if dotenv_only:
            checks.append(Check("DHIS2 environment", WARNING, finding + f"; {', '.join(dotenv_only)} only in .env",
                                "Export them too, or remove them from .env, so every process uses the same values."))
        else:
            checks.append(Check("DHIS2 environment", OK, finding))
    for c in checks:
        c.seconds = time.perf_counter() - started
    return checks, settings


def _names(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none (all defaults)"


def parse_server_time(server_date: str | None, zone: str | None) -> datetime | None:
    """DHIS2's ``serverDate`` is local time without an offset; ``serverTimeZoneId`` says which."""
    if not server_date:
        return None
    try:
        parsed = datetime.fromisoformat(server_date.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        try:
            parsed = parsed.replace(tzinfo=ZoneInfo(zone) if zone else UTC)
        except (ZoneInfoNotFoundError, ValueError):
            parsed = parsed.replace(tzinfo=UTC)
    return parsed


def check_dhis2(
    reader: Dhis2Reader, conn: Dhis2Credentials, now: Callable[[], datetime]
) -> tuple[list[Check], list[str] | None]:
    """System info (version, server time, clock skew), then who we are.

    Returns the checks and the user's authorities, or None when DHIS2 cannot be used.
    """
    url = redact_url(conn.base_url)
    checks: list[Check] = []
    started = time.perf_counter()
    auth_error: Dhis2AuthFailed | None = None
    try:
        before = now()
        info = reader.system_info()
        after = now()
    except Dhis2AuthFailed as exc:
        auth_error = exc
    except SchedulerError as exc:
        checks.append(Check("DHIS2", ERROR, f"{exc} (the checks that need DHIS2 were not run)", exc.hint,
                            seconds=time.perf_counter() - started))
        return checks, None
    if auth_error is None:
        server = parse_server_time(info.server_date, info.server_time_zone)
        local = before + (after - before) / 2
        if server is not None:
            skew = (server - local).total_seconds()
            clock = f"server time {info.server_date} {info.server_time_zone or ''}".rstrip()
            clock += f", clock skew {skew:+.0f} s against this machine"
        else:
            skew, clock = 0.0, "server time unknown"
        finding = f"DHIS2 {info.version} at {url} ({info.system_name or 'unnamed'}); {clock}"
        if abs(skew) > CLOCK_SKEW_WARNING_SECONDS:
            checks.append(Check("DHIS2", WARNING, finding,
                                "Synchronise the clocks (NTP) of DHIS2 and this machine: 'today' decides the "
                                "window in offset mode and when schedules fire.",
                                seconds=time.perf_counter() - started))
        else:
            checks.append(Check("DHIS2", OK, finding, seconds=time.perf_counter() - started))
    else:
        checks.append(Check("DHIS2", OK, f"something answers at {url}, but not to these credentials (next check)",
                            seconds=time.perf_counter() - started))
    started = time.perf_counter()
    try:
        if auth_error is not None:
            raise auth_error
        me = reader.get("/api/me", params={"fields": "username,name,displayName,authorities"})
    except SchedulerError as exc:
        checks.append(Check("DHIS2 credentials", ERROR, str(exc), exc.hint, seconds=time.perf_counter() - started))
        return checks, None
    authorities = sorted(str(a) for a in (me.get("authorities") or []))
    shown = "ALL (superuser)" if "ALL" in authorities else f"{len(authorities)} authorities"
    if authorities and "ALL" not in authorities:
        shown += ": " + ", ".join(authorities[:8]) + (", ..." if len(authorities) > 8 else "")
    name = me.get("displayName") or me.get("name") or ""
    checks.append(
        Check("DHIS2 credentials", OK,
              f"{conn.auth_kind} works: user {me.get('username', conn.username)!r}"
              + (f" ({name})" if name else "") + f"; {shown}",
              seconds=time.perf_counter() - started)
    )
    return checks, authorities


def check_route(reader: Dhis2Reader, authorities: Sequence[str]) -> Check:
    """The route 'chap' exists, is enabled, and this user may run it."""
    started = time.perf_counter()
    params = [
        ("filter", f"code:eq:{ROUTE_CODE}"),
        ("fields", "id,code,name,url,disabled,authorities,responseTimeoutSeconds"),
        ("paging", "false"),
    ]
    try:
        routes = reader.get("/api/routes", params=params).get("routes", [])
    except SchedulerError as exc:
        # Listing routes needs metadata read access; running one does not. chap-core's check tells.
        return Check("route chap", WARNING, f"could not list DHIS2 routes ({exc}); the chap-core check runs it",
                     "Give the user read access to routes (or ignore: running the route is what counts).",
                     seconds=time.perf_counter() - started)
    route = next((r for r in routes if r.get("code") == ROUTE_CODE), None)
    elapsed = time.perf_counter() - started
    if route is None:
        return Check("route chap", ERROR, "DHIS2 has no route with code 'chap' (none this user can see)",
                     "Create a DHIS2 route with code 'chap' whose URL points at chap-core and ends in '/**' "
                     "(POST /api/routes, or the Route Manager app), and share it with this user.", seconds=elapsed)
    target = redact_url(str(route.get("url", "")))
    if route.get("disabled"):
        return Check("route chap", ERROR, f"the route 'chap' ({target}) is disabled",
                     "Enable it in DHIS2 (disabled: false).", seconds=elapsed)
    needed = [str(a) for a in route.get("authorities") or []]
    if needed and "ALL" not in authorities and not set(needed) & set(authorities):
        return Check("route chap", ERROR,
                     f"the route 'chap' ({target}) needs one of the authorities {', '.join(needed)}; the user has none",
                     "Give the DHIS2 user a role with one of these authorities, or run as a user who has one.",
                     seconds=elapsed)
    timeout = route.get("responseTimeoutSeconds")
    finding = f"route 'chap' -> {target}" + (f", response timeout {timeout} s" if timeout else "")
    if isinstance(timeout, int | float) and timeout < ROUTE_TIMEOUT_ADVISED_SECONDS:
        return Check("route chap", WARNING, finding,
                     f"Raise the route's responseTimeoutSeconds to {ROUTE_TIMEOUT_ADVISED_SECONDS}: chap can take "
                     "that long to accept a prediction.", seconds=elapsed)
    return Check("route chap", OK, finding + ("; the user may run it" if needed else "; open to every user"),
                 seconds=elapsed)


def check_chap(reader: Dhis2Reader, chap: ChapClient) -> tuple[list[Check], list[PredictionSetup] | None]:
    """chap-core through the route: version, API generation, configured models, health."""
    checks: list[Check] = []
    started = time.perf_counter()
    try:
        info = chap.system_info()
        setups = chap.list_prediction_setups()
    except SchedulerError as exc:
        checks.append(Check("chap-core", ERROR, f"{exc} (the configured models were not checked)", exc.hint,
                            seconds=time.perf_counter() - started))
        return checks, None
    api = chap.api.value if chap.api else "unknown"
    checks.append(Check("chap-core", OK, f"chap-core {info.chap_core_version} through the route (API: {api}); "
                        f"{_plural(len(setups), 'configured model')}", seconds=time.perf_counter() - started))
    checks.append(check_chap_health(reader))
    if not setups:
        checks.append(Check("configured models", ERROR, "chap has no configured models",
                            "Create one in chap (a prediction setup: model, data elements, org units, period type)."))
    return checks, setups


def check_chap_health(reader: Dhis2Reader) -> Check:
    """chap's readiness (database, redis, workers), through the route; liveness on older builds."""
    started = time.perf_counter()
    for path in ("/api/routes/chap/run/health/ready", "/api/routes/chap/run/health"):
        try:
            answer = reader.get(path)
        except SchedulerError as exc:
            status = getattr(exc, "status_code", None)
            if status == 404 and path.endswith("/ready"):
                continue
            # 503 on /health/ready: a database, Redis or worker is down, so predictions would not run.
            finding = f"chap-core is not ready: {_health_detail(exc) or exc}" if status == 503 else str(exc)
            return Check("chap-core health", ERROR, finding,
                         "Check chap-core's database, Redis and Celery worker (docker compose ps in chap-core) "
                         "and its log.", seconds=time.perf_counter() - started)
        checks = answer.get("checks") if isinstance(answer, dict) else None
        detail = ", ".join(f"{k} {v}" for k, v in checks.items()) if isinstance(checks, dict) else ""
        status_text = answer.get("status", "?") if isinstance(answer, dict) else str(answer)[:40]
        finding = f"{path.rsplit('/run', 1)[1]}: {status_text}" + (f" ({detail})" if detail else "")
        return Check("chap-core health", OK, finding, seconds=time.perf_counter() - started)
    return Check("chap-core health", WARNING, "no health endpoint answered", "", seconds=time.perf_counter() - started)


def _health_detail(exc: BaseException) -> str:
    """chap's own words for what is down ({"checks": {"celery": "error: ..."}}), when the reader kept them."""
    payload = getattr(exc.__context__, "payload", None)  # the dhis2-client error the reader translated
    checks = payload.get("checks") if isinstance(payload, dict) else None
    if not isinstance(checks, dict):
        return ""
    return "HTTP 503 on /health/ready: " + ", ".join(f"{k} {v}" for k, v in checks.items())


# ---- per configured model -------------------------------------------------------------------

TargetChecks = Callable[[Dhis2Reader, PredictionSetup], list["Check"]]


def lookup_data_elements(reader: Dhis2Reader, ids: Iterable[str]) -> dict[str, dict]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    answer = reader.get(
        DATA_ELEMENTS_PATH,
        params=[
            ("filter", f"id:in:[{','.join(wanted)}]"),
            ("fields", "id,displayName,valueType,aggregationType,zeroIsSignificant"),
            ("paging", "false"),
        ],
    )
    return {str(d.get("id")): d for d in answer.get("dataElements", [])}


def check_covariate_elements(reader: Dhis2Reader, setup: PredictionSetup) -> Check:
    sources = setup.covariate_sources
    if not sources:
        return Check("data elements", ERROR, "the configured model maps no covariate to a DHIS2 data element",
                     "Recreate the configured model in chap with its covariates' data elements.")
    found = lookup_data_elements(reader, (s.data_element_id for s in sources))
    missing = [f"{s.covariate} ({s.data_element_id})" for s in sources if s.data_element_id not in found]
    if missing:
        return Check("data elements", ERROR,
                     f"not found in DHIS2 (or not visible to the user): {', '.join(missing)}",
                     "Fix the covariate's data element in chap's configured model, or share the data element "
                     "with this DHIS2 user (metadata read).")
    return Check("data elements", OK, f"{len(sources)} covariate data elements exist: "
                 + ", ".join(f"{s.covariate}={s.data_element_id}" for s in sources))


def check_freshness(
    reader: Dhis2Reader, setup: PredictionSetup, settings: SchedulerSettings
) -> tuple[Check, ProbeResult | None]:
    """The freshness probe the calculated window uses; names the covariate that holds it back."""
    period_type = setup_period_type(setup)
    try:
        probed = probe_latest_common_period(
            reader, setup, period_type, max_url_bytes=settings.max_url_bytes, concurrency=settings.fetch_concurrency
        )
    except SchedulerError as exc:
        return Check("covariate freshness", ERROR, str(exc), exc.hint), None
    last_complete = periods_back(settings.today(), period_type, 1)
    latest = ", ".join(f"{c} {p}" for c, p in probed.latest_by_covariate.items())
    behind = last_complete.ordinal - probed.end.ordinal if probed.end < last_complete else 0
    if behind > 0:
        laggards = sorted(c for c, p in probed.latest_by_covariate.items() if p == probed.end.id)
        return Check(
            "covariate freshness", WARNING,
            f"{', '.join(laggards)} lags {behind} period(s) behind the last complete period {last_complete.id}; "
            f"the calculated window ends at {probed.end.id} (latest with data: {latest})",
            "Import the newer values into DHIS2 and run analytics tables; or accept the earlier end.",
        ), probed
    return Check("covariate freshness", OK, f"every covariate has data for {probed.end.id} (latest: {latest})"), probed


def check_org_units(reader: Dhis2Reader, setup: PredictionSetup, settings: SchedulerSettings) -> Check:
    """The org units exist and have geometry (the run drops those without)."""
    units = setup.org_units
    if not units:
        return Check("org units", ERROR, "the configured model has no org units",
                     "Recreate the configured model in chap with org units.")
    fields = "id,geometry"
    empty = len(reader.url_for(ORG_UNITS_PATH, org_unit_params((), fields)))
    blocks = plan_id_filter_blocks(empty, units, max_url_bytes=settings.max_url_bytes)
    with ThreadPoolExecutor(max_workers=max(1, min(settings.fetch_concurrency, len(blocks)))) as pool:
        answers = list(pool.map(lambda b: reader.org_units(b, fields), blocks))
    with_geometry, found = set(), set()
    for answer in answers:
        for unit in answer:
            found.add(unit.get("id"))
            if unit.get("geometry"):
                with_geometry.add(unit.get("id"))
    missing = [u for u in units if u not in found]
    no_geometry = [u for u in units if u in found and u not in with_geometry]
    if missing:
        return Check("org units", ERROR,
                     f"{len(missing)} of {len(units)} org units do not exist in DHIS2 or are not visible to the user: "
                     f"{_some(missing)}",
                     "Fix the org units of the configured model in chap, or widen the DHIS2 user's data view "
                     "org units.")
    if len(no_geometry) == len(units):
        return Check("org units", ERROR, f"none of the {len(units)} org units has geometry",
                     "Import org-unit boundaries into DHIS2 (Maintenance or the GeoJSON import); chap needs them.")
    if no_geometry:
        return Check("org units", WARNING,
                     f"{len(units)} org units exist; {len(no_geometry)} without geometry (their data is not sent): "
                     f"{_some(no_geometry)}",
                     "Add their boundaries in DHIS2 (GeoJSON import), or remove them from the configured model.")
    return Check("org units", OK, f"{len(units)} org units exist, all with geometry")


def check_window(setup: PredictionSetup, settings: SchedulerSettings, probed: ProbeResult) -> Check:
    """The window the calculated mode would choose now, and its row estimate against the budget."""
    try:
        window, _ = resolve_window(
            WindowRequest("calculated"), setup, today=settings.today(), period_cap=settings.period_cap,
            probe=lambda _pt: probed,
        )
    except SchedulerError as exc:
        return Check("window", ERROR, str(exc), exc.hint)
    elements, periods, units = len(setup.covariate_sources), len(window.periods), len(setup.org_units)
    estimate = row_estimate(elements, periods, units)
    finding = (
        f"calculated window {window.start.id}..{window.end.id} ({periods} {setup.period_type} periods, cap "
        f"{settings.period_cap}); about {estimate:,} analytics rows ({elements} x {periods} x {units:,}) "
        f"of the budget {settings.row_budget:,}"
    )
    if estimate > settings.row_budget:
        return Check("window", ERROR, finding + ": over the budget, the run would be refused",
                     "Check the configured model's org units in chap; raise CHAP_SCHEDULER_ROW_BUDGET if intended.")
    return Check("window", OK, finding)


def check_schedule(setup: PredictionSetup, settings: SchedulerSettings, now: datetime) -> Check:
    expression = (setup.schedule_cron_expression or "").strip()
    if not expression:
        return Check("chap schedule", OK, "no cron in chap: runs by hand or by the operator schedule only")
    tz = settings.schedule_timezone
    try:
        normalized = validate_cron(expression)
        zone = timezone(tz)
        upcoming = croniter(normalized, now.astimezone(zone)).get_next(datetime)
    except (InvalidCron, ValueError, KeyError) as exc:
        return Check("chap schedule", ERROR if setup.schedule_enabled else WARNING,
                     f"cron {expression!r} is not usable: {exc}",
                     "Fix scheduleCronExpression in chap (five fields: minute hour day-of-month month day-of-week).")
    when = upcoming.strftime("%Y-%m-%d %H:%M") + f" {tz}"
    if not setup.schedule_enabled:
        return Check("chap schedule", OK, f"cron {normalized!r} set but scheduleEnabled is false: not launched")
    return Check("chap schedule", OK, f"cron {normalized!r} ({tz}): next due {when}")


def check_quantile_targets(reader: Dhis2Reader, setup: PredictionSetup) -> list[Check]:
    """The publishing preflight (``core.target_preflight``), the same one ``publish_forecasts`` runs first.

    Each quantileTargets data element exists, is readable and takes numbers, its data sets fit the period
    type, ``openFuturePeriods`` covers the horizon and zeros are stored (warnings), and the org units lie
    in the user's data capture hierarchy. It reads only; nothing is written.
    """
    from ..settings import get_settings
    from .prediction_steps import prediction_horizon
    from .target_preflight import check_setup_targets

    try:
        settings = get_settings()
    except ValidationError:  # already a finding of the settings check: the horizon takes the defaults
        settings = SchedulerSettings.model_construct()
    try:
        horizon, _ = prediction_horizon(setup, settings)
    except SchedulerError as exc:  # an unknown period type is reported by the window check
        return [Check("quantile targets", ERROR, str(exc), exc.hint)]
    findings = check_setup_targets(reader, setup, horizon=horizon)
    status = {"ok": OK, "warning": WARNING, "error": ERROR}
    problems = [f for f in findings if f.level != "ok"]
    if not problems:
        targets = [f.target for f in findings if f.target]
        detail = f"{len(targets)} ready to publish: {', '.join(targets)}" if targets else findings[0].message
        return [Check("quantile targets", OK, detail)]
    return [
        Check("quantile targets", status[f.level], f.message, f.fix)
        for f in problems
    ]


def check_model(
    reader: Dhis2Reader,
    setup: PredictionSetup,
    settings: SchedulerSettings,
    *,
    now: datetime,
    target_checks: TargetChecks,
) -> list[Check]:
    """Every check of one configured model, in order. A failing one does not stop the others."""
    checks: list[Check] = []

    def timed(name: str, fn: Callable[[], Check | list[Check]]) -> None:
        started = time.perf_counter()
        try:
            result = fn()
        except SchedulerError as exc:  # e.g. DHIS2 refused one lookup: this check fails, the others run
            result = Check(name, ERROR, str(exc), exc.hint)
        out = result if isinstance(result, list) else [result]
        for c in out:
            c.seconds = time.perf_counter() - started
            c.model = str(setup.id)
            c.name = f"model {setup.id}: {c.name}"
        checks.extend(out)

    try:
        period_type = setup_period_type(setup)
        setup_start(setup, period_type)
    except SchedulerError as exc:
        timed("loads", lambda: Check("loads", ERROR, str(exc), exc.hint))
        return checks
    timed("loads", lambda: Check(
        "loads", OK,
        f"{setup.name!r} ({setup.model_name or 'model ?'}): {_ADVERB.get(period_type.value, period_type.value)} "
        f"from {setup.start_period}, "
        f"{len(setup.org_units):,} org units, {len(setup.covariate_sources)} covariates",
    ))
    timed("data elements", lambda: check_covariate_elements(reader, setup))
    probed: list[ProbeResult | None] = [None]

    def freshness() -> Check:
        check, probed[0] = check_freshness(reader, setup, settings)
        return check

    timed("covariate freshness", freshness)
    timed("org units", lambda: check_org_units(reader, setup, settings))
    if probed[0] is not None:
        result = probed[0]
        timed("window", lambda: check_window(setup, settings, result))
    timed("chap schedule", lambda: check_schedule(setup, settings, now))
    timed("quantile targets", lambda: target_checks(reader, setup))
    return checks


_ADVERB = {"day": "daily", "week": "weekly", "month": "monthly", "quarter": "quarterly", "year": "yearly"}


def _some(ids: Sequence[str], limit: int = 10) -> str:
    return ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


# ---- the whole preflight --------------------------------------------------------------------


def run_preflight(
    environ: Mapping[str, str],
    *,
    open_reader: Callable[[Dhis2Credentials, SchedulerSettings], Dhis2Reader],
    open_chap: Callable[[Dhis2Credentials, SchedulerSettings], ChapClient],
    model_ids: Sequence[str] = (),
    instance_checks: Callable[[], list[Check]] | None = None,
    target_checks: TargetChecks = check_quantile_targets,
    dotenv: Mapping[str, str | None] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Preflight:
    """Run every check in order. Reads only (GETs); takes a few seconds per configured model."""
    clock = time.perf_counter()
    result = Preflight(started_at=now())
    checks, settings = check_settings(environ, dotenv)
    result.checks += checks
    settings = settings.model_copy(update={
        "http_get_attempts": min(settings.http_get_attempts, PREFLIGHT_GET_ATTEMPTS),
        "http_timeout_seconds": min(settings.http_timeout_seconds, PREFLIGHT_TIMEOUT_SECONDS),
    })
    conn = connection_from_env(environ)
    if conn is not None:
        result.dhis2_url = redact_url(conn.base_url)
        _check_services(result, conn, settings, model_ids, open_reader, open_chap, target_checks, now)
    if instance_checks is not None:
        started = time.perf_counter()
        for c in instance_checks():
            c.seconds = c.seconds or time.perf_counter() - started
            result.checks.append(c)
    result.duration_seconds = time.perf_counter() - clock
    scrub(result, secret_values(environ))
    return result


def _check_services(
    result: Preflight,
    conn: Dhis2Credentials,
    settings: SchedulerSettings,
    model_ids: Sequence[str],
    open_reader: Callable[[Dhis2Credentials, SchedulerSettings], Dhis2Reader],
    open_chap: Callable[[Dhis2Credentials, SchedulerSettings], ChapClient],
    target_checks: TargetChecks,
    now: Callable[[], datetime],
) -> None:
    with open_reader(conn, settings) as reader:
        checks, authorities = check_dhis2(reader, conn, now)
        result.checks += checks
        if authorities is None:
            return
        result.checks.append(check_route(reader, authorities))
        with open_chap(conn, settings) as chap:
            checks, setups = check_chap(reader, chap)
        result.checks += checks
        if setups is None:
            return
        by_id = {str(s.id): s for s in setups}
        wanted = list(dict.fromkeys(model_ids)) or [str(s.id) for s in sorted(setups, key=lambda s: s.id)]
        for model_id in wanted:
            started = time.perf_counter()
            setup = by_id.get(model_id)
            if setup is None:
                result.checks.append(Check(
                    f"model {model_id}: loads", ERROR,
                    f"chap has no configured model with id {model_id}; it has {sorted(by_id, key=key_order)}",
                    "Name an id chap lists (chap-scheduler-run check without ids checks them all).", model=model_id,
                ))
                continue
            result.checks += check_model(reader, setup, settings, now=now(), target_checks=target_checks)
            result.model_seconds[model_id] = time.perf_counter() - started


# ---- secrets --------------------------------------------------------------------------------


def secret_values(environ: Mapping[str, str]) -> list[str]:
    """Values of every secret-looking variable (and DAGSTER_PG_PASSWORD), longest first."""
    values = {v for k, v in environ.items() if is_secret_name(k) and v and len(v) >= 4}
    return sorted(values, key=len, reverse=True)


def scrub(preflight: Preflight, secrets: Sequence[str]) -> None:
    for c in preflight.checks:
        for s in secrets:
            c.finding = c.finding.replace(s, "***")
            c.fix = c.fix.replace(s, "***")


def default_dotenv(path: str | os.PathLike[str] = ".env") -> dict[str, str | None]:
    """The .env file pydantic-settings reads (working directory), as name -> value."""
    from dotenv import dotenv_values

    return dict(dotenv_values(Path(path))) if Path(path).is_file() else {}
