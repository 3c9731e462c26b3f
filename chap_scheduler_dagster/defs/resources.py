"""The DHIS2 resource: where DHIS2 is and who we are there, from environment variables.

The code location binds the resource with :func:`dhis2_resource_definition`: it reads the
DHIS2_* variables itself when a run starts and has no launch config at all, so the
launchpad can neither point it at another URL nor pull ``{env: DHIS2_PASSWORD}`` into a
run (core/credential_scope.py says why). Credentials are only ever sent to the origin of
DHIS2_BASE_URL (or DHIS2_ALLOWED_ORIGINS). chap is reached through the same DHIS2 (its
route ``chap``), with the same credentials, over the same connection (:meth:`Dhis2Resource.connect`).
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg
from pydantic import Field

from ..core.chap_client import ChapClient
from ..core.credential_scope import (
    ALLOWED_ORIGINS_ENV,
    BASE_URL_ENV,
    check_destination,
    credentials_from_env,
    refuse_env_references,
)
from ..core.dhis2_http import Dhis2Connection
from ..core.dhis2_reader import Dhis2Reader
from ..core.errors import SchedulerError
from ..core.run_cause import FIX_MARKER  # the backstop report splits the fix off at it
from ..settings import SchedulerSettings, get_settings


class Dhis2Resource(dg.ConfigurableResource):
    """A DHIS2 instance with chap-core behind its route 'chap'. Basic auth, or a personal access token."""

    base_url: str = Field(description="DHIS2 base URL including any context path, e.g. https://dhis2.example.org/dhis")
    username: str = Field(default="", description="DHIS2 user (basic auth). Leave empty when a token is used.")
    password: str = Field(default="", description="Password of the DHIS2 user.")
    token: str = Field(default="", description="DHIS2 personal access token (d2pat_…), instead of username/password.")

    def _connection(self, settings: SchedulerSettings | None) -> dict[str, Any]:
        s = settings or get_settings()
        if self.password or self.token:
            check_destination(self.base_url, os.environ)  # before any request
        return {
            "username": self.username,
            "password": self.password,
            "token": self.token,
            "timeout_seconds": s.http_timeout_seconds,
            "get_attempts": s.http_get_attempts,
        }

    def connect(self, settings: SchedulerSettings | None = None) -> Dhis2Connection:
        """One connection to this DHIS2 for a run step: ``.chap`` (the route), ``.reader`` (Web API reads) and
        ``.writer()`` (data values) share it. The caller closes it (use ``with``)."""
        return Dhis2Connection(self.base_url, **self._connection(settings))

    def reader(self, settings: SchedulerSettings | None = None) -> Dhis2Reader:
        """Web API reads on a connection of their own. The caller closes it (use ``with``)."""
        return Dhis2Reader(self.connect(settings), owns=True)

    def chap(self, settings: SchedulerSettings | None = None) -> ChapClient:
        """chap over this DHIS2's route, on a connection of its own. The caller closes it (use ``with``)."""
        return ChapClient(self.connect(settings), owns=True)


def dhis2_resource_from_env() -> Dhis2Resource:
    """Bind the resource to env vars by name. A token is used when DHIS2_TOKEN is set.

    Only the presence of DHIS2_TOKEN is read here; the values are resolved by Dagster
    when a run starts, so the UI shows names only.
    """
    if os.environ.get("DHIS2_TOKEN"):
        return Dhis2Resource(base_url=dg.EnvVar("DHIS2_BASE_URL"), token=dg.EnvVar("DHIS2_TOKEN"))
    return Dhis2Resource(
        base_url=dg.EnvVar("DHIS2_BASE_URL"),
        username=dg.EnvVar("DHIS2_USERNAME"),
        password=dg.EnvVar("DHIS2_PASSWORD"),
    )


class UnavailableDhis2(Dhis2Resource):
    """What a sensor (or the command line) gets when the DHIS2_* variables are incomplete or refused: every
    use raises the reason, which a sensor turns into a skipped tick (a run fails at resource initialization)."""

    reason: str = ""
    fix: str = ""

    def _connection(self, settings: SchedulerSettings | None) -> dict[str, Any]:
        raise SchedulerError(self.reason, hint=self.fix)




def dhis2_from_environment() -> Dhis2Resource:
    """The resource from the DHIS2_* variables (raises MissingVariable naming a missing one)."""
    creds = credentials_from_env(os.environ)
    resource = Dhis2Resource(
        base_url=creds.base_url, username=creds.username, password=creds.password, token=creds.token
    )
    check_destination(resource.base_url, os.environ)
    return resource


def _init_dhis2(context: dg.InitResourceContext) -> Dhis2Resource:
    run = context.run
    try:
        if run is not None:
            refuse_env_references(run.run_config)
        return dhis2_from_environment()
    except SchedulerError as exc:
        if run is None:  # a sensor tick or the command line: every use raises the reason (a sensor skips with it)
            # The address still labels overviews, backstop reports and notifications.
            return UnavailableDhis2(base_url=os.environ.get(BASE_URL_ENV, ""), reason=str(exc), fix=exc.hint)
        raise SchedulerError(f"{exc}{FIX_MARKER}{exc.hint}") from None


class Dhis2ResourceDefinition(dg.ResourceDefinition):
    """The ``dhis2`` resource of the code location: no launch config (an empty schema refuses any)."""

    def __init__(self) -> None:
        super().__init__(
            resource_fn=_init_dhis2,
            config_schema={},
            description="DHIS2 with chap-core behind its route 'chap'. Read from the code location's environment "
            "when a run starts: DHIS2_BASE_URL, and DHIS2_USERNAME + DHIS2_PASSWORD or DHIS2_TOKEN; credentials "
            f"go only to DHIS2_BASE_URL's origin (or those in {ALLOWED_ORIGINS_ENV}). Not configurable at launch.",
        )


def dhis2_resource_definition() -> Dhis2ResourceDefinition:
    return Dhis2ResourceDefinition()
