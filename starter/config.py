"""Configuration, read from the environment once at each entry point."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from temporalio.envconfig import ClientConfigProfile

from domain.contract import TASK_QUEUE

DEFAULT_TEMPORAL_ADDRESS = "localhost:7233"
DEFAULT_PROVIDER_URL = "http://127.0.0.1:8001"
DEFAULT_ADMIN_HOOK_PORT = 8000
DEFAULT_UI_ORIGINS = ("http://127.0.0.1:8233", "http://localhost:8233")
# Enough for the runs in flight on one worker; see docs/performance.md ("idle footprint").
DEFAULT_MAX_CACHED_WORKFLOWS = 100
# A receiver has this long to answer a webhook; Standard Webhooks senders use 15 s or less,
# and a slow receiver only delays its own deliveries (the relay sends many at once).
DEFAULT_WEBHOOKS_TIMEOUT_SECONDS = 10.0
# Enough for a day's outage investigation; the table stays bounded (docs/events.md).
DEFAULT_WEBHOOKS_RETENTION = timedelta(days=7)
DEFAULT_WEBHOOKS_FAILED_RETENTION = timedelta(days=30)
# Deliveries in flight per relay: receivers answer in well under a second, so 16 keep up
# with far more transitions a second than one worker makes.
DEFAULT_WEBHOOKS_RELAY_CONCURRENCY = 16


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
    webhooks_allow_http: bool = False
    """Development and tests: endpoints may be ``http`` and on loopback."""
    webhooks_timeout: float = DEFAULT_WEBHOOKS_TIMEOUT_SECONDS
    """Seconds a receiver has to answer one delivery."""
    webhooks_retry_scale: float = 1.0
    """Multiplies the retry schedule (tests shrink a day to seconds)."""
    webhooks_retention: timedelta = DEFAULT_WEBHOOKS_RETENTION
    """Delivered deliveries (and events nobody needs any more) are pruned after this."""
    webhooks_failed_retention: timedelta = DEFAULT_WEBHOOKS_FAILED_RETENTION
    """Failed deliveries stay listed and redeliverable this long."""
    webhooks_relay_concurrency: int = DEFAULT_WEBHOOKS_RELAY_CONCURRENCY
    """Deliveries one relay sends at once."""

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
            webhooks_allow_http=env.get("WEBHOOKS_ALLOW_HTTP", "") in ("1", "true", "yes"),
            webhooks_timeout=_positive_float(
                env, "WEBHOOKS_TIMEOUT", DEFAULT_WEBHOOKS_TIMEOUT_SECONDS
            ),
            webhooks_retry_scale=_positive_float(env, "WEBHOOKS_RETRY_SCALE", 1.0),
            webhooks_retention=_duration(env, "WEBHOOKS_RETENTION", DEFAULT_WEBHOOKS_RETENTION),
            webhooks_failed_retention=_duration(
                env, "WEBHOOKS_FAILED_RETENTION", DEFAULT_WEBHOOKS_FAILED_RETENTION
            ),
            webhooks_relay_concurrency=_positive_int(
                env, "WEBHOOKS_RELAY_CONCURRENCY", DEFAULT_WEBHOOKS_RELAY_CONCURRENCY
            ),
        )

    def require_database(self) -> str:
        """The database URL, or a clear error saying how to get one."""
        if not self.database_url:
            raise SystemExit(
                "DATABASE_URL is not set: start the embedded stack with `python -m starter dev`,"
                " or point DATABASE_URL at your PostgreSQL"
            )
        return self.database_url


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


def _positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise SystemExit(f"{name} must be a positive number, not {raw!r}")
    return value


def _duration(env: Mapping[str, str], name: str, default: timedelta) -> timedelta:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = TypeAdapter(timedelta).validate_python(raw)
    except ValidationError:
        value = timedelta(0)
    if value <= timedelta(0):
        raise SystemExit(f"{name} must be a positive ISO 8601 duration (P7D, PT1H), not {raw!r}")
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
