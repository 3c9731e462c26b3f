"""One connection per DHIS2 and run step: the chap route, dhis2-client's reads and the data-value writes
share one httpx client (core/dhis2_http.py), and each step of a run opens at most one, and closes it."""

from __future__ import annotations

import traceback

import dagster as dg
import httpx
import pytest
import respx

from chap_scheduler_dagster.core.dhis2_http import Dhis2Connection
from chap_scheduler_dagster.defs.jobs import dhis2_chap_prediction
from chap_scheduler_dagster.defs.resources import Dhis2Resource

from .core_fixtures import CHAP, DHIS2, PASSWORD, USER, basic

STEPS = ("probe_covariates", "fetch_analytics", "submit_prediction", "await_prediction", "publish_forecasts")


@pytest.fixture
def opened(monkeypatch) -> list[tuple[str, httpx.Client]]:
    """Every httpx client made while the test runs, with the op (or "other") that made it."""
    made: list[tuple[str, httpx.Client]] = []
    init = httpx.Client.__init__

    def counting(self: httpx.Client, *args, **kwargs) -> None:
        step = next((f.name for f in reversed(traceback.extract_stack()) if f.name in STEPS), "other")
        made.append((step, self))
        init(self, *args, **kwargs)

    monkeypatch.setattr(httpx.Client, "__init__", counting)
    return made


def test_chap_reads_and_writes_share_one_client(opened):
    with respx.mock(assert_all_called=True) as mock, Dhis2Connection(DHIS2, username=USER, password=PASSWORD) as conn:
        chap_info = mock.get(f"{CHAP}/system/info").respond(json={"chap_core_version": "2.5.1"})
        dhis2_info = mock.get(f"{DHIS2}/api/system/info").respond(json={"version": "2.41.3"})
        write = mock.post(f"{DHIS2}/api/dataValueSets").respond(
            json={"status": "SUCCESS", "response": {"importCount": {"imported": 1}}})
        assert conn.chap.system_info().chap_core_version == "2.5.1"
        assert conn.reader.system_info().version == "2.41.3"  # through dhis2-client
        assert conn.writer().post_data_values(b'{"dataValues": []}', dry_run=True).counts.imported == 1
        assert conn.chap is conn.chap and conn.reader is conn.reader  # built once per connection
    assert len(opened) == 1 and opened[0][1] is conn.http and conn.http.is_closed
    for route in (chap_info, dhis2_info, write):
        assert route.calls.last.request.headers["authorization"] == basic()


def test_a_run_opens_one_connection_per_step(opened, monkeypatch):
    from dhis2_sandbox import Sandbox, SandboxConfig

    monkeypatch.setenv("CHAP_SCHEDULER_PUBLISH", "on")  # every step talks to DHIS2 or chap
    with Sandbox(SandboxConfig(port=0)) as sb, dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("chap_configured_models", ["1"])
        opened.clear()
        result = dhis2_chap_prediction.execute_in_process(
            partition_key="1", instance=instance,
            resources={"dhis2": Dhis2Resource(base_url=sb.base_url, username="admin", password="district")},
            run_config={"ops": {"probe_covariates": {"config": {"end_mode": "offset", "end_period_offset": 3}}}},
        )
        posted = [r for r in sb.requests if r[0] == "POST" and r[1].startswith("/api/dataValueSets")]
    assert result.success and posted  # the publish step wrote values over its connection
    steps = [step for step, _ in opened if step != "other"]
    assert sorted(steps) == sorted(STEPS), steps  # one per step (was 9 per run: 2, 1, 1, 2, 3)
    assert all(client.is_closed for _, client in opened)


def test_connections_share_one_tls_context_per_ca_location(monkeypatch, tmp_path):
    # Building httpx's verification context loads the CA bundle (~25 ms of CPU): once per process, not per step.
    from chap_scheduler_dagster.core.dhis2_http import Dhis2Connection

    with Dhis2Connection("https://dhis2.example.org") as a, Dhis2Connection("https://dhis2.example.org") as b:
        assert a.http._transport._pool._ssl_context is b.http._transport._pool._ssl_context
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))  # another CA location is honoured: a context of its own
    with Dhis2Connection("https://dhis2.example.org") as c:
        assert c.http._transport._pool._ssl_context is not a.http._transport._pool._ssl_context


def prediction_job():
    """The job as the code location defines it (re-execution rebuilds it by reference)."""
    from chap_scheduler_dagster.definitions import defs

    return defs.resolve_job_def("dhis2_chap_prediction")


def test_a_reexecution_from_submit_fetches_the_removed_body_over_the_steps_one_connection(
    opened, monkeypatch, tmp_path, persistent_instance
):
    from chap_scheduler_dagster.settings import get_settings
    from dhis2_sandbox import Sandbox, SandboxConfig

    instance = persistent_instance
    with Sandbox(SandboxConfig(port=0, job_seconds=0.1)) as sb:
        # The code location's resource reads its DHIS2 from the environment (a folder without a .env).
        for name, value in (("DHIS2_BASE_URL", sb.base_url), ("DHIS2_USERNAME", "admin"), ("DHIS2_PASSWORD", "district")):
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("DHIS2_TOKEN", raising=False)
        monkeypatch.chdir(tmp_path)
        get_settings.cache_clear()
        instance.add_dynamic_partitions("chap_configured_models", ["1"])
        window = {"ops": {"probe_covariates": {"config": {"end_mode": "offset", "end_period_offset": 3}}}}
        parent = dg.execute_job(dg.reconstructable(prediction_job), instance=instance, run_config=window,
                                tags={"dagster/partition": "1"})
        assert parent.success and len(sb.chap.jobs) == 1
        analytics = sum(1 for r in sb.requests if r[1].startswith("/api/analytics"))
        opened.clear()
        # Re-execute from submit_prediction: the parent's spooled body was removed after its POST.
        child = dg.execute_job(
            dg.reconstructable(prediction_job), instance=instance, tags=instance.get_run_by_id(parent.run_id).tags,
            run_config=window | {"ops": window["ops"] | {"submit_prediction": {"config": {"force": True}}}},
            reexecution_options=dg.ReexecutionOptions(parent.run_id, step_selection=["submit_prediction*"]),
        )
        assert child.success and len(sb.chap.jobs) == 2  # a new POST with the body fetched again
        assert sum(1 for r in sb.requests if r[1].startswith("/api/analytics")) > analytics
        fetched_again = [e.message for e in instance.all_logs(child.run_id)
                         if "fetching it again from DHIS2" in (e.message or "")]
        assert len(fetched_again) == 1
    steps = [step for step, _ in opened if step != "other"]
    # The re-fetch and the POST share submit_prediction's connection (it opened a second one for the re-fetch).
    assert sorted(steps) == ["await_prediction", "publish_forecasts", "submit_prediction"], steps
    assert all(client.is_closed for _, client in opened)
