"""The plain-httpx connection to one DHIS2 as its configured user, shared by the chap route and the
data value writer (``dhis2-client`` serves the Web API reads in ``core.dhis2_reader``)."""

from __future__ import annotations

import httpx


def dhis2_http_client(
    base_url: str,
    *,
    username: str = "",
    password: str = "",
    token: str = "",
    timeout_seconds: float = 60.0,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """An httpx client for ``base_url``: basic auth, or DHIS2's ``ApiToken`` header when a token is set.

    Redirects are not followed: DHIS2 answers a failed login with a 302 to its login page, which must be
    seen as an authentication failure, not followed to an HTML page.
    """
    headers = {"Accept": "application/json"}
    auth: tuple[str, str] | None = None
    if token:
        headers["Authorization"] = token if token.startswith(("ApiToken ", "Bearer ")) else f"ApiToken {token}"
    elif username:
        auth = (username, password)
    return httpx.Client(
        base_url=base_url,
        auth=auth,
        headers=headers,
        timeout=httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 15.0)),
        follow_redirects=False,
        transport=transport,
    )
