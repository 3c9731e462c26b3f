"""The DHIS2 resource: where DHIS2 is and who we are there, from environment variables.

Credentials are bound with ``dg.EnvVar`` so the UI shows the variable names, never the
values, and nothing secret lands in run config. chap is reached through the same DHIS2
(its route ``chap``), with the same credentials.
"""

from __future__ import annotations

import os

import dagster as dg
from pydantic import Field

from ..core.chap_client import ChapClient
from ..core.dhis2_reader import Dhis2Reader
from ..settings import SchedulerSettings, get_settings


class Dhis2Resource(dg.ConfigurableResource):
    """A DHIS2 instance with chap-core behind its route 'chap'. Basic auth, or a personal access token."""

    base_url: str = Field(description="DHIS2 base URL including any context path, e.g. https://dhis2.example.org/dhis")
    username: str = Field(default="", description="DHIS2 user (basic auth). Leave empty when a token is used.")
    password: str = Field(default="", description="Password of the DHIS2 user.")
    token: str = Field(default="", description="DHIS2 personal access token (d2pat_…), instead of username/password.")

    def _connection(self, settings: SchedulerSettings | None) -> dict:
        s = settings or get_settings()
        return {
            "username": self.username,
            "password": self.password,
            "token": self.token,
            "timeout_seconds": s.http_timeout_seconds,
            "get_attempts": s.http_get_attempts,
        }

    def reader(self, settings: SchedulerSettings | None = None) -> Dhis2Reader:
        """A new DHIS2 connection. The caller closes it (use ``with``)."""
        return Dhis2Reader(self.base_url, **self._connection(settings))

    def chap(self, settings: SchedulerSettings | None = None) -> ChapClient:
        """A new chap client over this DHIS2's route. The caller closes it (use ``with``)."""
        return ChapClient(self.base_url, **self._connection(settings))


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
