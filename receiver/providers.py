"""Turn each ``providers:`` entry into a ready :class:`Provider`: secrets read, verifier built,
value sources parsed, retention decided. Problems are collected, never raised one by one."""

from __future__ import annotations

__all__ = ["Provider", "resolve_providers"]

import hashlib
import re
import stat
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ValidationError

from receiver.credentials import is_credential_header
from receiver.durations import format_duration
from receiver.errors import ConfigProblem
from receiver.handlers import check_handler
from receiver.keys import SourceSyntaxError, ValueSource, headers_read, parse_source
from receiver.settings import ENV_NAME, SECRET_PREFIXES, HttpHandler, unset_variable
from receiver.signatures.base import (
    BuildContext,
    DeclaresSecretHeaders,
    Handshaker,
    Scheme,
    Verifier,
)
from receiver.signatures.declarative import HmacOptions
from receiver.signatures.registry import all_schemes, get_scheme

if TYPE_CHECKING:
    from receiver.settings import ProviderSettings, Settings

_ENV_NAME = re.compile(ENV_NAME)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# The key each handler kind's check is about, for the problem's path.
_HANDLER_FIELD = {"http": "url", "python": "target", "command": "argv.0"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Provider:
    name: str
    settings: ProviderSettings
    scheme: Scheme
    verifier: Verifier
    event_id: ValueSource
    event_type: ValueSource | None
    serialize_by: ValueSource | None
    payload_retention_s: float
    dedupe_retention_s: float
    redacted_headers: frozenset[str]
    # The verifier again when it answers handshakes (decided once, not per request: an
    # isinstance check against a runtime Protocol is slow on the hot path).
    handshaker: Handshaker | None = None
    # The URL the provider calls (behind a proxy): what URL-signing schemes sign and key on.
    public_url: str | None = None

    @property
    def has_handler(self) -> bool:
        return self.settings.handler is not None


_SECRET_FILE_MAX_BYTES = 64 * 1024


def _read_secret_file(path: Path) -> str:
    """A secret file's text, stripped: a regular file (not a FIFO or a device, which could
    block or never end) of at most 64 KiB."""
    if not stat.S_ISREG(path.stat().st_mode):  # before opening: opening a FIFO blocks
        raise ValueError("not a regular file")
    with path.open("rb") as file:
        data = file.read(_SECRET_FILE_MAX_BYTES + 1)
    if len(data) > _SECRET_FILE_MAX_BYTES:
        raise ValueError(f"larger than {_SECRET_FILE_MAX_BYTES // 1024} KiB: not a secret")
    try:
        # Without a byte-order mark (an editor's), which would otherwise become part of a key
        # used as text, failing every delivery while `sign` agreed with it.
        return data.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None


def _variable_name_problem(var: str) -> str | None:
    """Why ``var`` cannot be the name of the variable holding a secret (in words that never
    repeat it); None when it can."""
    if var.startswith(SECRET_PREFIXES) or not _ENV_NAME.match(var):
        return (
            "is not an environment variable name (name the variable that holds the secret,"
            " never the secret itself)"
        )
    return None


def _shown_path(path: Path) -> str:
    """A secret file's path as an error may repeat it: only one whose directory exists (a
    secret pasted in its place, ``q2Zr/8kPx+…`` or ``whsec_…``, names none), and never one
    that starts like a secret."""
    text = str(path)
    is_in_a_directory = len(path.parts) > 1 and path.parent != Path(path.anchor)
    if is_in_a_directory and path.parent.is_dir() and not text.startswith(SECRET_PREFIXES):
        return text
    return "the file named there"


def _with_header_secrets(
    name: str, ps: ProviderSettings, env: Mapping[str, str], problems: list[ConfigProblem]
) -> ProviderSettings:
    """An http handler's ``header_envs`` read into its ``headers`` (an unset variable is a
    problem naming it, as for webhook secrets)."""
    handler = ps.handler
    if not isinstance(handler, HttpHandler) or not handler.header_envs:
        return ps
    headers = dict(handler.headers)
    for header, var in handler.header_envs.items():
        problem = _variable_name_problem(var)
        if problem is not None:
            problems.append(
                ConfigProblem(f"providers.{name}.handler.header_envs.{header}", problem)
            )
            continue
        value = env.get(var, "").strip()
        if not value or any(ord(c) < 32 or ord(c) == 127 for c in value):
            problems.append(
                ConfigProblem(
                    f"providers.{name}.handler.header_envs.{header}",
                    f"{unset_variable(var)}, or not one line of text",
                )
            )
            continue
        headers[header] = value
    return ps.model_copy(update={"handler": handler.model_copy(update={"headers": headers})})


def _read_secrets(
    name: str, ps: ProviderSettings, env: Mapping[str, str], problems: list[ConfigProblem]
) -> list[str]:
    secrets: list[str] = []
    for i, var in enumerate(ps.secret_envs):
        problem = _variable_name_problem(var)
        if problem is not None:
            problems.append(ConfigProblem(f"providers.{name}.secret_envs.{i}", problem))
            continue
        # Stripped as secret files are: a stray newline would silently break every signature,
        # and a blank value would key the HMAC with whitespace.
        value = (env.get(var) or "").strip()
        if not value:
            # The second of a list is most often a rotation's previous secret, listed ahead.
            hint = " (a rotation's other secret: list it only while rotating)" if i else ""
            problems.append(
                ConfigProblem(f"providers.{name}.secret_envs.{i}", unset_variable(var) + hint)
            )
        else:
            secrets.append(value)
    for i, path in enumerate(ps.secret_files):
        try:
            value = _read_secret_file(path)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            # A relative path is read from where the command runs, not from the config's folder.
            where = (
                "" if path.is_absolute() else " (a relative path, read from the working directory)"
            )
            problems.append(
                ConfigProblem(
                    f"providers.{name}.secret_files.{i}",
                    f"cannot read {_shown_path(path)}{where}: {reason}",
                )
            )
            continue
        if not value:
            problems.append(
                ConfigProblem(f"providers.{name}.secret_files.{i}", f"{_shown_path(path)} is empty")
            )
        else:
            secrets.append(value)
    return secrets


def _source(expr: str | None, path: str, problems: list[ConfigProblem]) -> ValueSource | None:
    if expr is None:
        return None
    try:
        return parse_source(expr)
    except SourceSyntaxError as exc:
        problems.append(ConfigProblem(path, str(exc)))
        return None


def _options(
    name: str, scheme: Scheme, ps: ProviderSettings, problems: list[ConfigProblem]
) -> tuple[BaseModel | None, bool]:
    path = f"providers.{name}.options"
    if scheme.options_model is None:
        if ps.options:
            problems.append(ConfigProblem(path, f"scheme {scheme.name} takes no options"))
            return None, False
        return None, True
    try:
        return scheme.options_model.model_validate(ps.options or {}), True
    except ValidationError as exc:
        for e in exc.errors():
            loc = ".".join(str(p) for p in e["loc"])
            msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
            msg = msg.removeprefix("Value error, ")
            problems.append(ConfigProblem(f"{path}.{loc}" if loc else path, msg))
        return None, False


def _public_url(name: str, ps: ProviderSettings, settings: Settings) -> str | None:
    if ps.public_url:
        return ps.public_url
    if settings.server.public_base_url:
        return settings.server.public_base_url.rstrip("/") + f"/webhooks/{name}"
    return None


def _resolve_one(
    name: str,
    ps: ProviderSettings,
    settings: Settings,
    env: Mapping[str, str],
    problems: list[ConfigProblem],
    warnings: list[str],
    secret_owners: dict[bytes, str],
) -> Provider | None:
    before = len(problems)
    prefix = f"providers.{name}"
    if not _NAME.match(name):
        problems.append(
            ConfigProblem(prefix, "provider names use letters, digits, '-', '_' and '.' only")
        )
    secrets = _read_secrets(name, ps, env, problems)  # unset variables count with any scheme
    warnings.extend(_shared_secrets(name, secrets, secret_owners))
    scheme = get_scheme(ps.scheme)
    if scheme is None:
        known = ", ".join(all_schemes())
        problems.append(
            ConfigProblem(f"{prefix}.scheme", f"unknown scheme {ps.scheme!r}; known: {known}")
        )
        return None
    if scheme.needs_secret and not ps.secret_envs and not ps.secret_files:
        problems.append(
            ConfigProblem(
                f"{prefix}.secret_envs",
                f"scheme {scheme.name} needs a secret: name an environment variable or a file",
            )
        )
    if scheme.name == "none":
        warnings.append(
            f"provider {name} uses scheme 'none': deliveries are NOT verified "
            "(for local testing only)"
        )
    options, options_ok = _options(name, scheme, ps, problems)
    event_id_expr = ps.event_id or scheme.event_id
    if event_id_expr is None:
        problems.append(
            ConfigProblem(f"{prefix}.event_id", f"scheme {scheme.name} has no default: set one")
        )
    event_id = _source(event_id_expr, f"{prefix}.event_id", problems)
    event_type = _source(ps.event_type or scheme.event_type, f"{prefix}.event_type", problems)
    serialize_by = _source(ps.serialize_by, f"{prefix}.serialize_by", problems)
    payload_s, dedupe_s = retention_windows(ps, scheme)
    if payload_s > dedupe_s:
        whose = "" if ps.dedupe_retention else f", the {scheme.name} preset's"
        problems.append(
            ConfigProblem(
                f"{prefix}.payload_retention",
                f"must not be longer than dedupe_retention ({format_duration(dedupe_s)}{whose}:"
                " a payload outliving its key could be stored twice)",
            )
        )
    warnings.extend(_risky_settings(name, ps, scheme))
    if scheme.is_batch and ps.on_conflict == "reject":
        problems.append(
            ConfigProblem(
                f"{prefix}.on_conflict",
                "reject cannot refuse one event of a batch: the batch's other events are "
                "stored by then, and its sender retries the whole batch for nothing; "
                "use duplicate",
            )
        )
    if ps.handler is not None:
        field = f"{prefix}.handler.{_HANDLER_FIELD[ps.handler.kind]}"
        problems.extend(ConfigProblem(field, message) for message in check_handler(ps.handler))
        ps = _with_header_secrets(name, ps, env, problems)
    if len(problems) > before or not options_ok or event_id is None:
        return None
    context = BuildContext(
        provider=name,
        secrets=tuple(secrets),
        tolerance_s=ps.tolerance_s,
        options=options,
        public_url=_public_url(name, ps, settings),
    )
    try:
        verifier = scheme.build(context)
    except ValueError as exc:
        problems.append(ConfigProblem(prefix, str(exc)))
        return None
    if isinstance(options, HmacOptions) and event_id_expr is not None:
        warnings.extend(
            f"provider {name}: its event ID reads header {header}, which the signature does not "
            "cover: a captured delivery resent with another one is a new event (sign it with "
            f"{{header:{header}}} in options.signed_content)"
            for header in _unsigned_headers(event_id_expr, options.signed_headers())
        )
    if getattr(verifier, "signs_request_url", False):
        warnings.append(
            f"provider {name}: scheme {scheme.name} signs the URL it called, and without"
            " public_url (or server.public_base_url) that is read from the request, whose Host"
            " header the sender chooses: a delivery signed for another of your URLs with the"
            " same secret passes here; set public_url to the URL the provider calls"
        )
    if ps.tolerance_s == 0 and _signs_time(scheme, context):
        warnings.append(
            f"provider {name}: tolerance_s 0 turns the signed timestamp's check off: an old"
            " delivery replayed is told apart only while its key is kept (dedupe_retention)"
        )
    elif ps.tolerance_s and getattr(verifier, "tolerance_s", None) is None:
        warnings.append(
            f"provider {name}: tolerance_s has no effect, scheme {scheme.name} signs no "
            "timestamp here (an old delivery replayed cannot be told by its age)"
        )
    return Provider(
        name=name,
        settings=ps,
        scheme=scheme,
        verifier=verifier,
        event_id=event_id,
        event_type=event_type,
        serialize_by=serialize_by,
        payload_retention_s=payload_s,
        dedupe_retention_s=dedupe_s,
        # The scheme's own signature headers, whatever their names; any header named like a
        # credential is dropped as well (receiver.credentials).
        redacted_headers=scheme.secret_headers
        | (verifier.secret_headers if isinstance(verifier, DeclaresSecretHeaders) else frozenset()),
        handshaker=verifier if isinstance(verifier, Handshaker) else None,
        public_url=_public_url(name, ps, settings),
    )


# Schemes whose dedupe window is a general default, not a provider's known redelivery path.
_GENERIC_SCHEMES = frozenset({"hmac", "none"})


def _shared_secrets(name: str, secrets: list[str], owners: dict[bytes, str]) -> list[str]:
    """A secret another provider uses as well: a delivery signed for either passes at both
    URLs (most schemes do not sign the URL), stored under whichever name it was sent to."""
    shared = []
    for secret in secrets:
        digest = hashlib.sha256(secret.strip().encode("utf-8", "surrogateescape")).digest()
        owner = owners.setdefault(digest, name)
        if owner != name and owner not in shared:
            shared.append(owner)
    return [
        f"providers {owner} and {name} share a secret: a delivery signed for either passes at"
        " both URLs, stored under the name it was sent to; give each endpoint its own secret"
        for owner in shared
    ]


def _risky_settings(name: str, ps: ProviderSettings, scheme: Scheme) -> list[str]:
    """Valid settings that are most likely a mistake: said at check-config and every start."""
    warnings = []
    ours = ps.dedupe_retention
    if ours and scheme.name not in _GENERIC_SCHEMES and ours < scheme.dedupe_retention_s:
        warnings.append(
            f"provider {name}: dedupe_retention {format_duration(ours)} is shorter than the"
            f" {scheme.name} preset's {format_duration(scheme.dedupe_retention_s)}, which covers"
            " its redeliveries: one that comes later is a new event, and its handler runs again"
        )
    if isinstance(ps.handler, HttpHandler):
        warnings.extend(
            f"provider {name}: handler.headers.{header} is written in the config file, like a"
            " credential: name the environment variable that holds it in handler.header_envs"
            for header in ps.handler.headers
            if is_credential_header(header.lower())
        )
    return warnings


def _signs_time(scheme: Scheme, context: BuildContext) -> bool:
    """Whether the verifier as configured checks a signed time when left to its default
    window (``hmac`` without a timestamp source, GitLab with a plain token: not)."""
    default = scheme.build(replace(context, tolerance_s=None))
    return getattr(default, "tolerance_s", None) is not None


def _unsigned_headers(expression: str, signed: frozenset[str]) -> list[str]:
    """The headers an event-ID expression reads that are not in ``signed``."""
    return sorted((h for h in headers_read(expression) if h.lower() not in signed), key=str.lower)


def retention_windows(ps: ProviderSettings, scheme: Scheme) -> tuple[float, float]:
    """``(payload, dedupe)`` retention in seconds: configured, else the scheme's."""
    dedupe_s = ps.dedupe_retention or scheme.dedupe_retention_s
    # A payload never outlives its key: the default payload window is capped by the dedupe one.
    payload_s = ps.payload_retention or min(scheme.payload_retention_s, dedupe_s)
    return payload_s, dedupe_s


def resolve_providers(
    settings: Settings, env: Mapping[str, str], *, only: Collection[str] | None = None
) -> tuple[dict[str, Provider], list[ConfigProblem], list[str]]:
    """Resolve every provider (or those named in ``only``: the others' secrets are not read);
    returns (providers, problems, warnings).

    Paths (``secret_files``) are relative to the working directory, like ``storage.path``.
    """
    problems: list[ConfigProblem] = []
    warnings: list[str] = []
    providers: dict[str, Provider] = {}
    secret_owners: dict[bytes, str] = {}  # each secret's digest: the first provider using it
    for name, ps in settings.providers.items():
        if only is not None and name not in only:
            continue
        provider = _resolve_one(name, ps, settings, env, problems, warnings, secret_owners)
        if provider is not None:
            providers[name] = provider
    return providers, problems, warnings
