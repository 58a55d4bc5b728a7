"""Every setting is documented: a key added to the config models must reach the README."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from receiver.config import (
    AdminSettings,
    CommandHandler,
    HttpHandler,
    LogSettings,
    ProviderSettings,
    PythonHandler,
    ServerSettings,
    StorageSettings,
    WorkerSettings,
)

README = Path("README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    start = README.index(title)
    end = README.find("\n### ", start + len(title))
    return README[start : end if end != -1 else None]


def _keys(model: type[BaseModel]) -> set[str]:
    return set(model.model_fields) - {"kind"}


def test_every_section_key_is_in_the_configuration_reference() -> None:
    sections = {
        "### `server`": ServerSettings,
        "### `admin`": AdminSettings,
        "### `storage`": StorageSettings,
        "### `worker`": WorkerSettings,
        "### `logging`": LogSettings,
        "### `providers.NAME`": ProviderSettings,
    }
    for title, model in sections.items():
        text = _section(title)
        missing = {k for k in _keys(model) if f"`{k}`" not in text}
        assert not missing, f"undocumented in {title}: {sorted(missing)}"


def test_every_handler_key_is_documented() -> None:
    text = _section("### `providers.NAME`")
    for model in (HttpHandler, PythonHandler, CommandHandler):
        missing = {k for k in _keys(model) if k not in text}
        assert not missing, f"undocumented {model.__name__} keys: {sorted(missing)}"


def test_the_readme_test_command_is_what_ci_runs() -> None:
    ci = Path(".ci/run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert ci in README
