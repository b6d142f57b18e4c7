"""Settings read from the environment."""

from __future__ import annotations

import pytest

from starter.config import DEFAULT_MAX_CACHED_WORKFLOWS, Settings


def test_worker_cache_defaults_to_the_documented_size() -> None:
    assert Settings.from_env({}).max_cached_workflows == DEFAULT_MAX_CACHED_WORKFLOWS == 100


def test_worker_cache_size_comes_from_the_environment() -> None:
    settings = Settings.from_env({"WORKER_MAX_CACHED_WORKFLOWS": "250"})
    assert settings.max_cached_workflows == 250


@pytest.mark.parametrize("raw", ["0", "-5", "lots", "1.5"])
def test_a_bad_worker_cache_size_is_a_clear_error(raw: str) -> None:
    with pytest.raises(SystemExit, match="WORKER_MAX_CACHED_WORKFLOWS must be a positive"):
        Settings.from_env({"WORKER_MAX_CACHED_WORKFLOWS": raw})
