"""The sandbox's command line: a real provider's rules as flags with environment fallbacks."""

from pathlib import Path

import pytest

from provider_sandbox.__main__ import parse_settings
from provider_sandbox.app import SandboxOptions
from provider_sandbox.webhooks import WebhookPolicy


def test_defaults_are_a_real_providers() -> None:
    """Keys kept 24 h, real time, each webhook once and at once."""
    settings = parse_settings(["--db", "x.sqlite3"], {})

    assert settings.db_path == Path("x.sqlite3")
    assert settings.options == SandboxOptions(
        idempotency_retention_seconds=86400.0, clock_speed=1.0, webhooks=WebhookPolicy()
    )


def test_flags_override_the_environment() -> None:
    env = {
        "PAYMENT_PROVIDER_DB": "env.sqlite3",
        "PAYMENT_PROVIDER_IDEMPOTENCY_RETENTION_SECONDS": "60",
        "PAYMENT_PROVIDER_CLOCK_SPEED": "3600",
        "PAYMENT_PROVIDER_WEBHOOK_DELAY_SECONDS": "2",
        "PAYMENT_PROVIDER_WEBHOOK_DUPLICATE_RATE": "0.5",
        "PAYMENT_PROVIDER_WEBHOOK_SHUFFLE_SECONDS": "3",
    }

    from_env = parse_settings([], env)
    from_flags = parse_settings(["--clock-speed", "10", "--webhook-duplicate-rate", "1"], env)

    assert from_env.options == SandboxOptions(
        idempotency_retention_seconds=60.0,
        clock_speed=3600.0,
        webhooks=WebhookPolicy(delay_seconds=2.0, duplicate_rate=0.5, shuffle_seconds=3.0),
    )
    assert (from_flags.options.clock_speed, from_flags.options.webhooks.duplicate_rate) == (
        10.0,
        1.0,
    )


@pytest.mark.parametrize(
    "flags",
    [
        ["--clock-speed", "0"],
        ["--clock-speed", "fast"],
        ["--idempotency-retention-seconds", "-1"],
        ["--webhook-duplicate-rate", "1.5"],
        ["--webhook-shuffle-seconds", "nan"],
        ["--webhook-delay-seconds", "inf"],
    ],
    ids=["zero speed", "word", "negative retention", "rate above 1", "nan", "infinite"],
)
def test_nonsense_is_a_usage_error(flags: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(["--db", "x.sqlite3", *flags], {})

    assert exit_info.value.code == 2
