"""The settings as the YAML file writes them: validated, frozen, secrets by reference only.

Each section is a pydantic model that refuses unknown keys and values of the wrong kind;
:mod:`receiver.config` reads the file into them and names every problem by its key path.
"""

from __future__ import annotations

__all__ = [
    "ENV_NAME",
    "SECRET_PREFIXES",
    "AdminSettings",
    "CommandHandler",
    "HandlerSettings",
    "HttpHandler",
    "LogSettings",
    "ProviderSettings",
    "PythonHandler",
    "ServerSettings",
    "Settings",
    "StorageSettings",
    "WorkerSettings",
    "unset_variable",
]

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    field_validator,
    model_validator,
)

from receiver.durations import parse_duration

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


def _base_url(value: str) -> str:
    # ``/webhooks/NAME`` is appended: after a query or a fragment it would never match.
    if "?" in _absolute_http_url(value) or "#" in value:
        raise ValueError(
            "must be a base URL without a query or a fragment, like https://hooks.example.com"
            " (each provider's path, /webhooks/NAME, is appended to it)"
        )
    return value


Retention = Annotated[Duration, AfterValidator(_at_most_ten_years)]
PublicUrl = Annotated[str, AfterValidator(_absolute_http_url)]
PublicBaseUrl = Annotated[str, AfterValidator(_base_url)]
# Numbers and switches as YAML writes them: ``true`` is not the number 1, nor ``"8"`` a count.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]  # an integer is a float too; .inf and .nan are refused
Bool = Annotated[bool, Strict()]
Port = Annotated[Int, Field(ge=0, le=65535)]
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"  # an environment variable's name
# How secrets pasted where a variable's name belongs begin (refused, never echoed back).
SECRET_PREFIXES = ("whsec_", "whpk_", "whsk_", "sk_live_", "sk_test_", "rk_live_", "rk_test_")
# What a variable's name looks like when an error may repeat it: upper-case words joined by
# "_". Lower-case ones are names too, but so are many secrets (``shpss_8f2a…``, ``lin_wh_…``).
_SHOWN_NAME = re.compile(r"[A-Z][A-Z0-9]{0,19}(?:_[A-Z0-9]{1,20})+")


def unset_variable(var: str) -> str:
    """An unset variable, named only when its name looks like one (upper-case words joined by
    ``_``): a short secret pasted in its place is a valid name too, and must not be printed."""
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
    public_base_url: PublicBaseUrl | None = None
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
    # The full-text index over bodies (admin ``q``); off, ``q`` reads the bodies instead.
    search_index: Bool = True


_BACKOFF_BASE_S = 10.0


class WorkerSettings(_Strict):
    concurrency: Int = Field(default=8, ge=1, le=1024)
    max_attempts: Int = Field(default=10, ge=1)
    lease_s: Float = Field(default=60.0, gt=0)
    poll_interval_s: Float = Field(default=1.0, gt=0)
    shutdown_timeout_s: Float = Field(default=10.0, ge=0)
    # The first retry waits 5 to 10 s; with 10 attempts an event is dead 43 to 85 minutes
    # after its first failure (README "Handlers"), not within a downstream's deploy.
    backoff_base_s: Float = Field(default=_BACKOFF_BASE_S, gt=0)
    backoff_max_s: Float = Field(default=3600.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _default_base_within_max(cls, data: Any) -> Any:
        """A cap under the default base (``backoff_max_s: 5``, valid while the base was 1 s)
        makes the base the cap, rather than an error naming a key nobody wrote."""
        if isinstance(data, dict) and "backoff_base_s" not in data:
            cap = data.get("backoff_max_s")
            if (
                isinstance(cap, int | float)
                and not isinstance(cap, bool)
                and 0 < cap < _BACKOFF_BASE_S
            ):
                return {**data, "backoff_base_s": float(cap)}
        return data

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
        names: set[str] = set()
        for name in (*self.headers, *self.header_envs):
            if name.lower() in names:  # only one of them would be sent, without a word
                raise ValueError(
                    f"header {name} is set twice (header names ignore case; headers and"
                    " header_envs together): keep one"
                )
            names.add(name.lower())
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
