"""domain/ imports nothing from api/, workers/ or the web and queue frameworks."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("api", "workers", "cli", "strawberry", "starlette", "dramatiq", "uvicorn", "httpx")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_domain_depends_on_nothing_outside_it() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & set(FORBIDDEN))
        for path in (ROOT / "domain").rglob("*.py")
        if _imports(path) & set(FORBIDDEN)
    }

    assert offenders == {}


def test_workers_do_not_import_api() -> None:
    offenders = [str(p) for p in (ROOT / "workers").rglob("*.py") if "api" in _imports(p)]

    assert offenders == []
