"""Take the screenshots of docs/merchants.md: a fresh dev stack, the guide's situations, chromium.

    .venv/bin/python scripts/admin_screenshots.py [--out docs/screenshots]

Starts ``python -m starter dev --fresh`` in a temporary state folder on free ports (so it runs
next to your own dev stack), creates the situations of the store-admin guide on the demo shop
through the HTTP API, then signs in to ``/admin`` with Debian's chromium (Playwright, no
downloaded browser) and saves one PNG per screen. Stops the stack it started when done.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Page, ViewportSize, async_playwright

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tools import ports  # noqa: E402 (needs the sys.path line above)

STACK_START_SECONDS = 180.0
SHOP = "demo-shop"
ACCEPT = {"reason_code": "changed_mind", "reason": "customer asked", "refund_method": "original"}
VIEWPORT: ViewportSize = {"width": 1200, "height": 900}


def start_stack(state_dir: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """Run the dev stack until it prints ``ready``; return it and the env file's values."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "ADMIN_HOOK_"))}
    env |= {
        "TEMPORAL_ADDRESS": f"127.0.0.1:{ports.free_port()}",
        "DEVSTACK_UI_PORT": str(ports.free_port()),
        "DEVSTACK_POSTGRES_PORT": str(ports.free_port()),
        "PAYMENT_PROVIDER_URL": f"http://127.0.0.1:{ports.free_port()}",
        "ADMIN_HOOK_PORT": str(ports.free_port()),
    }
    command = [sys.executable, "-m", "starter", "dev", "--fresh", "--state-dir", str(state_dir)]
    stack = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert stack.stdout is not None
    deadline = time.monotonic() + STACK_START_SECONDS
    for line in stack.stdout:
        if line.strip() == "ready":
            break
        if time.monotonic() > deadline or stack.poll() is not None:
            raise SystemExit(f"the dev stack did not start; last line: {line}")
    values: dict[str, str] = {}
    for line in (state_dir / "env").read_text().splitlines():
        if line.startswith("export "):
            for pair in shlex.split(line[len("export ") :]):
                name, _, value = pair.partition("=")
                values[name] = value
    values["TOKEN"] = (state_dir / "admin-token").read_text().strip()
    return stack, values


def stop_stack(stack: subprocess.Popen[str]) -> None:
    """Ctrl-C, as a person would: the stack stops its parts in order."""
    if stack.poll() is None:
        os.kill(stack.pid, signal.SIGINT)
        try:
            stack.wait(60)
        except subprocess.TimeoutExpired:
            os.kill(stack.pid, signal.SIGKILL)
            stack.wait()


class Api:
    """The demo shop's API, to set the scene."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def post(self, order_id: str, suffix: str, body: dict[str, Any]) -> dict[str, Any]:
        path = f"/v1/shops/{SHOP}/orders/{order_id}/cancellation{suffix}"
        answer = await self.http.post(path, json=body)
        answer.raise_for_status()
        view: dict[str, Any] = answer.json()
        return view

    async def request(self, order_id: str, reason: str) -> dict[str, Any]:
        body = {"initiated_by": "customer", "channel": "my_account", "reason_code": "changed_mind"}
        return await self.post(order_id, "", body | {"reason": reason})

    async def wait(self, order_id: str, done: Any) -> dict[str, Any]:
        for _ in range(200):
            answer = await self.http.get(f"/v1/shops/{SHOP}/orders/{order_id}/cancellation")
            view: dict[str, Any] = answer.json()
            if done(view):
                return view
            await asyncio.sleep(0.1)
        raise SystemExit(f"{order_id} did not get there: {view}")


async def shoot(page: Page, out: Path, name: str) -> None:
    await page.screenshot(path=str(out / f"admin-{name}.png"), full_page=True)
    print(f"saved {out / f'admin-{name}.png'}")


async def take(values: dict[str, str], out: Path, chromium: str) -> None:
    hook = values["ADMIN_HOOK_URL"]
    headers = {"Authorization": f"Bearer {values['TOKEN']}"}
    async with httpx.AsyncClient(base_url=hook, headers=headers, trust_env=False) as http:
        api = Api(http)
        # The guide's situations on the demo shop's orders.
        bank = await api.request("demo-bank-transfer", "I paid twice by mistake")
        await api.post(
            "demo-bank-transfer",
            "/accept",
            ACCEPT
            | {"bank_account": {"bank": "KB", "account_number": "110-123-456789", "holder": "Ana"}},
        )
        declined = await api.request("demo-card-declined", "Found it cheaper elsewhere")
        await api.post("demo-card-declined", "/accept", ACCEPT)
        await api.wait("demo-card-declined", lambda v: v["needs_attention"] == "refund_failed")
        await api.request("demo-card-points", "Wrong size")
        await api.post("demo-card-points", "/accept", ACCEPT)
        undo = await api.wait("demo-card-points", lambda v: v["status"] == "canceled")
        requested = await api.request("demo-card-captured", "Ordered the wrong colour, sorry!")

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = await browser.new_context(base_url=hook, viewport=VIEWPORT)
        page = await context.new_page()
        await page.goto("/admin")
        await page.locator("input[name=token]").fill(values["TOKEN"])
        await page.locator("input[name=name]").fill("jane.doe")
        await shoot(page, out, "sign-in")
        await page.get_by_role("button", name="Sign in").click()
        await shoot(page, out, "cancellations")

        await page.goto(f"/admin/cancellations/{requested['cancellation_id']}")
        await shoot(page, out, "cancellation-requested")
        await page.get_by_role("link", name="Accept cancellation request").click()
        await page.locator("textarea[name=reason]").fill("Customer ordered the wrong colour")
        await shoot(page, out, "accept")
        await page.get_by_role("button", name="Review refund").click()
        await shoot(page, out, "accept-quote")
        await page.get_by_role("button", name="OK, accept cancellation request").click()
        for _ in range(50):
            if "Canceled" in await page.locator("#status").inner_text():
                break
            await asyncio.sleep(0.2)
            await page.reload()
        await shoot(page, out, "canceled")

        await page.goto(f"/admin/cancellations/{bank['cancellation_id']}")
        await shoot(page, out, "bank-deposit")
        await page.goto(f"/admin/cancellations/{declined['cancellation_id']}")
        await shoot(page, out, "refund-failed")
        await page.goto(f"/admin/cancellations/{undo['cancellation_id']}/undo")
        await shoot(page, out, "undo")
        await page.goto("/admin/orders/demo-card-authorized")
        await shoot(page, out, "order-details")
        await page.locator("input[name=scope][value=items]").check()
        await page.locator("input[name='qty-i1']").fill("1")
        await page.get_by_role("button", name="Accept cancellation request").click()
        await shoot(page, out, "cancel-quote")
        await page.goto("/admin/orders/demo-in-transit")
        await shoot(page, out, "order-shipped")
        await page.goto("/admin/settings")
        await shoot(page, out, "settings")
        await browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    state_dir = Path(tempfile.mkdtemp(prefix="screenshots-devstack-"))
    stack, values = start_stack(state_dir)
    try:
        asyncio.run(take(values, args.out, chromium))
    finally:
        stop_stack(stack)
        shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
