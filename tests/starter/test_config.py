"""Settings read from the environment, and how each entry point reports a bad one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from starter import cli, cli_output
from starter.config import DEFAULT_MAX_CACHED_WORKFLOWS, ConfigError, Settings, parse_tokens
from tools import devstack

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-Token_value"
"""A token that must never show up in an error message."""


def test_worker_cache_defaults_to_the_documented_size() -> None:
    assert Settings.from_env({}).max_cached_workflows == DEFAULT_MAX_CACHED_WORKFLOWS == 100


def test_worker_cache_size_comes_from_the_environment() -> None:
    settings = Settings.from_env({"WORKER_MAX_CACHED_WORKFLOWS": "250"})
    assert settings.max_cached_workflows == 250


@pytest.mark.parametrize("raw", ["0", "-5", "lots", "1.5"])
def test_a_bad_worker_cache_size_is_a_clear_error(raw: str) -> None:
    with pytest.raises(ConfigError, match="WORKER_MAX_CACHED_WORKFLOWS must be a positive"):
        Settings.from_env({"WORKER_MAX_CACHED_WORKFLOWS": raw})


@pytest.mark.parametrize("name", ["ADMIN_HOOK_PORT", "WORKER_METRICS_PORT"])
@pytest.mark.parametrize("raw", ["0", "65536", "http", "80.5"])
def test_a_bad_port_is_a_clear_error(name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=f"{name} must be a port number"):
        Settings.from_env({name: raw})


def test_a_missing_database_url_is_a_config_error_not_an_exit() -> None:
    """Library code raises; only entry points exit."""
    with pytest.raises(ConfigError, match="DATABASE_URL is not set"):
        Settings.from_env({}).require_database()


class TestAdminHookTokens:
    """``ADMIN_HOOK_TOKENS``: every pair reads one way only, or the whole setting is refused."""

    def test_pairs_map_tokens_to_shops(self) -> None:
        value = f" shop-a:{SECRET} , shop.b_2:t2,shop-a:t3 "
        assert parse_tokens(value) == {SECRET: "shop-a", "t2": "shop.b_2", "t3": "shop-a"}
        assert parse_tokens("") == parse_tokens("  ") == {}

    @pytest.mark.parametrize(
        ("value", "problem"),
        [
            (f"shop-a:{SECRET},shop-b:{SECRET}", "pairs 1 (shop-a) and 2 (shop-b) have the same"),
            (f"shop-a:{SECRET},shop-a:{SECRET}", "have the same token"),
            (f"shop:a:{SECRET}", "pair 1 has 2 ':'"),
            (f"shop-a:t1,shop:{SECRET}:x", "pair 2 has 2 ':'"),
            (f"{SECRET}", "pair 1 has no ':'"),
            (f":{SECRET}", "pair 1 has an empty shop id"),
            ("shop-a:", "pair 1 has an empty token"),
            (f"shop-a:{SECRET},", "pair 2 is empty"),
            (f"shop-a:{SECRET},,shop-b:t2", "pair 2 is empty"),
            (f",shop-a:{SECRET}", "pair 1 is empty"),
            (f"-shop:{SECRET}", "pair 1 has a shop id that is not an id"),
            (f"shop/a:{SECRET}", "not an id"),
            (f"shop a:{SECRET}", "not an id"),
            (f"shop\n:{SECRET}", "not an id"),
            (f"{'s' * 65}:{SECRET}", "not an id"),
            (f"shop-a:{SECRET} x", "pair 1 has a token with spaces"),
        ],
    )
    def test_anything_ambiguous_is_refused_without_quoting_the_token(
        self, value: str, problem: str
    ) -> None:
        with pytest.raises(ConfigError) as refused:
            parse_tokens(value)
        message = str(refused.value)
        assert problem in message
        assert "ADMIN_HOOK_TOKENS" in message
        assert SECRET not in message

    def test_settings_refuse_them_too(self) -> None:
        with pytest.raises(ConfigError, match="pair 1 has 2"):
            Settings.from_env({"ADMIN_HOOK_TOKENS": f"a:b:{SECRET}"})

    def test_a_64_character_shop_id_is_fine(self) -> None:
        assert parse_tokens(f"{'s' * 64}:{SECRET}") == {SECRET: "s" * 64}


# -- entry points: a clean message and a non-zero exit, never a traceback ----------------------

BAD_TOKENS = f"shop:a:{SECRET}"


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    # Only what the process needs: no developer's DATABASE_URL or Temporal profile.
    clean = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_worker_exits_with_the_message() -> None:
    result = _run(["worker.py"], WORKER_MAX_CACHED_WORKFLOWS="none")
    assert result.returncode == 2, result
    assert "worker: WORKER_MAX_CACHED_WORKFLOWS must be a positive" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_worker_without_a_database_exits_with_the_message() -> None:
    result = _run(["worker.py"])
    assert result.returncode == 2, result
    assert "worker: DATABASE_URL is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_hook_exits_with_the_message() -> None:
    result = _run(["-m", "starter.http"], ADMIN_HOOK_TOKENS=BAD_TOKENS)
    assert result.returncode == 2, result
    assert "admin hook: ADMIN_HOOK_TOKENS pair 1 has 2 ':'" in result.stderr
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_the_hook_refuses_to_issue_a_token_for_a_non_id() -> None:
    result = _run(["-m", "starter.http", "--issue-token", "shop/../x"])
    assert result.returncode == 2, result
    assert "admin hook: not a shop id" in result.stderr
    assert "Traceback" not in result.stderr


async def test_the_cli_reports_bad_settings_as_a_validation_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ADMIN_HOOK_TOKENS", BAD_TOKENS)
    assert await cli.run(["status", "shop-a", "order-1"]) == cli_output.EXIT_USAGE
    err = capsys.readouterr().err
    assert "ADMIN_HOOK_TOKENS pair 1 has 2 ':'" in err
    assert SECRET not in err


async def test_the_cli_without_a_database_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # no project folder, so no dev stack environment either
    assert await cli.run(["status", "shop-a", "order-1"]) == cli_output.EXIT_UNAVAILABLE
    assert "DATABASE_URL is not set" in capsys.readouterr().err


def test_the_dev_stack_refuses_bad_tokens_before_starting_anything(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("ADMIN_HOOK_TOKENS", BAD_TOKENS)
    state = tmp_path / "state"
    # Asked of the options first: were they accepted, main would start a whole stack.
    with pytest.raises(devstack.DevStackError):
        devstack.StackOptions.parse(["--state-dir", str(state)], os.environ)
    assert devstack.main(["--state-dir", str(state)]) == 2
    err = capsys.readouterr().err
    assert "devstack: ADMIN_HOOK_TOKENS pair 1 has 2 ':'" in err
    assert SECRET not in err
    assert not state.exists()


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
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: raw})
