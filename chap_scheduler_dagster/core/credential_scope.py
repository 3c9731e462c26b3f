"""Where DHIS2 credentials may go, and where they may come from.

The DHIS2 password (or token) is read from the code location's environment. It may only be
sent to the origin of ``DHIS2_BASE_URL`` (or to an origin listed in ``DHIS2_ALLOWED_ORIGINS``),
and run config may not read environment variables at all: otherwise anyone who can reach
the launchpad could point the resource at their own server with ``{env: DHIS2_PASSWORD}``
and collect the password without ever seeing it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import SchedulerError, redact_url

BASE_URL_ENV = "DHIS2_BASE_URL"
USERNAME_ENV = "DHIS2_USERNAME"
PASSWORD_ENV = "DHIS2_PASSWORD"
TOKEN_ENV = "DHIS2_TOKEN"
ALLOWED_ORIGINS_ENV = "DHIS2_ALLOWED_ORIGINS"

_DEFAULT_PORTS = {"http": 80, "https": 443}


class CredentialsRefused(SchedulerError):
    """DHIS2 credentials would have gone somewhere they must not go; nothing was sent."""


class MissingVariable(SchedulerError):
    """A DHIS2_* variable the resource needs is not set in the code location's environment."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(
            f"the environment variable {name} is not set in the code location ({why})",
            hint=f"Set {name} in the environment of the code location (under docker compose: `.env`, then "
            "restart `user-code` and `daemon`; on a host: the code server's environment) and reload the code "
            "location. Launch config cannot supply it.",
        )
        self.name = name


def origin_of(url: str) -> str:
    """``scheme://host:port`` of a URL, lower-cased, with the scheme's default port filled in."""
    parts = urlsplit(url.strip())
    scheme = (parts.scheme or "").lower()
    host = (parts.hostname or "").lower()
    if not scheme or not host:
        return ""
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        return ""
    return f"{scheme}://{host}:{port}"


def allowed_origins(env: Mapping[str, str]) -> set[str]:
    """The origins credentials may be sent to: DHIS2_BASE_URL's and those in DHIS2_ALLOWED_ORIGINS."""
    origins = set()
    raw = [env.get(BASE_URL_ENV, "")] + env.get(ALLOWED_ORIGINS_ENV, "").replace(",", " ").split()
    for url in raw:
        origin = origin_of(url) if url else ""
        if origin:
            origins.add(origin)
    return origins


def check_destination(base_url: str, env: Mapping[str, str]) -> None:
    """Refuse, before any request, to send credentials to an origin the environment does not name.

    With neither DHIS2_BASE_URL nor DHIS2_ALLOWED_ORIGINS set (a resource built explicitly in code,
    with its credentials given in code) there is nothing to compare with and nothing is refused.
    """
    allowed = allowed_origins(env)
    if not allowed:
        return
    target = origin_of(base_url)
    if target and target in allowed:
        return
    raise CredentialsRefused(
        f"refused to send DHIS2 credentials to {redact_url(base_url) or '(empty URL)'}: its origin "
        f"{target or '(none)'} is not the origin of {BASE_URL_ENV} nor listed in {ALLOWED_ORIGINS_ENV} "
        f"(allowed: {', '.join(sorted(allowed))}); nothing was sent",
        hint=f"The DHIS2 address comes from {BASE_URL_ENV} in the code location's environment, not from launch "
        f"config. To use another DHIS2, change {BASE_URL_ENV} (or add its origin to {ALLOWED_ORIGINS_ENV}) and "
        "reload the code location.",
    )


def env_references(config: object, path: tuple[str, ...] = ()) -> Iterator[tuple[str, str]]:
    """Every ``{env: NAME}`` in a run config, as (dotted path, NAME)."""
    if isinstance(config, Mapping):
        if set(config) == {"env"} and isinstance(config["env"], str):
            yield ".".join(path), config["env"]
            return
        for key, value in config.items():
            yield from env_references(value, (*path, str(key)))
    elif isinstance(config, (list, tuple)):
        for i, value in enumerate(config):
            yield from env_references(value, (*path, str(i)))


def refuse_env_references(run_config: object) -> None:
    """Run config may not read the code location's environment (it would copy secrets into the run)."""
    found = list(env_references(run_config))
    if not found:
        return
    where = ", ".join(f"{{env: {name}}} at {path or '(top)'}" for path, name in found)
    raise CredentialsRefused(
        f"refused: the run config reads environment variables ({where}); a launch may not pull values of the "
        "code location's environment into a run, nothing was sent",
        hint="Remove the {env: ...} entries from the launch config. DHIS2 address and credentials are taken from "
        "the code location's DHIS2_* variables by the scheduler itself; the other settings are CHAP_SCHEDULER_* "
        "variables, not launch parameters.",
    )


@dataclass(frozen=True)
class Dhis2Credentials:
    """Where DHIS2 is and who we are there: basic auth, or a personal access token."""

    base_url: str
    username: str = ""
    password: str = ""
    token: str = ""

    @property
    def auth_kind(self) -> str:
        return "personal access token" if self.token else "basic auth"

    def __repr__(self) -> str:  # never print the secret
        return f"Dhis2Credentials(base_url={redact_url(self.base_url)!r}, username={self.username!r})"


def credentials_from_env(env: Mapping[str, str]) -> Dhis2Credentials:
    """The DHIS2 address and credentials, from the environment only. A token wins when DHIS2_TOKEN is set."""

    def need(name: str, why: str) -> str:
        value = env.get(name, "")
        if not value:
            raise MissingVariable(name, why)
        return value

    base_url = need(BASE_URL_ENV, "the DHIS2 address")
    if env.get(TOKEN_ENV):
        return Dhis2Credentials(base_url=base_url, token=env[TOKEN_ENV])
    username = need(USERNAME_ENV, f"the DHIS2 user; or set {TOKEN_ENV}")
    password = need(PASSWORD_ENV, f"the password of {USERNAME_ENV}; or set {TOKEN_ENV}")
    return Dhis2Credentials(base_url=base_url, username=username, password=password)
