"""The one YAML reader: parse, validate, resolve secrets; every problem named by its key path.

``load_config(path, environ=…)`` returns a frozen :class:`Config` or raises
:class:`~receiver.errors.ConfigError` listing every problem at once. ``receiver check-config``
runs exactly this function.
"""

from __future__ import annotations

__all__ = [
    "AdminSettings",
    "CommandHandler",
    "Config",
    "HandlerSettings",
    "HttpHandler",
    "ProviderSettings",
    "PythonHandler",
    "ServerSettings",
    "Settings",
    "StorageSettings",
    "WorkerSettings",
    "config_path",
    "load_config",
]

import io
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from receiver.durations import parse_duration
from receiver.errors import ConfigError, ConfigProblem

Duration = Annotated[float, BeforeValidator(parse_duration)]
_MAX_RETENTION_S = 3650 * 86400


def _at_most_ten_years(seconds: float) -> float:
    # A window meant as "for ever" (100000000w) put expiries past the year 9999, where no
    # date can be written: the events it kept could not be shown.
    if seconds > _MAX_RETENTION_S:
        raise ValueError("a retention window is at most 3650d (ten years)")
    return seconds


def _absolute_http_url(value: str) -> str:
    # Twilio and Square sign the URL they called: one without a scheme or host, or blank,
    # fails every delivery's signature.
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or value != value.strip():
        raise ValueError(
            "must be the absolute http(s) URL the provider calls, like "
            "https://hooks.example.com/webhooks/twilio"
        )
    return value


Retention = Annotated[Duration, AfterValidator(_at_most_ten_years)]
PublicUrl = Annotated[str, AfterValidator(_absolute_http_url)]
# Numbers and switches as YAML writes them: ``true`` is not the number 1, nor ``"8"`` a count.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]  # an integer is a float too; .inf and .nan are refused
Bool = Annotated[bool, Strict()]
Port = Annotated[Int, Field(ge=0, le=65535)]
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"  # an environment variable's name
# How secrets pasted where a variable's name belongs begin (refused, never echoed back).
SECRET_PREFIXES = ("whsec_", "whpk_", "whsk_", "sk_live_", "sk_test_", "rk_live_", "rk_test_")
# What a variable's name looks like when an error may repeat it: words joined by "_".
_SHOWN_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|[a-z][a-z0-9]*(?:_[a-z0-9]+)+")


def unset_variable(var: str) -> str:
    """An unset variable, named only when its name looks like one (words joined by ``_``): a
    short secret pasted in its place is a valid name too, and must not be printed."""
    shown = var if _SHOWN_NAME.fullmatch(var) and len(var) <= 64 else "named there"
    return f"environment variable {shown} is not set (or is empty or blank)"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: Port = 8080
    max_body_bytes: Int = Field(default=1_048_576, ge=1)
    read_timeout_s: Float = Field(default=30.0, gt=0)
    # A connection that has not sent a whole request head (line and headers) this long after it
    # opened or after its last answer is closed: idle keep-alives, and slow-header attacks.
    idle_timeout_s: Float = Field(default=15.0, gt=0)
    # The externally visible base URL (behind a proxy), for schemes that sign the URL.
    public_base_url: PublicUrl | None = None
    # All request bodies held in memory at once; a body that would pass it is answered 503.
    body_memory_bytes: Int = Field(default=64 * 1024 * 1024, ge=1)
    # Open connections at once; the next is answered 503 and closed (each holds a descriptor
    # and its unfinished request head).
    max_connections: Int = Field(default=512, ge=1, le=65536)

    @model_validator(mode="after")
    def _one_body_fits(self) -> ServerSettings:
        if self.body_memory_bytes < self.max_body_bytes:
            raise ValueError(
                "body_memory_bytes must be at least max_body_bytes (else a body at the cap "
                "could never be taken)"
            )
        return self


class AdminSettings(_Strict):
    host: str = "127.0.0.1"
    port: Port = 8081
    token_env: str = Field(default="RECEIVER_ADMIN_TOKEN", pattern=ENV_NAME)  # a name, not a token
    read_token_env: str | None = Field(default=None, pattern=ENV_NAME)


def _expand_home(path: Path) -> Path:
    # A leading "~" is the home directory (it made a folder named "~" in the working one).
    try:
        return path.expanduser()
    except RuntimeError:  # "~someone" with no such user
        raise ValueError(f"{str(path)[:80]!r} names a home directory that does not exist") from None


class StorageSettings(_Strict):
    path: Annotated[Path, AfterValidator(_expand_home)] = Path("data/receiver.db")
    # How long a write may wait for a lock before ingest answers 503.
    busy_timeout_s: Float = Field(default=2.0, gt=0, le=60)
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    batch_max: Int = Field(default=256, ge=1, le=2000)
    retry_after_s: Int = Field(default=5, ge=1)


class WorkerSettings(_Strict):
    concurrency: Int = Field(default=8, ge=1, le=1024)
    max_attempts: Int = Field(default=10, ge=1)
    lease_s: Float = Field(default=60.0, gt=0)
    poll_interval_s: Float = Field(default=1.0, gt=0)
    shutdown_timeout_s: Float = Field(default=10.0, ge=0)
    backoff_base_s: Float = Field(default=1.0, gt=0)
    backoff_max_s: Float = Field(default=3600.0, gt=0)

    @model_validator(mode="after")
    def _base_within_max(self) -> WorkerSettings:
        if self.backoff_base_s > self.backoff_max_s:
            raise ValueError("backoff_base_s must not be more than backoff_max_s")
        return self


class LogSettings(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


# Headers an http handler's config may not set: the framing of the request (a wrong
# Content-Length would cut the body short), the connection's own, and receiver's.
_RESERVED_HEADERS = frozenset(
    {
        "connection",
        "content-encoding",
        "content-length",
        "content-type",
        "expect",
        "host",
        "idempotency-key",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _has_userinfo(url: str) -> bool:
    try:
        return "@" in urlsplit(url).netloc
    except ValueError:
        return False  # not a URL at all: check_handler says so


class HttpHandler(_Strict):
    kind: Literal["http"]
    url: str
    timeout_s: Float = Field(default=10.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)
    # Header name -> the environment variable holding its value (a downstream's token): the
    # secret stays out of the YAML like a webhook secret. Resolved at load into ``headers``.
    header_envs: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_authorization(self) -> HttpHandler:
        """aiohttp refuses to send both at once: every attempt would fail, every event die."""
        names = {name.lower() for name in (*self.headers, *self.header_envs)}
        if "authorization" in names and _has_userinfo(self.url):
            raise ValueError(
                "the url carries credentials (user:password@) and an Authorization header is"
                " set too: only one can be sent; keep the header (header_envs keeps it secret)"
            )
        return self

    @field_validator("header_envs")
    @classmethod
    def _settable_names(cls, header_envs: dict[str, str]) -> dict[str, str]:
        cls._settable(dict.fromkeys(header_envs, ""))
        return header_envs

    @field_validator("headers")
    @classmethod
    def _settable(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            lowered = name.lower()
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if lowered in _RESERVED_HEADERS or lowered.startswith("receiver-"):
                raise ValueError(f"{name} is set by receiver, not by the config")
            if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
                raise ValueError(f"the value of {name} holds a control character")
        return headers


class PythonHandler(_Strict):
    kind: Literal["python"]
    target: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    timeout_s: Float = Field(default=30.0, gt=0)


class CommandHandler(_Strict):
    kind: Literal["command"]
    argv: list[str] = Field(min_length=1)
    timeout_s: Float = Field(default=30.0, gt=0)
    permanent_exit_codes: list[Int] = Field(default_factory=list)


HandlerSettings = Annotated[
    HttpHandler | PythonHandler | CommandHandler, Field(discriminator="kind")
]


class ProviderSettings(_Strict):
    scheme: str
    secret_envs: list[str] = Field(default_factory=list)
    secret_files: list[Path] = Field(default_factory=list)
    tolerance_s: Int | None = Field(default=None, ge=0)
    event_id: str | None = None
    event_type: str | None = None
    public_url: PublicUrl | None = None
    options: dict[str, Any] | None = None
    handler: HandlerSettings | None = None
    on_conflict: Literal["duplicate", "reject"] = "duplicate"
    payload_retention: Retention | None = None
    dedupe_retention: Retention | None = None
    requeue_dead: Bool = True
    serialize_by: str | None = None
    max_attempts: Int | None = Field(default=None, ge=1)
    concurrency: Int | None = Field(default=None, ge=1)


class Settings(_Strict):
    server: ServerSettings = ServerSettings()
    admin: AdminSettings = AdminSettings()
    storage: StorageSettings = StorageSettings()
    worker: WorkerSettings = WorkerSettings()
    logging: LogSettings = LogSettings()
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)


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


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys: a repeated key is almost always a mistake."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if not isinstance(key, str | int | float | bool) and key is not None:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                "a key must be a plain value, not a list or a mapping",
                key_node.start_mark,
            )
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


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
