"""``python -m starter bench --bulk N`` runs end to end in a tiny form; nothing about speed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# The tiny run takes about 20 s on a quiet two-core machine; the rest is room for a busy one.
BENCH_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 60.0


@pytest.mark.integration
@pytest.mark.timeout(BENCH_TIMEOUT_SECONDS + STOP_TIMEOUT_SECONDS + 5)
def test_tiny_bulk_bench_reports_both_sides_and_the_job() -> None:
    """N=10: both phases ran every order; the job's history, runs and RSS are reported."""
    process = subprocess.Popen(
        [sys.executable, "-m", "starter", "bench", "--bulk", "10", "--concurrency", "4", "--json"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=BENCH_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGTERM)  # the bench stops what it started
        try:
            _, stderr = process.communicate(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            _, stderr = process.communicate()
        pytest.fail(
            f"the tiny bulk bench took over {BENCH_TIMEOUT_SECONDS:.0f} s:\n{stderr[-3000:]}"
        )
    assert process.returncode == 0, stderr[-3000:]
    report = json.loads(stdout)
    assert report["single"]["orders"] == report["bulk"]["orders"] == 10
    for side in ("single", "bulk"):
        assert report[side]["orders_per_s"] > 0
        assert 0 < report[side]["first_outcome_s"] <= report[side]["last_outcome_s"]
    bulk = report["bulk"]
    assert bulk["runs"] == 1 and bulk["history_events"] > 0
    assert bulk["worker_rss_mib_peak"] >= bulk["worker_rss_mib_before"] > 0
    assert report["ratio"] > 0
