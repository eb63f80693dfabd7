"""What ``liveledger --help`` (and so every command) imports before it does anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_command_starts_without_the_http_stack():
    # aiohttp is a tenth of a second of every start-up; only the commands that talk
    # over a WebSocket or sign a read import it, when they run.
    code = "import sys, cli.main; print('aiohttp' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False", out.stderr
