"""The job in process against the sandbox over real loopback HTTP: national size, the legacy chap API, faults."""

import dagster as dg
import pytest

from chap_scheduler_dagster.defs.assets import report_asset_key
from chap_scheduler_dagster.defs.jobs import dhis2_chap_prediction
from chap_scheduler_dagster.defs.partitions import configured_models_partitions
from chap_scheduler_dagster.defs.resources import Dhis2Resource
from dhis2_sandbox import Sandbox, SandboxConfig

MAX_URL = 8000


def run(sandbox: Sandbox, key: str, window: dict):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(configured_models_partitions.name, [key])
        result = dhis2_chap_prediction.execute_in_process(
            partition_key=key,
            instance=instance,
            resources={"dhis2": Dhis2Resource(base_url=sandbox.base_url, username="admin", password="district")},
            run_config={"ops": {"probe_covariates": {"config": window}}},
            raise_on_error=False,
        )
        meta = instance.fetch_materializations(report_asset_key, limit=1).records[0].asset_materialization.metadata
    return result, meta["report"].value, {k: v.value for k, v in meta.items()}


def test_national_model_every_url_under_8kb():
    # 1,000 districts, 5 covariates, 60 months: ~300k analytics rows. The sandbox answers 414 to any
    # request line over 8,000 bytes, as a stock nginx or Tomcat in front of DHIS2 would.
    with Sandbox(SandboxConfig(port=0, org_units=1000, months=74, max_url_length=MAX_URL, job_seconds=0.2)) as sb:
        result, text, meta = run(sb, "5", {"end_mode": "offset", "end_period_offset": 3})
        urls = [len(sb.base_url) + len(path) for method, path, _ in sb.requests if method == "GET"]
        analytics = [path for method, path, _ in sb.requests if path.startswith("/api/analytics")]
    assert result.success, text
    assert max(urls) <= MAX_URL
    assert len(analytics) >= 15  # split by URL length and by rows per request
    assert meta["input_periods"] == 60
    assert meta["row_estimate"] == 5 * 60 * 1000
    assert 290_000 < meta["analytics_rows"] <= 300_000
    assert "Analytics requests:" in text


def test_legacy_chap_api_is_detected_and_used():
    with Sandbox(SandboxConfig(port=0, chap_api="legacy", job_seconds=0.2)) as sb:
        result, text, meta = run(sb, "1", {"end_mode": "offset", "end_period_offset": 3})
        posts = [path for method, path, _ in sb.requests if method == "POST"]
    assert result.success, text
    assert "(API: configured-models-with-data-source)" in text
    assert posts == ["/api/routes/chap/run/v1/analytics/make-prediction-with-data-source"]


def test_transient_5xx_from_a_proxy_is_retried():
    with Sandbox(SandboxConfig(port=0, job_seconds=0.2)) as sb:
        sb.faults.fail_next = 2  # the next two /api requests get 503 with an HTML body
        result, text, meta = run(sb, "1", {"end_mode": "offset", "end_period_offset": 3})
    assert result.success, text


@pytest.mark.parametrize("fault", ["html_next", "wrong_password"])
def test_login_page_or_wrong_password_is_an_authentication_failure(fault):
    with Sandbox(SandboxConfig(port=0, job_seconds=0.2)) as sb:
        base_url = sb.base_url
        if fault == "html_next":
            sb.faults.html_next = 1
        resource_password = "not-the-password" if fault == "wrong_password" else "district"
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions(configured_models_partitions.name, ["1"])
            result = dhis2_chap_prediction.execute_in_process(
                partition_key="1", instance=instance,
                resources={"dhis2": Dhis2Resource(base_url=sb.base_url, username="admin", password=resource_password)},
                run_config={"ops": {"probe_covariates": {"config": {}}}}, raise_on_error=False,
            )
            text = instance.fetch_materializations(report_asset_key, limit=1).records[0].asset_materialization.metadata[
                "report"].value
    assert not result.success
    assert f"DHIS2 authentication failed for user 'admin' at {base_url}" in text
    assert "not-the-password" not in text


def test_chap_job_failure_text_reaches_the_report():
    with Sandbox(SandboxConfig(port=0, job_seconds=0.2)) as sb:
        sb.faults.chap_job = "fail"
        result, text, meta = run(sb, "1", {"end_mode": "offset", "end_period_offset": 3})
    assert meta["failed_step"] == "await_prediction"
    assert "ended FAILURE:" in text and meta["prediction_id"] == ""
