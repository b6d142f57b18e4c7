"""``python -m starter bench --bulk N`` runs end to end in a tiny form; nothing about speed."""

from __future__ import annotations

import pytest

from tests.starter.conftest import run_json_report

# The tiny run takes about 20 s on a quiet two-core machine; the rest is room for a busy one.
BENCH_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 60.0


@pytest.mark.integration
@pytest.mark.timeout(BENCH_TIMEOUT_SECONDS + STOP_TIMEOUT_SECONDS + 5)
def test_tiny_bulk_bench_reports_both_sides_and_the_job() -> None:
    """N=10: both phases ran every order; the job's history, runs and RSS are reported."""
    report = run_json_report(
        ["-m", "starter", "bench", "--bulk", "10", "--concurrency", "4", "--json"],
        "the tiny bulk bench",
        timeout=BENCH_TIMEOUT_SECONDS,
        stop_timeout=STOP_TIMEOUT_SECONDS,
    )
    assert report["single"]["orders"] == report["bulk"]["orders"] == 10
    for side in ("single", "bulk"):
        assert report[side]["orders_per_s"] > 0
        assert 0 < report[side]["first_outcome_s"] <= report[side]["last_outcome_s"]
    bulk = report["bulk"]
    assert bulk["runs"] == 1 and bulk["history_events"] > 0
    assert bulk["worker_rss_mib_peak"] >= bulk["worker_rss_mib_before"] > 0
    assert report["ratio"] > 0
