"""The payment provider the settings name (``PAYMENT_PROVIDER``), built in one place.

The worker's provider activities and the hook's card-tender check both take what
:func:`provider_client` returns; neither knows which provider it is.
"""

from __future__ import annotations

from activities.provider_client import PaymentProviderClient
from activities.stripe_provider import StripeProviderClient
from starter.config import ConfigError, Settings


def provider_client(settings: Settings) -> PaymentProviderClient:
    """The sandbox's client, or the Stripe adapter when ``PAYMENT_PROVIDER=stripe``.

    Raises:
        ConfigError: Stripe is chosen without ``STRIPE_API_KEY``.
    """
    if settings.payment_provider == "stripe":
        if not settings.stripe_api_key:
            raise ConfigError(
                "PAYMENT_PROVIDER=stripe needs STRIPE_API_KEY (a test-mode sk_test_… key, or"
                " any sk_… key for localstripe)"
            )
        return StripeProviderClient(settings.stripe_api_key, api_base=settings.stripe_api_base)
    return PaymentProviderClient(settings.provider_url)
