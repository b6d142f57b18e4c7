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


def test_webhook_settings_default_to_production() -> None:
    settings = Settings.from_env({})
    assert settings.webhooks_allow_http is False
    assert settings.webhooks_retry_scale == 1.0
    assert settings.webhooks_retention.days == 7


def test_webhook_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "WEBHOOKS_ALLOW_HTTP": "1",
            "WEBHOOKS_TIMEOUT": "2.5",
            "WEBHOOKS_RETRY_SCALE": "0.001",
            "WEBHOOKS_RETENTION": "PT1H",
            "WEBHOOKS_RELAY_CONCURRENCY": "4",
        }
    )
    assert settings.webhooks_allow_http is True
    assert settings.webhooks_timeout == 2.5
    assert settings.webhooks_retry_scale == 0.001
    assert settings.webhooks_retention.total_seconds() == 3600
    assert settings.webhooks_relay_concurrency == 4


@pytest.mark.parametrize(
    ("name", "raw"),
    [("WEBHOOKS_TIMEOUT", "0"), ("WEBHOOKS_RETRY_SCALE", "-1"), ("WEBHOOKS_RETENTION", "soon")],
)
def test_a_bad_webhook_setting_is_a_clear_error(name: str, raw: str) -> None:
    with pytest.raises(SystemExit, match=name):
        Settings.from_env({name: raw})
