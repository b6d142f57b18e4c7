"""PAYMENT_PROVIDER picks the provider adapter; Stripe's settings come from the environment."""

from __future__ import annotations

import pytest

from activities.provider_client import PaymentProviderClient
from activities.stripe_provider import StripeProviderClient
from starter.config import DEFAULT_STRIPE_API_BASE, ConfigError, Settings
from starter.providers import provider_client


async def test_the_sandbox_is_the_default_provider() -> None:
    settings = Settings.from_env({})
    assert settings.payment_provider == "sandbox"
    client = provider_client(settings)
    try:
        assert type(client) is PaymentProviderClient
    finally:
        await client.aclose()


async def test_stripe_is_chosen_with_its_key_and_base() -> None:
    settings = Settings.from_env(
        {
            "PAYMENT_PROVIDER": "stripe",
            "STRIPE_API_KEY": "sk_test_abc",
            "STRIPE_API_BASE": "http://127.0.0.1:9",
            "STRIPE_WEBHOOK_SECRET": "whsec_abc",
        }
    )
    assert (settings.stripe_api_base, settings.stripe_webhook_secret) == (
        "http://127.0.0.1:9",
        "whsec_abc",
    )
    client = provider_client(settings)
    try:
        assert isinstance(client, StripeProviderClient)
    finally:
        await client.aclose()


def test_stripe_defaults_to_stripes_own_api() -> None:
    assert Settings.from_env({}).stripe_api_base == DEFAULT_STRIPE_API_BASE


def test_stripe_without_a_key_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="STRIPE_API_KEY"):
        provider_client(Settings.from_env({"PAYMENT_PROVIDER": "stripe"}))


def test_an_unknown_provider_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="PAYMENT_PROVIDER must be sandbox or stripe"):
        Settings.from_env({"PAYMENT_PROVIDER": "paypal"})


def test_stripe_secrets_stay_out_of_the_settings_repr() -> None:
    settings = Settings.from_env(
        {"STRIPE_API_KEY": "sk_test_secret1", "STRIPE_WEBHOOK_SECRET": "whsec_secret2"}
    )
    assert "sk_test_secret1" not in repr(settings)
    assert "whsec_secret2" not in repr(settings)
