"""Docs are code: every ```python block in the README runs, and the shell commands it shows exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


@pytest.mark.parametrize("source", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_blocks_run(source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    exec(compile(source, "README.md", "exec"), {"__name__": "readme"})


def test_readme_shows_the_two_setup_commands() -> None:
    commands = re.findall(r"```bash\n(.*?)\n```", README, flags=re.S)
    assert any("tidings validate examples/user-service.asyncapi.yaml" in c for c in commands)
    assert any("scripts/test" in c and ".[dev]" in c for c in commands)
    assert (ROOT / "examples" / "user-service.asyncapi.yaml").is_file()
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()
