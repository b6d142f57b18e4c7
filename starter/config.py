"""Configuration, read from the environment once at each entry point."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from temporalio.envconfig import ClientConfigProfile

from domain.contract import TASK_QUEUE

DEFAULT_TEMPORAL_ADDRESS = "localhost:7233"
DEFAULT_PROVIDER_URL = "http://127.0.0.1:8001"
DEFAULT_ADMIN_HOOK_PORT = 8000
DEFAULT_UI_ORIGINS = ("http://127.0.0.1:8233", "http://localhost:8233")
DEFAULT_STRIPE_API_BASE = "https://api.stripe.com"
PaymentProviderName = Literal["sandbox", "stripe"]
# Enough for the runs in flight on one worker; see docs/performance.md ("idle footprint").
DEFAULT_MAX_CACHED_WORKFLOWS = 100


class Settings(BaseModel):
    """Everything the worker, the client and the hook need to know about their world."""

    model_config = ConfigDict(frozen=True)

    temporal_connect: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments for ``Client.connect`` (address, namespace, API key, TLS)."""
    database_url: str | None = None
    provider_url: str = DEFAULT_PROVIDER_URL
    provider_webhook_secret: str | None = Field(default=None, repr=False)
    admin_hook_port: int = DEFAULT_ADMIN_HOOK_PORT
    admin_hook_tokens: dict[str, str] = Field(default_factory=dict, repr=False)
    """token → shop id."""
    provider_accounts: dict[str, str] = Field(default_factory=dict)
    """shop id → the shop's account at the payment provider (``PROVIDER_ACCOUNTS``); set by
    operators only. A shop without one uses the provider's default account (development)."""
    payload_encryption_key: str | None = Field(default=None, repr=False)
    codec_auth_token: str | None = Field(default=None, repr=False)
    """Operators' token for the codec endpoints the Web UI calls."""
    codec_cors_origins: list[str] = Field(default_factory=lambda: list(DEFAULT_UI_ORIGINS))
    """Web UI origins allowed to call the codec endpoints from a browser."""
    metrics_port: int | None = None
    """Where the worker serves Prometheus metrics (``/metrics`` on 127.0.0.1)."""
    max_cached_workflows: int = DEFAULT_MAX_CACHED_WORKFLOWS
    """Runs the worker keeps in memory; an evicted run replays its short history on its
    next task. Near what is in flight keeps memory flat however many runs wait."""
    task_queue: str = TASK_QUEUE
    provider_task_queue: str | None = None
    """A separate queue for provider calls; ``None`` keeps them on ``task_queue``."""
    payment_provider: PaymentProviderName = "sandbox"
    """Which provider card payments live at (``PAYMENT_PROVIDER``): our sandbox or Stripe."""
    stripe_api_key: str | None = Field(default=None, repr=False)
    stripe_api_base: str = DEFAULT_STRIPE_API_BASE
    """Where Stripe's API is; tests and the dev stack point it at localstripe."""
    stripe_webhook_secret: str | None = Field(default=None, repr=False)
    """``whsec_…``: the hook verifies ``Stripe-Signature`` with it."""

    @property
    def temporal_address(self) -> str:
        """Where the Temporal frontend is."""
        return str(self.temporal_connect.get("target_host", DEFAULT_TEMPORAL_ADDRESS))

    @property
    def temporal_namespace(self) -> str:
        """The Temporal namespace."""
        return str(self.temporal_connect.get("namespace", "default"))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings; Temporal's come from the SDK's own environment config."""
        env = os.environ if env is None else env
        profile = ClientConfigProfile.load(override_env_vars=dict(env))
        connect: dict[str, Any] = dict(profile.to_client_connect_config())
        connect.setdefault("target_host", DEFAULT_TEMPORAL_ADDRESS)
        connect.setdefault("namespace", "default")
        return cls(
            temporal_connect=connect,
            database_url=env.get("DATABASE_URL") or None,
            provider_url=env.get("PAYMENT_PROVIDER_URL") or DEFAULT_PROVIDER_URL,
            provider_webhook_secret=env.get("PAYMENT_PROVIDER_WEBHOOK_SECRET") or None,
            admin_hook_port=int(env.get("ADMIN_HOOK_PORT") or DEFAULT_ADMIN_HOOK_PORT),
            admin_hook_tokens=parse_tokens(env.get("ADMIN_HOOK_TOKENS", "")),
            provider_accounts=parse_provider_accounts(env.get("PROVIDER_ACCOUNTS", "")),
            payload_encryption_key=env.get("PAYLOAD_ENCRYPTION_KEY") or None,
            codec_auth_token=env.get("CODEC_AUTH_TOKEN") or None,
            codec_cors_origins=[
                o.strip()
                for o in (env.get("CODEC_CORS_ORIGINS") or ",".join(DEFAULT_UI_ORIGINS)).split(",")
                if o.strip()
            ],
            metrics_port=int(env["WORKER_METRICS_PORT"])
            if env.get("WORKER_METRICS_PORT")
            else None,
            max_cached_workflows=_positive_int(
                env, "WORKER_MAX_CACHED_WORKFLOWS", DEFAULT_MAX_CACHED_WORKFLOWS
            ),
            task_queue=env.get("TASK_QUEUE") or TASK_QUEUE,
            provider_task_queue=env.get("PROVIDER_TASK_QUEUE") or None,
            payment_provider=_payment_provider(env.get("PAYMENT_PROVIDER") or "sandbox"),
            stripe_api_key=env.get("STRIPE_API_KEY") or None,
            stripe_api_base=env.get("STRIPE_API_BASE") or DEFAULT_STRIPE_API_BASE,
            stripe_webhook_secret=env.get("STRIPE_WEBHOOK_SECRET") or None,
        )

    def require_database(self) -> str:
        """The database URL, or a clear error saying how to get one."""
        if not self.database_url:
            raise SystemExit(
                "DATABASE_URL is not set: start the embedded stack with `python -m starter dev`,"
                " or point DATABASE_URL at your PostgreSQL"
            )
        return self.database_url


def _payment_provider(value: str) -> PaymentProviderName:
    match value.strip().lower():
        case "sandbox":
            return "sandbox"
        case "stripe":
            return "stripe"
        case _:
            raise SystemExit(f"PAYMENT_PROVIDER must be sandbox or stripe, not {value!r}")


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise SystemExit(f"{name} must be a positive whole number, not {raw!r}")
    return value


def parse_tokens(value: str) -> dict[str, str]:
    """``shop-a:tok1,shop-b:tok2`` → ``{"tok1": "shop-a", "tok2": "shop-b"}``."""
    tokens: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in value.split(","))):
        shop, sep, token = pair.partition(":")
        if not sep or not shop or not token:
            raise ValueError("ADMIN_HOOK_TOKENS must be comma-separated shop_id:token pairs")
        tokens[token] = shop
    return tokens


_ACCOUNT_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def parse_provider_accounts(value: str) -> dict[str, str]:
    """``shop-a:acct_1,shop-b:acct_2`` → ``{"shop-a": "acct_1", "shop-b": "acct_2"}``.

    A shop named twice, or a part that isn't a plain id (``:`` inside, spaces, empty), is
    refused: which account a shop's refunds go to must never be a guess.
    """
    accounts: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in value.split(","))):
        parts = pair.split(":")
        if len(parts) != 2 or not all(_ACCOUNT_PART.match(p) for p in parts):
            raise ValueError(
                f"PROVIDER_ACCOUNTS: {pair!r} is not shop_id:account_id"
                " (ids of letters, digits, '_', '.', '-')"
            )
        shop, account = parts
        if shop in accounts:
            raise ValueError(f"PROVIDER_ACCOUNTS names shop {shop!r} twice")
        accounts[shop] = account
    return accounts
