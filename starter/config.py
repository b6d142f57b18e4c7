"""Configuration, read from the environment once at each entry point.

A malformed setting raises :class:`ConfigError`; each entry point (the CLI, the worker,
the hook, the dev stack) prints its message and exits non-zero. Library code never exits.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
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
# A shop id in ADMIN_HOOK_TOKENS: the API's id alphabet and length, without ":" (the pair's
# own separator), so every pair reads one way only.
TOKEN_SHOP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


DEV_STACK_ENV_FILE = Path(".devstack") / "env"
"""Where the dev stack writes its ``export`` lines, inside the project folder."""
PROJECT_MARKER = "pyproject.toml"


class ConfigError(ValueError):
    """A setting in the environment is missing or malformed; the message says which and how
    to fix it, and never contains a secret."""


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
    admin_session_key: str | None = Field(default=None, repr=False)
    """Signs the merchant admin pages' session cookies (``/admin``); ``None``: a random key
    per process, so sessions end when the hook restarts (logged as a warning)."""
    admin_cookie_secure: bool = True
    """The session cookie is ``Secure`` (HTTPS only); the dev stack turns it off for http."""
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
            admin_hook_port=_port(env, "ADMIN_HOOK_PORT") or DEFAULT_ADMIN_HOOK_PORT,
            admin_hook_tokens=parse_tokens(env.get("ADMIN_HOOK_TOKENS", "")),
            provider_accounts=parse_provider_accounts(env.get("PROVIDER_ACCOUNTS", "")),
            payload_encryption_key=env.get("PAYLOAD_ENCRYPTION_KEY") or None,
            codec_auth_token=env.get("CODEC_AUTH_TOKEN") or None,
            codec_cors_origins=[
                o.strip()
                for o in (env.get("CODEC_CORS_ORIGINS") or ",".join(DEFAULT_UI_ORIGINS)).split(",")
                if o.strip()
            ],
            metrics_port=_port(env, "WORKER_METRICS_PORT"),
            max_cached_workflows=_positive_int(
                env, "WORKER_MAX_CACHED_WORKFLOWS", DEFAULT_MAX_CACHED_WORKFLOWS
            ),
            admin_session_key=env.get("ADMIN_SESSION_KEY") or None,
            admin_cookie_secure=_flag(env, "ADMIN_COOKIE_SECURE", default=True),
            task_queue=env.get("TASK_QUEUE") or TASK_QUEUE,
            provider_task_queue=env.get("PROVIDER_TASK_QUEUE") or None,
            payment_provider=_payment_provider(env.get("PAYMENT_PROVIDER") or "sandbox"),
            stripe_api_key=env.get("STRIPE_API_KEY") or None,
            stripe_api_base=env.get("STRIPE_API_BASE") or DEFAULT_STRIPE_API_BASE,
            stripe_webhook_secret=env.get("STRIPE_WEBHOOK_SECRET") or None,
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
        """The database URL.

        Raises:
            ConfigError: ``DATABASE_URL`` is not set (the message says how to get one).
        """
        if not self.database_url:
            raise ConfigError(
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
            raise ConfigError(f"PAYMENT_PROVIDER must be sandbox or stripe, not {value!r}")


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{name} must be a positive whole number, not {raw!r}")
    return value


def _port(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise ConfigError(f"{name} must be a port number (1 to 65535), not {raw!r}")
    return value


def _flag(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1 or 0, not {raw!r}")


def _positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{name} must be a positive number, not {raw!r}")
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
        raise ConfigError(f"{name} must be a positive ISO 8601 duration (P7D, PT1H), not {raw!r}")
    return value


def parse_tokens(value: str) -> dict[str, str]:
    """``shop-a:tok1,shop-b:tok2`` → ``{"tok1": "shop-a", "tok2": "shop-b"}``.

    Anything that could be read two ways is refused: an empty pair or part, a pair with
    more than one ``:`` (is ``a:b:c`` shop ``a`` or ``a:b``?), a shop id outside the API's
    id alphabet, a token with spaces, or one token given twice (whose shop would it be?).
    A shop may have several tokens (to rotate them).

    Raises:
        ConfigError: Naming the pair by its position, never its token.
    """
    tokens: dict[str, str] = {}
    if not value.strip():
        return tokens
    where: dict[str, int] = {}
    for n, pair in enumerate((p.strip() for p in value.split(",")), start=1):
        problem = _pair_problem(pair)
        if problem:
            raise ConfigError(
                f"ADMIN_HOOK_TOKENS pair {n} {problem}; expected comma-separated"
                " shop_id:token pairs"
            )
        shop, _, token = pair.partition(":")
        if token in tokens:
            raise ConfigError(
                f"ADMIN_HOOK_TOKENS pairs {where[token]} ({tokens[token]}) and {n} ({shop})"
                " have the same token; give each pair its own"
            )
        tokens[token] = shop
        where[token] = n
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
            raise ConfigError(
                f"PROVIDER_ACCOUNTS: {pair!r} is not shop_id:account_id"
                " (ids of letters, digits, '_', '.', '-')"
            )
        shop, account = parts
        if shop in accounts:
            raise ConfigError(f"PROVIDER_ACCOUNTS names shop {shop!r} twice")
        accounts[shop] = account
    return accounts


def _pair_problem(pair: str) -> str | None:
    """What is wrong with one ``shop_id:token`` pair, in words that quote none of it."""
    if not pair:
        return "is empty (two commas in a row, or one at an end)"
    colons = pair.count(":")
    if colons != 1:
        return "has no ':'" if colons == 0 else f"has {colons} ':' (shop ids can't contain ':')"
    shop, _, token = pair.partition(":")
    if not shop or not token:
        return "has an empty shop id" if not shop else "has an empty token"
    if not TOKEN_SHOP_ID.fullmatch(shop):
        return (
            "has a shop id that is not an id (1 to 64 letters, digits, '_', '.' or '-',"
            " starting with a letter or digit)"
        )
    if any(c.isspace() for c in token):
        return "has a token with spaces in it"
    return None


# -- the dev stack's environment, for commands run in another shell -----------------------


def find_project_folder(start: Path) -> Path | None:
    """The nearest folder from ``start`` upward that holds ``pyproject.toml``, or ``None``."""
    for folder in (start, *start.parents):
        if (folder / PROJECT_MARKER).is_file():
            return folder
    return None


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of the ``export NAME=value …`` lines the dev stack writes (shell
    quoting as :func:`shlex.quote` writes it); ``{}`` when there is no such file."""
    try:
        text = path.read_text()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return {}
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("export "):
            continue
        try:
            pairs = shlex.split(line.removeprefix("export "))
        except ValueError as err:  # an unclosed quote: someone edited the file
            raise ConfigError(f"{path}: an export line can't be read ({err})") from None
        for pair in pairs:
            name, sep, value = pair.partition("=")
            if sep and name:
                values[name] = value
    return values


def environment_with_fallback(env: Mapping[str, str], env_file: Path) -> dict[str, str]:
    """``env``, with the variables it lacks (or has empty) taken from ``env_file``."""
    merged = dict(env)
    for name, value in read_env_file(env_file).items():
        if not merged.get(name):
            merged[name] = value
    return merged


def dev_stack_environment(env: Mapping[str, str], cwd: Path) -> dict[str, str]:
    """``env`` plus the running dev stack's variables, where a command runs inside the project.

    The project folder is found from ``cwd`` upward; its ``.devstack/env`` (written by
    ``python -m starter dev``) fills in what ``env`` does not set, so a second shell needs no
    ``source .devstack/env``. Variables set in ``env`` always win.
    """
    project = find_project_folder(cwd)
    if project is None or not _written_by_a_dev_stack_of_ours(project / DEV_STACK_ENV_FILE):
        return dict(env)
    return environment_with_fallback(env, project / DEV_STACK_ENV_FILE)


def _written_by_a_dev_stack_of_ours(path: Path) -> bool:
    """The dev stack writes its env file as ours and private (0600). A file that is not, say
    one checked out with a repository someone else made, is never read: it would point the
    commands, and what they send, at servers of its author's choosing."""
    try:
        info = path.stat()
    except OSError:
        return False
    return info.st_uid == os.getuid() and not info.st_mode & 0o077
