"""The one YAML reader: parse, validate, resolve secrets; every problem named by its key path.

``load_config(path, environ=…)`` returns a frozen :class:`Config` or raises
:class:`~receiver.errors.ConfigError` listing every problem at once. ``receiver check-config``
runs exactly this function.
"""

from __future__ import annotations

__all__ = ["Config", "config_path", "load_config", "parse_settings", "serving_problems"]

import io
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from receiver.errors import ConfigError, ConfigProblem
from receiver.settings import AdminSettings, ProviderSettings, Settings, unset_variable


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Validated settings plus every provider resolved (secrets read, verifier built)."""

    path: Path
    settings: Settings
    providers: Mapping[str, Any]  # name -> receiver.providers.Provider
    warnings: tuple[str, ...] = ()

    @property
    def handled_providers(self) -> frozenset[str]:
        """The providers with a handler: only their events have anything to run (or replay)."""
        return frozenset(
            name for name, p in self.settings.providers.items() if p.handler is not None
        )


def config_path(given: str | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """``--config`` when given, else ``$RECEIVER_CONFIG``, else ``config/receiver.yaml``."""
    if given:
        return Path(given)
    env = os.environ if environ is None else environ
    return Path(env.get("RECEIVER_CONFIG") or "config/receiver.yaml")


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys: a repeated key is almost always a mistake.
    Merge keys (``<<: *base``, a shared handler block) work as in any YAML loader; the keys
    are checked as written, before merging rewrites the document."""

    def construct_document(self, node: yaml.Node) -> Any:
        _check_keys(self, node, set())
        return super().construct_document(node)


def _check_keys(loader: yaml.SafeLoader, node: yaml.Node, seen_nodes: set[int]) -> None:
    if id(node) in seen_nodes:  # an alias: checked where its anchor is
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_keys(loader, item, seen_nodes)
        return
    if not isinstance(node, yaml.MappingNode):
        return
    keys: set[Any] = set()
    merges = 0
    for key_node, value_node in node.value:
        _check_keys(loader, value_node, seen_nodes)
        if key_node.tag == _MERGE_TAG:
            merges += 1
            if merges > 1:
                raise _key_error(
                    "merge key '<<' given twice: merge several with <<: [*a, *b]", key_node
                )
            continue
        if not isinstance(key_node, yaml.ScalarNode):
            raise _key_error("a key must be a plain value, not a list or a mapping", key_node)
        key = loader.construct_object(key_node)
        if key in keys:
            raise _key_error(f"duplicate key {key!r}", key_node)
        keys.add(key)


def _key_error(problem: str, node: yaml.Node) -> yaml.constructor.ConstructorError:
    return yaml.constructor.ConstructorError(None, None, problem, node.start_mark)


def _loc_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for i, item in enumerate(loc):
        # Discriminated unions add the tag ("http") to the location; it is not a key the user wrote.
        if i > 0 and loc[i - 1] == "handler" and item in ("http", "python", "command"):
            continue
        parts.append(str(item))
    return ".".join(parts)


def _friendly(error: Mapping[str, Any]) -> str:
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; unknown keys are not ignored)"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        return "kind must be one of: http, python, command"
    if kind == "union_tag_not_found":
        return "a handler needs kind: http, python or command"
    if kind == "string_pattern_mismatch" and error.get("loc", ())[-1:] == ("target",):
        return "write it as package.module:function (a colon before the function)"
    return str(error.get("msg", "invalid value")).removeprefix("Value error, ")


def _problems_of(exc: ValidationError, prefix: tuple[int | str, ...] = ()) -> list[ConfigProblem]:
    return [ConfigProblem(_loc_path(prefix + tuple(e["loc"])), _friendly(e)) for e in exc.errors()]


def _salvage(raw: dict[str, Any]) -> Settings:
    """The parts of an invalid document that are valid on their own, so that provider problems
    (unset variables, bad secrets) are reported in the same run as schema problems."""
    sections: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        if name == "providers" or not isinstance(raw.get(name), dict):
            continue
        try:
            sections[name] = field.annotation.model_validate(raw[name])  # type: ignore[union-attr]
        except ValidationError:
            continue
    providers: dict[str, ProviderSettings] = {}
    raw_providers = raw.get("providers")
    if isinstance(raw_providers, dict):
        for name, entry in raw_providers.items():
            provider = _salvage_provider(entry)
            if provider is not None:
                providers[str(name)] = provider
    return Settings(**sections, providers=providers)


def _salvage_provider(entry: object) -> ProviderSettings | None:
    """A provider entry without its invalid keys (already reported), so the rest of it is still
    checked: a misspelt key must not hide an unset secret variable in the same run."""
    try:
        return ProviderSettings.model_validate(entry)
    except ValidationError as exc:
        if not isinstance(entry, dict):
            return None
        wrong = {e["loc"][0] for e in exc.errors() if e["loc"]}
        rest = {key: value for key, value in entry.items() if key not in wrong}
    try:
        return ProviderSettings.model_validate(rest)
    except ValidationError:
        return None


def parse_settings(raw: object) -> tuple[Settings, list[ConfigProblem]]:
    """Validate a parsed YAML document: the settings (salvaged when invalid) and the problems."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return Settings(), [ConfigProblem("", "the top level must be a mapping of sections")]
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        # What did validate is still checked across sections (a section that did not stands at
        # its defaults in the salvage: no check may read those).
        invalid = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
        salvaged = _salvage(raw)
        return salvaged, _problems_of(exc) + _cross_section_problems(salvaged, skip=invalid)
    problems = _cross_section_problems(settings)
    if not settings.providers:
        problems.append(ConfigProblem("providers", "no providers are configured"))
    return settings, problems


def _cross_section_problems(
    settings: Settings, *, skip: Collection[str] = ()
) -> list[ConfigProblem]:
    problems = []
    ingest, admin = settings.server.port, settings.admin.port
    if ingest == admin != 0 and not {"server", "admin"} & set(skip):
        problems.append(
            ConfigProblem("admin.port", f"is the ingest listener's port too ({ingest})")
        )
    path = settings.storage.path
    if "storage" not in skip and (str(path) in ("", ".") or path.is_dir()):
        problems.append(
            ConfigProblem("storage.path", f"must name a database file, not a directory ({path})")
        )
    return problems


def _admin_as_written(raw: object, admin: AdminSettings) -> AdminSettings:
    """The admin listener's host and token variable as the file writes them, even when another
    key of that section is wrong (the salvage then holds the defaults: a loopback host)."""
    written = raw.get("admin") if isinstance(raw, dict) else None
    if not isinstance(written, dict):
        return admin
    host, token_env = written.get("host", admin.host), written.get("token_env", admin.token_env)
    if not isinstance(host, str) or not isinstance(token_env, str):
        return admin
    return admin.model_copy(update={"host": host, "token_env": token_env})


def serving_problems(admin: AdminSettings, env: Mapping[str, str]) -> list[ConfigProblem]:
    """What ``serve`` would refuse at start beyond the file itself: an admin API on a non-loopback
    address without its token (``check-config`` reports it too)."""
    from receiver.server.admin_auth import is_loopback

    if is_loopback(admin.host) or env.get(admin.token_env, "").strip():
        return []
    return [
        ConfigProblem(
            "admin.host",
            f"{admin.host} is not a loopback address and {unset_variable(admin.token_env)}"
            " (admin.token_env): set a token, or bind admin to 127.0.0.1",
        )
    ]


def read_yaml(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigProblem("", f"config file {path} does not exist")]) from None
    except OSError as exc:
        raise ConfigError(
            [ConfigProblem("", f"config file {path} cannot be read: {exc.strerror}")]
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [
                ConfigProblem(
                    "",
                    f"config file {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x}"
                    f" at offset {exc.start}): save it as UTF-8",
                )
            ]
        ) from None
    stream = io.StringIO(text)
    stream.name = str(path)  # so a YAML error names the file, not "<unicode string>"
    try:
        return yaml.load(stream, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem("", f"{path} is not valid YAML: {exc}")]) from None


def load_config(
    path: Path,
    *,
    environ: Mapping[str, str] | None = None,
    only: Collection[str] | None = None,
    for_serving: bool = False,
) -> Config:
    """Read, validate and resolve ``path``; raise ConfigError listing every problem. With
    ``only``, just those providers are resolved (``sign`` needs one provider's secret, the
    operations commands none); ``for_serving`` adds what ``serve`` would refuse at start."""
    from receiver.providers import resolve_providers  # the provider layer builds verifiers

    env = dict(os.environ if environ is None else environ)
    raw = read_yaml(path)
    settings, problems = parse_settings(raw)
    providers, provider_problems, warnings = resolve_providers(settings, env, only=only)
    problems += provider_problems
    if for_serving:
        problems += serving_problems(_admin_as_written(raw, settings.admin), env)
    if problems:
        raise ConfigError(problems)
    return Config(path=path, settings=settings, providers=providers, warnings=tuple(warnings))
