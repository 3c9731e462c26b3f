"""Partition-key order (shared by discovery, the cursor, the overview and the operator schedule) and chap's 400 model."""

from chap_scheduler_dagster.core.chap_models import RejectedRow, Rejection
from chap_scheduler_dagster.core.errors import Rejection as RejectionFromErrors
from chap_scheduler_dagster.core.partition_keys import key_order


def test_key_order_is_numeric_then_text():
    assert sorted(["10", "b", "3", "a", "2", "007"], key=key_order) == ["2", "3", "007", "10", "a", "b"]


def test_rejection_reads_chap_400_detail_leniently():
    detail = {
        "message": "All regions rejected due to missing values",
        "imported_count": None,
        "rejected": [
            {"reason": "Missing value", "orgUnit": 17, "featureName": "rainfall", "timePeriods": [202406, "2024W01"],
             "extra": "ignored"},
            {"orgUnit": "B", "timePeriods": None},
        ],
    }
    rejection = Rejection.from_detail(detail)
    assert rejection == Rejection(
        message="All regions rejected due to missing values",
        imported_count=0,
        rejected=(
            RejectedRow(reason="Missing value", org_unit="17", feature_name="rainfall", time_periods=("202406", "2024W01")),
            RejectedRow(org_unit="B"),
        ),
    )
    assert RejectionFromErrors is Rejection  # the old import path still works
