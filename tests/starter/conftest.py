"""Helpers of the starter's tests that run the project's commands as their own processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_json_report(
    arguments: list[str], what: str, *, timeout: float, stop_timeout: float
) -> dict[str, Any]:
    """``python <arguments>`` from the repository's root as a user runs it, and the JSON it
    prints; it must exit 0. One that outruns ``timeout`` is sent SIGTERM by its pid, which
    lets it stop every server and worker it started (they run in sessions of their own, so
    killing only it would leave them behind), then SIGKILL after ``stop_timeout``, and the
    test fails naming ``what`` took too long."""
    process = subprocess.Popen(
        [sys.executable, *arguments],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            _, stderr = process.communicate()
        pytest.fail(f"{what} took over {timeout:.0f} s:\n{stderr[-3000:]}")
    assert process.returncode == 0, stderr[-3000:]
    report: dict[str, Any] = json.loads(stdout)
    return report
