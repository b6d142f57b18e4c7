"""The benchmark runs end to end in a tiny form; it asserts nothing about speed.

CI runs it only to prove that ``python -m tools.bench`` still works: every section runs on real
servers (a fresh Temporal dev server per batch, PostgreSQL, the sandbox, the worker and the admin
hook as processes) and the JSON report has every key, with sane values.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.starter.conftest import run_json_report
from tools.bench import parse_options, percentile

# The tiny run takes 45-70 s on a quiet two-core machine (the relay batch adds about 8 s);
# the rest is room for a busy one.
BENCH_TIMEOUT_SECONDS = 100.0
# On SIGTERM the bench stops its servers and workers; a worker drains for up to 20 s.
STOP_TIMEOUT_SECONDS = 60.0

TINY = [
    "--json",
    "--n",
    "20",
    "--concurrency",
    "4",
    "--low-load-n",
    "5",
    "--idle-runs",
    "20,50",
    "--undo-idle-runs",
    "10,20",
    "--skip-scale-out",
]

BATCH_KEYS = (
    "throughput_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "events_per_run",
    "worker_cpu_s_per_run",
)


def _run_bench(arguments: list[str]) -> dict[str, Any]:
    """``python -m tools.bench`` as a user runs it; stopped by its pid if it hangs."""
    return run_json_report(
        ["-m", "tools.bench", *arguments],
        "the tiny bench",
        timeout=BENCH_TIMEOUT_SECONDS,
        stop_timeout=STOP_TIMEOUT_SECONDS,
    )


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not math.isnan(value) and value > 0


@pytest.mark.integration
@pytest.mark.timeout(BENCH_TIMEOUT_SECONDS + STOP_TIMEOUT_SECONDS + 5)
def test_tiny_bench_reports_every_section_with_sane_values() -> None:
    """N=20 through every batch but scale-out; each figure the issue names is there and > 0."""
    report = _run_bench(TINY)

    for section in ("skeleton", "product", "product_http", "product_mix"):
        batch = report[section]
        assert batch["errors"] == 0, batch["first_errors"]
        assert batch["completed"] == 20
        for key in BATCH_KEYS:
            assert _positive(batch[key]), (section, key, batch[key])
        assert _positive(batch["server_cpu_s_per_run"]), section
        assert batch["p50_ms"] <= batch["p95_ms"] <= batch["p99_ms"]
    for section in ("skeleton", "product"):
        assert report["low_load"][section]["concurrency"] == 1
        assert _positive(report["low_load"][section]["p50_ms"])
    assert _positive(report["ratio_throughput"])
    assert _positive(report["low_load"]["ratio_p50"])
    # The skeleton's shape: 3 activities, one update; the product's happy path has a refund.
    skeleton_events = report["skeleton"]["events_by_type"]
    assert skeleton_events["ActivityTaskCompleted"] == 3
    assert skeleton_events["WorkflowExecutionUpdateCompleted"] == 1
    assert report["product"]["events_per_run"] > report["skeleton"]["events_per_run"]
    assert set(report["product_mix"]["latency_p50_ms_by_kind"]) == {"card", "card+points", "bank"}

    for state, sizes in (("requested", [20, 50]), ("undo_window", [10, 20])):
        idle = report["idle"][state]
        assert [step["open_runs"] for step in idle["steps"]] == sizes
        for step in idle["steps"]:
            assert _positive(step["worker_rss_mb"]) and _positive(step["start_s"])
    assert "scale_out" not in report
    # The relay batch: every event of every measured run delivered, and no history added.
    relay = report["relay"]
    assert relay["events_delivered"] == relay["events_expected"] == 4 * 20
    assert _positive(relay["latency_p50_ms"])
    assert relay["latency_p50_ms"] <= relay["latency_p95_ms"]
    assert relay["history_events_per_run"] <= relay["history_events_per_run_without"] + 0.5
    assert report["product_relay"]["completed"] == 20
    names = {target["target"] for target in report["targets"]}
    assert {"throughput", "history events", "latency at C=1", "relay latency"} <= names


def test_percentiles_interpolate_between_ranks() -> None:
    """p50 of an even count lies between the middle two; p0 and p100 are the extremes."""
    values = [40.0, 10.0, 30.0, 20.0]
    assert percentile(values, 50) == 25.0
    assert percentile(values, 0) == 10.0
    assert percentile(values, 100) == 40.0
    assert math.isnan(percentile([], 50))


def test_idle_sizes_must_grow() -> None:
    """``--idle-runs 100,10000`` is read as steps; a shrinking list is a usage error."""
    assert parse_options(["--idle-runs", "100,10000"]).idle_runs == (100, 10_000)
    with pytest.raises(SystemExit):
        parse_options(["--idle-runs", "500,100"])
