"""localstripe, a fake Stripe server from PyPI, run as its own process.

localstripe is GPL-3.0: the project never imports or ships it. The tests and the dev stack
start its console entry (``python -m localstripe``) as a separate process and talk to it
over HTTP, exactly like they would talk to Stripe (``STRIPE_API_BASE``).

What it can't be told, and what follows (docs/providers.md, "localstripe"):

- it has no ``--host``: it listens on every interface (``::``) of the given port; nothing
  of ours sends it anything but loopback traffic, and its data is fake;
- it writes its whole state to ``/tmp/localstripe.pickle`` after every change and would
  read it back at start: we always pass ``--from-scratch`` so a run never sees another's.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tools import ports

# Any key shaped like a secret key is accepted by localstripe; a test-mode prefix keeps the
# adapter's own checks (and a reader) from mistaking it for a real one.
LOCALSTRIPE_API_KEY = "sk_test_localstripe"

# localstripe starts in ~1 s on a healthy machine; a cold CI box may need longer.
STARTUP_TIMEOUT_SECONDS = 30.0


def command(port: int) -> list[str]:
    """The command line that runs localstripe on ``port`` with an empty store."""
    return [sys.executable, "-m", "localstripe", "--port", str(port), "--from-scratch"]


def start(port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """Start localstripe on ``port`` (output to ``log_path``) and wait until it listens.

    Raises:
        RuntimeError: It exited or did not listen in time; the message has its output.
    """
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command(port), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        ports.wait_for_port(
            ports.LOOPBACK, port, STARTUP_TIMEOUT_SECONDS, alive=lambda: process.poll() is None
        )
    except (TimeoutError, RuntimeError) as error:
        process.kill()
        process.wait()
        output = log_path.read_text(errors="replace")
        raise RuntimeError(f"localstripe did not start: {error}; it printed:\n{output}") from error
    return process


def api_base(port: int) -> str:
    """``STRIPE_API_BASE`` for a localstripe on ``port``."""
    return f"http://{ports.LOOPBACK}:{port}"
