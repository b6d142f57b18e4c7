"""The dev stack as people run it: ``python -m tools.devstack`` in one shell, the demo in another.

Each stack here is the real thing (PostgreSQL, Temporal with its UI, the sandbox, the worker) in a
temporary state folder, on ports the kernel picked: never the defaults, which a developer's own
stack may be using. Every process is stopped by its id, whatever happens.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from domain.cancellation import (
    CancellationStatus,
    CancellationView,
    Channel,
    InitiatedBy,
    ReasonCode,
    RefundStatus,
)
from domain.requests import AcceptRequest, StartRequest
from starter.client import CancellationClient
from starter.config import Settings, environment_with_fallback
from tools import ports
from tools.demo import (
    CUSTOMER_ID,
    DEMO_SHOP_ID,
    SCENARIOS,
    OrderPlan,
    place_order,
)
from tools.devstack import DEFAULT_TEMPORAL_PORT, DEFAULT_UI_PORT, StateDir, stop_orphans

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]

# A cold start (initdb, first SDK import) takes a few seconds; a loaded CI machine much longer.
STARTUP_TIMEOUT_SECONDS = 90.0
# The worker may take up to 20 s to let activities finish; then three servers stop.
STOP_TIMEOUT_SECONDS = 60.0
DEMO_TIMEOUT_SECONDS = 120.0
WAIT_TIMEOUT_SECONDS = 30.0

# What a developer's own stack listens on; a test that took one would fight it.
_DEFAULT_PORTS = frozenset({DEFAULT_TEMPORAL_PORT, DEFAULT_UI_PORT, 5433, 8000, 8001, 8002})
# Variables from the developer's shell that would point the stack or its clients elsewhere.
_OWN_VARIABLES = ("DATABASE_URL", "PAYMENT_PROVIDER_", "ADMIN_HOOK_", "TEMPORAL_", "DEVSTACK_")


class DevStackProcess:
    """One dev stack process on a state folder; it can be stopped and started again."""

    def __init__(self, state_dir: Path, env: dict[str, str], *args: str) -> None:
        self.state_dir = state_dir
        self.env = env
        self.args = args
        self.lines: list[str] = []
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self) -> None:
        """Start the stack and return once it printed ``ready``."""
        self.lines = []
        self._ready.clear()
        command = [sys.executable, "-m", "tools.devstack", "--state-dir", str(self.state_dir)]
        self._process = subprocess.Popen(
            [*command, *self.args],
            cwd=REPO_ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, args=(self._process,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not self._ready.wait(0.1):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self._reader.join(5)
                raise AssertionError("the dev stack did not get ready:\n" + self.output)

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.strip() == "ready":
                self._ready.set()

    @property
    def output(self) -> str:
        """Everything the current run printed so far."""
        return "\n".join(self.lines)

    @property
    def pid(self) -> int:
        """The stack's own process id."""
        assert self._process is not None
        return self._process.pid

    def wait(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
        """Wait for the stack to exit on its own; returns its exit status."""
        assert self._process is not None
        code = self._process.wait(timeout)
        self._finish()
        return code

    def stop(self, signum: signal.Signals = signal.SIGINT) -> int:
        """Send ``signum`` (Ctrl-C by default) and wait for the stack to exit."""
        assert self._process is not None
        os.kill(self._process.pid, signum)
        return self.wait()

    def _finish(self) -> None:
        if self._reader is not None:
            self._reader.join(10)
        if self._process is not None and self._process.stdout is not None:
            self._process.stdout.close()

    def client_env(self) -> dict[str, str]:
        """The environment a second shell has after ``source <state>/env``."""
        return environment_with_fallback(_clean_env(), self.state_dir / "env")

    def shutdown(self) -> None:
        """Teardown: stop the stack however it is; kill it, and any child it left, by id."""
        process = self._process
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGINT)
            try:
                process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
        self._finish()
        # A killed stack leaves its children running, and their ids in the state folder; the
        # stack's own orphan clean-up stops those (and only those) that still name the folder.
        stop_orphans(StateDir(self.state_dir))


def _clean_env() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if not any(name.startswith(prefix) for prefix in _OWN_VARIABLES)
    }


def _free_port() -> int:
    while True:
        port = ports.free_port()
        if port not in _DEFAULT_PORTS:
            return port


def _stack_env() -> dict[str, str]:
    """The developer's environment with a free loopback port for every part of the stack."""
    env = _clean_env()
    env.update(
        TEMPORAL_ADDRESS=f"127.0.0.1:{_free_port()}",
        DEVSTACK_UI_PORT=str(_free_port()),
        DEVSTACK_POSTGRES_PORT=str(_free_port()),
        PAYMENT_PROVIDER_URL=f"http://127.0.0.1:{_free_port()}",
        ADMIN_HOOK_PORT=str(_free_port()),
        DEVSTACK_INBOX_PORT=str(_free_port()),
    )
    return env


def _state_dir() -> Path:
    # Not pytest's tmp_path: as root, PostgreSQL runs as another user, who must be able to enter
    # every parent folder, and pytest keeps its base folder private (mode 0700). The state
    # folder itself does not exist yet, as on a fresh clone without .devstack/.
    return Path(tempfile.mkdtemp(prefix="test-devstack-")) / "state"


@pytest.fixture(scope="module")
def stack() -> Iterator[DevStackProcess]:
    """A running dev stack with the demo data, shared by this module's tests."""
    state_dir = _state_dir()
    process = DevStackProcess(state_dir, _stack_env())
    try:
        process.start()
        yield process
    finally:
        process.shutdown()
        shutil.rmtree(state_dir, ignore_errors=True)


def test_stack_prints_its_urls_and_environment_then_ready(stack: DevStackProcess) -> None:
    """The banner names every part; the env file holds what a second shell needs."""
    env = stack.env
    ui_url = f"http://127.0.0.1:{env['DEVSTACK_UI_PORT']}"
    assert f"Temporal gRPC     {env['TEMPORAL_ADDRESS']}" in stack.output
    assert f"Temporal Web UI   {ui_url}" in stack.output
    assert f"Payment sandbox   {env['PAYMENT_PROVIDER_URL']}" in stack.output
    assert stack.lines.count("ready") == 1
    client_env = stack.client_env()
    assert client_env["TEMPORAL_ADDRESS"] == env["TEMPORAL_ADDRESS"]
    assert client_env["PAYMENT_PROVIDER_URL"] == env["PAYMENT_PROVIDER_URL"]
    assert client_env["DATABASE_URL"].endswith(f":{env['DEVSTACK_POSTGRES_PORT']}/store")
    assert client_env["TEMPORAL_UI_URL"] == ui_url
    token_file = stack.state_dir / "admin-token"
    assert token_file.stat().st_mode & 0o077 == 0
    assert f"demo-shop: {token_file.read_text().strip()}" in stack.output
    logs = {path.name for path in (stack.state_dir / "logs").iterdir()}
    assert logs == {
        "postgres.log",
        "temporal.log",
        "sandbox.log",
        "worker.log",
        "hook.log",
        "relay.log",
        "inbox.log",
    }
    hook_url = f"http://127.0.0.1:{env['ADMIN_HOOK_PORT']}"
    assert f"Admin hook        {hook_url}" in stack.output
    assert client_env["ADMIN_HOOK_URL"] == hook_url
    # Secrets reach the env file (mode 0600), never the printed banner.
    dev_secrets = ("PAYLOAD_ENCRYPTION_KEY", "PAYMENT_PROVIDER_WEBHOOK_SECRET", "CODEC_AUTH_TOKEN")
    for secret in (*dev_secrets, "ADMIN_SESSION_KEY"):
        assert client_env[secret] and client_env[secret] not in stack.output
    assert (stack.state_dir / "env").stat().st_mode & 0o077 == 0
    token = token_file.read_text().strip()
    health = httpx.get(f"{hook_url}/healthz", timeout=10)
    assert health.status_code == 200, health.text
    orders = httpx.get(
        f"{hook_url}/v1/shops/demo-shop/orders/demo-card-captured",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert orders.status_code == 200, orders.text
    # The merchant's pages: their URL is printed, and over http their cookie is not Secure.
    assert f"Merchant admin    {hook_url}/admin" in stack.output
    sign_in = httpx.get(f"{hook_url}/admin/sign-in", timeout=10)
    assert sign_in.status_code == 200, sign_in.text
    assert "secure" not in sign_in.headers["set-cookie"].lower()


def test_demo_walks_every_scenario_of_the_seed(stack: DevStackProcess) -> None:
    """``python -m tools.demo --json`` in a second shell: every scenario ends as expected."""
    result = subprocess.run(
        [sys.executable, "-m", "tools.demo", "--json"],
        cwd=REPO_ROOT,
        env=stack.client_env(),
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    walked = json.loads(result.stdout.strip().splitlines()[-1])
    assert walked["failed"] == 0
    assert [s["name"] for s in walked["scenarios"]] == [s.name for s in SCENARIOS]
    ui_url = f"http://127.0.0.1:{stack.env['DEVSTACK_UI_PORT']}/namespaces/default/workflows/"
    for scenario in walked["scenarios"]:
        assert scenario["ok"], scenario
        if scenario["cancellation_id"] is not None:
            assert scenario["ui_url"] == ui_url + scenario["cancellation_id"]


def test_second_stack_on_the_same_state_dir_is_refused(stack: DevStackProcess) -> None:
    """It fails at once and leaves the running stack alone."""
    result = subprocess.run(
        [sys.executable, "-m", "tools.devstack", "--state-dir", str(stack.state_dir)],
        cwd=REPO_ROOT,
        env=_stack_env(),
        capture_output=True,
        text=True,
        timeout=STOP_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 1
    assert "another dev stack is running" in result.stderr
    assert all((stack.state_dir / "pids" / name).exists() for name in ("worker", "postgres"))


async def test_a_cancellation_carries_on_across_a_restart(stack: DevStackProcess) -> None:
    """Ctrl-C in the middle of two cancellations, start again: both reach canceled.

    One waits for the merchant's decision; the other has a provider refund in flight.
    """
    waiting, refunding = f"restart-{uuid.uuid4().hex[:6]}", f"restart-{uuid.uuid4().hex[:6]}"
    settings = Settings.from_env(stack.client_env())
    client = await CancellationClient.connect(settings)
    try:
        await _place(client, settings, waiting)
        await _place(client, settings, refunding, {"refund": "pending", "settle_after_seconds": 2})
        view, created = await client.start_cancellation(DEMO_SHOP_ID, waiting, _customer_request())
        assert created and view.status is CancellationStatus.REQUESTED
        await client.start_cancellation(DEMO_SHOP_ID, refunding, _customer_request())
        await client.accept(DEMO_SHOP_ID, refunding, _acceptance())
        await _until(client, refunding, lambda v: v.status is CancellationStatus.IN_PROGRESS)
    finally:
        await client.close()

    assert await asyncio.to_thread(stack.stop) == 0
    assert stack.lines[-1] == "stopped"
    await asyncio.to_thread(stack.start)
    assert "demo data loaded" not in stack.output  # loaded once, never duplicated

    client = await CancellationClient.connect(settings)
    try:
        view = await client.get_cancellation(DEMO_SHOP_ID, waiting)
        assert view.status is CancellationStatus.REQUESTED
        await client.accept(DEMO_SHOP_ID, waiting, _acceptance())
        for order_id in (waiting, refunding):
            view = await _until(client, order_id, lambda v: v.status is CancellationStatus.CANCELED)
            assert [r.status for r in view.refunds] == [RefundStatus.SUCCEEDED]
    finally:
        await client.close()


def test_a_port_in_use_fails_fast_naming_its_variable() -> None:
    """Nothing starts; the message names the port and the variable that moves it."""
    state_dir = _state_dir()
    env = _stack_env()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env["TEMPORAL_ADDRESS"] = f"127.0.0.1:{port}"
        try:
            result = subprocess.run(
                [sys.executable, "-m", "tools.devstack", "--state-dir", str(state_dir)],
                cwd=REPO_ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=STOP_TIMEOUT_SECONDS,
                check=False,
            )
        finally:
            shutil.rmtree(state_dir, ignore_errors=True)
    assert result.returncode == 1
    assert f"port {port}" in result.stderr
    assert "TEMPORAL_ADDRESS" in result.stderr
    assert "ready" not in result.stdout


def test_a_child_that_dies_stops_the_stack_with_its_log() -> None:
    """The worker is killed: the stack names it, shows its log, stops the rest, exits 1."""
    state_dir = _state_dir()
    process = DevStackProcess(state_dir, _stack_env(), "--no-demo-data")
    try:
        process.start()
        worker_pid = int((state_dir / "pids" / "worker").read_text())
        os.kill(worker_pid, signal.SIGKILL)
        assert process.wait() == 1
        assert "the worker exited unexpectedly (killed by SIGKILL)" in process.output
        assert "worker ready" in process.output  # the tail of its log
        assert process.lines[-1] == "stopped"
        assert not list((state_dir / "pids").iterdir())
    finally:
        process.shutdown()
        shutil.rmtree(state_dir, ignore_errors=True)


# -- helpers -----------------------------------------------------------------------------------


async def _place(
    client: CancellationClient,
    settings: Settings,
    order_id: str,
    behavior: dict[str, object] | None = None,
) -> None:
    from activities.provider_client import PaymentProviderClient

    provider = PaymentProviderClient(settings.provider_url)
    try:
        plan = OrderPlan(order_id, CUSTOMER_ID, (("sku-mug", 1),), behavior=behavior)
        account = settings.provider_accounts.get(DEMO_SHOP_ID)
        await place_order(client.store, provider, DEMO_SHOP_ID, plan, account=account)
    finally:
        await provider.aclose()


def _customer_request() -> StartRequest:
    return StartRequest(
        initiated_by=InitiatedBy.CUSTOMER,
        channel=Channel.MY_ACCOUNT,
        reason_code=ReasonCode.CHANGED_MIND,
    )


def _acceptance() -> AcceptRequest:
    return AcceptRequest(reason_code=ReasonCode.CHANGED_MIND, reason="Restart test")


async def _until(
    client: CancellationClient, order_id: str, done: Callable[[CancellationView], bool]
) -> CancellationView:
    deadline = asyncio.get_running_loop().time() + WAIT_TIMEOUT_SECONDS
    while True:
        view = await client.get_cancellation(DEMO_SHOP_ID, order_id)
        if done(view):
            return view
        assert asyncio.get_running_loop().time() < deadline, f"not reached; view: {view}"
        await asyncio.sleep(0.1)


def test_the_stack_runs_on_stripe_with_localstripe_as_its_provider():
    """``--provider stripe``: localstripe runs as its own process, the demo shop's card
    payments are PaymentIntents there, and a merchant's cancellation refunds one."""
    env = _stack_env() | {"DEVSTACK_LOCALSTRIPE_PORT": str(_free_port())}
    process = DevStackProcess(_state_dir(), env, "--provider", "stripe")
    process.start()
    try:
        assert "Card payments     Stripe's API" in process.output
        client = process.client_env()
        token = (process.state_dir / "admin-token").read_text().strip()
        base = f"{client['ADMIN_HOOK_URL']}/v1/shops/demo-shop/orders/demo-card-captured"
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(trust_env=False, timeout=30) as http:
            order = http.get(base, headers=headers).json()
            assert order["tenders"][0]["payment_id"].startswith("pi_")
            started = http.post(
                f"{base}/cancellation",
                headers=headers,
                json={
                    "initiated_by": "merchant",
                    "channel": "admin",
                    "reason_code": "sold_out",
                    "accept": {"reason_code": "sold_out"},
                },
            )
            assert started.status_code == 201, started.text
            deadline = time.monotonic() + 30
            while True:
                view = http.get(f"{base}/cancellation", headers=headers).json()
                if view["status"] == "canceled" or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        assert view["status"] == "canceled", view
        assert view["refunds"][0]["provider_reference"].startswith("re_")
    finally:
        assert process.stop() == 0
