"""A loopback stand-in for a DHIS2 server with a ``chap`` route, for tests, quickstarts and benchmarks.

Usage from Python::

    from dhis2_sandbox import Sandbox, SandboxConfig

    with Sandbox(SandboxConfig(port=0, org_units=12, months=72)) as sb:
        httpx.get(f"{sb.base_url}/api/system/info", auth=("admin", "district"))
        sb.faults.fail_next = 2            # next two /api requests answer 503 (HTML, like a proxy)
        sb.chap.add_setup(name="extra")    # chap gains a prediction setup
        sb.requests                         # [(method, path_with_query, content_length), ...]

From a shell: ``python -m dhis2_sandbox --port 8080`` (or ``chap-sandbox``); add
``--chap-url http://127.0.0.1:8000`` to forward ``/api/routes/chap/run/...`` to a real chap-core.

What it serves (all ``/api`` paths need Basic ``admin``/``district`` or ``Authorization: ApiToken <token>``;
no credentials -> 302 to ``/dhis-web-login/``, wrong ones -> 401 WebMessage):

* ``/api/system/info``, ``/api/system/ping``, ``/api/me``
* ``/api/analytics`` (``dimension=dx:…``/``pe:…``/``ou:…`` repeated or comma-joined, ``filter=`` (aggregated
  away), relative periods, ``relativePeriodDate``, ``skipMeta``; 409 E7124/E7111/E7103 like DHIS2)
* ``/api/organisationUnits`` (+ ``/{id}``, ``.geojson``), ``/api/dataElements``
* ``/api/routes`` and ``/api/routes/chap/run/<chap path>`` -> the built-in chap-core 2.5.1 stand-in
  (or ``chap_url``); the stand-in is also reachable without auth at ``/__sandbox/chap/<chap path>``
* control (no auth): ``GET|POST /__sandbox/faults``, ``POST /__sandbox/reset``,
  ``GET|POST /__sandbox/chap-setups``, ``DELETE /__sandbox/chap-setups/{id}``, ``GET /__sandbox/world``,
  ``POST /__sandbox/data-values`` (``{"dataElement", "period", "orgUnit", "value"}``: change one value)

World knob: ``world.import_geometry(ou)`` gives the org unit without geometry its boundary.

Preflight knobs (attributes of ``Sandbox``): ``user_authorities`` (``/api/me``, default ``["ALL"]``),
``route_present`` (False: no route ``chap``), ``route_authorities`` (a user holding none of them gets 403
running the route), and ``make_stale(data_element_id, periods)`` (its values stop that many periods earlier).

Extra ``SandboxConfig`` knobs: ``today`` (pin the world's "today"), ``max_url_length`` (answer 414 past a
proxy-like URL limit), ``weekly_setup_weeks`` (how far back weekly setup 2 starts).

Big uploads: httpx sends a large ``bytes`` body slowly (its send loop re-slices the buffer); pass an
iterator of ~1 MB chunks (with a ``Content-Length`` header, or chunked) instead. The sandbox reads both.

The world (``dhis2_sandbox.world``) is deterministic from ``seed`` and anchored on today: the country
``Sandboxia`` (``ROOT_OU``) with ``org_units`` districts (exactly one without geometry), data element ids
``DE_CASES``, ``DE_RAIN``, ``DE_TEMP`` (lags 2 months), ``DE_POP``, ``DE_CASES_WEEKLY``, ``DE_RAIN_WEEKLY``,
``DE_TEMP_WEEKLY`` (lags 1 week), ``DE_RAIN_GAPPY``; chap prediction setups 1 monthly, 2 weekly,
3 gappy rainfall (all regions rejected), 4 yearly.
"""

from .server import Faults, Sandbox, SandboxConfig

__all__ = ["Faults", "Sandbox", "SandboxConfig"]
