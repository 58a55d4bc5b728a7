"""Dependencies point inward: the layers only import what DESIGN §5 allows."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path("receiver")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _modules(sub: str) -> list[Path]:
    root = PACKAGE / sub
    return sorted(root.rglob("*.py")) if root.is_dir() else [root]


def test_leaves_import_nothing_of_ours() -> None:
    for leaf in ("errors.py", "models.py", "durations.py"):
        ours = {m for m in _imports(PACKAGE / leaf) if m.startswith("receiver")}
        assert not ours, f"{leaf} imports {ours}"


def test_only_the_server_layer_knows_aiohttp_web() -> None:
    allowed = {"server", "runtime.py", "handlers"}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in allowed:
            continue
        imported = _imports(path)
        assert "aiohttp.web" not in imported, f"{rel} imports aiohttp.web"
        src = path.read_text(encoding="utf-8")
        assert "from aiohttp import web" not in src, f"{rel} imports aiohttp.web"


def test_only_the_store_knows_sqlite() -> None:
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "store":
            continue
        imported = _imports(path)
        assert not imported & {"sqlite3", "aiosqlite"}, f"{rel} imports a SQLite driver"


def test_signatures_do_not_reach_into_ingest_store_or_server() -> None:
    for path in _modules("signatures"):
        bad = {
            m
            for m in _imports(path)
            if m.startswith(
                (
                    "receiver.store",
                    "receiver.server",
                    "receiver.ingest",
                    "receiver.worker",
                    "receiver.runtime",
                )
            )
        }
        assert not bad, f"{path} imports {bad}"


def test_ingest_knows_neither_aiohttp_nor_sql() -> None:
    imported = _imports(PACKAGE / "ingest.py")
    assert not {m for m in imported if m.startswith(("aiohttp", "receiver.store"))}
    assert not imported & {"sqlite3", "aiosqlite"}


def test_no_module_shadows_the_standard_library() -> None:
    import sys

    for path in PACKAGE.rglob("*.py"):
        assert path.stem not in sys.stdlib_module_names or path.stem == "__main__", path
