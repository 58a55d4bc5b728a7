"""Every setting is documented: a key added to the config models must reach the README."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from receiver.settings import (
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
    end = README.find("\n## " if title.startswith("## ") else "\n### ", start + len(title))
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


def test_every_preset_is_in_the_providers_table() -> None:
    from receiver.signatures.registry import all_schemes

    table = _section("## Providers")
    missing = [
        name
        for name in all_schemes()
        if f"| `{name}` |" not in table and f"`scheme: {name}`" not in table
    ]
    assert not missing, f"presets missing from the README: {missing}"


def test_every_preset_has_an_example_block() -> None:
    import yaml

    from receiver.signatures.registry import all_schemes

    examples = yaml.safe_load(Path("config/examples/presets.yaml").read_text(encoding="utf-8"))
    schemes = {block["scheme"] for block in examples["providers"].values()}
    assert set(all_schemes()) - {"none"} <= schemes
