"""The generic, declarative HMAC scheme (``scheme: hmac``) and the engine the HMAC presets share.

One :class:`HmacSpec` describes where the signature is (a header, plain or a ``key=value`` list),
how it is encoded, what bytes are signed (a template over ``{body}``, ``{timestamp}``, ``{url}``,
``{id}`` and ``{header:Name}``) and where the signed timestamp comes from. Stripe, Slack, Paddle,
Shopify, GitHub, Standard Webhooks v1, Linear, Zoom, Intercom and Square all fit; the presets in
the sibling modules are specs plus defaults, and ``scheme: hmac`` builds a spec from ``options:``.
"""

from __future__ import annotations

__all__ = ["HmacOptions", "HmacSpec", "HmacVerifier", "parse_template", "spec_builder"]

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from receiver.errors import InvalidSignature, MissingSignature, RequestRejected
from receiver.models import InboundRequest
from receiver.signatures.base import BuildContext, Scheme, Unsigned
from receiver.signatures.common import (
    DAY_S,
    Algorithm,
    Encoding,
    SecretDecoding,
    check_window,
    decode_secret,
    decode_signatures,
    encode_signature,
    hmac_digest,
    matches_any,
    options_of,
    parse_json,
    parse_kv_list,
    parse_timestamp,
    require_header,
    require_secrets,
    resolve_tolerance,
    to_bytes,
)
from receiver.signatures.registry import register

Format = Literal["plain", "kv_list", "versioned_list"]
TimestampSource = Literal["none", "header", "kv", "json"]
PartKind = Literal["text", "body", "timestamp", "url", "id", "header"]
Part = tuple[PartKind, str]

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_SIMPLE_PARTS: frozenset[str] = frozenset({"body", "timestamp", "url", "id"})
_DEFAULT_SEPARATORS: Mapping[Format, tuple[str, str]] = {
    "plain": (",", "="),
    "kv_list": (",", "="),
    "versioned_list": (" ", ","),
}


def parse_template(template: str) -> tuple[Part, ...]:
    """Split a signed-content template into parts; ``ValueError`` names what is wrong."""
    parts: list[Part] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(template):
        _append_text(parts, template[pos : match.start()], template)
        name = match.group(1)
        if name in _SIMPLE_PARTS:
            parts.append((name, ""))  # type: ignore[arg-type]  # narrowed by the set above
        elif name.startswith("header:") and name.removeprefix("header:").strip():
            parts.append(("header", name.removeprefix("header:").strip()))
        else:
            raise ValueError(
                f"signed_content placeholder {{{name}}} is not one of {{body}}, {{timestamp}}, "
                "{url}, {id}, {header:Name}"
            )
        pos = match.end()
    _append_text(parts, template[pos:], template)
    if ("body", "") not in parts:
        raise ValueError("signed_content must include {body}")
    return tuple(parts)


def _append_text(parts: list[Part], text: str, template: str) -> None:
    if "{" in text or "}" in text:
        raise ValueError(f"signed_content {template!r} has an unbalanced brace")
    if text:
        parts.append(("text", text))


@dataclass(frozen=True, slots=True, kw_only=True)
class HmacSpec:
    """Everything about one HMAC construction except the keys."""

    header: str  # canonical casing, as the provider sends it (``sign`` output uses it)
    algorithm: Algorithm = "sha256"
    encoding: Encoding = "hex"
    format: Format = "plain"
    prefix: str = ""  # plain format: "sha256=", "v0=", …
    item_sep: str = ","  # kv_list / versioned_list
    kv_sep: str = "="
    signature_key: str = "v1"  # "v1" (Stripe, Standard Webhooks), "h1" (Paddle)
    timestamp_key: str = "t"  # kv timestamp: "t" (Stripe), "ts" (Paddle)
    signed_content: str = "{body}"
    timestamp_source: TimestampSource = "none"
    timestamp_header: str = ""
    timestamp_json_path: str = ""
    timestamp_unit: Literal["s", "ms"] = "s"
    id_header: str = "webhook-id"  # what {id} reads
    event_id_header: str | None = None  # the header ``sign`` puts the event id in, if any


class HmacVerifier:
    """Verifies (and signs) one :class:`HmacSpec` with a set of keys; any key may match."""

    def __init__(
        self,
        spec: HmacSpec,
        *,
        keys: tuple[bytes, ...],
        tolerance_s: int | None,
        url: str | None = None,
    ) -> None:
        if not keys:
            raise ValueError("at least one key is required")
        self.spec = spec
        self.keys = keys
        self.tolerance_s = tolerance_s
        self.url = url
        self.secret_headers = frozenset({spec.header.lower()})
        self._parts = parse_template(spec.signed_content)
        # The URL signed is the request's own, Host header and all (no public_url).
        self.signs_request_url = url is None and any(kind == "url" for kind, _ in self._parts)
        self._signed_headers = tuple(
            spec.id_header if kind == "id" else arg
            for kind, arg in self._parts
            if kind in ("id", "header")
        )
        self._json_path = tuple(spec.timestamp_json_path.split("."))

    # --- verification -------------------------------------------------------------------

    def verify(self, request: InboundRequest, *, now_s: float) -> None:
        self.matching_key(request, now_s=now_s)

    def matching_key(self, request: InboundRequest, *, now_s: float | None) -> bytes:
        """The key whose MAC matches; ``now_s=None`` skips the timestamp window."""
        spec = self.spec
        signatures, ts_text = self._read_signature_header(require_header(request, spec.header))
        if spec.timestamp_source == "header":
            ts_text = require_header(request, spec.timestamp_header)
        for name in self._signed_headers:
            if request.header(name) is None:
                raise MissingSignature(f"the {name} header is missing")
        presented = decode_signatures(signatures, spec.encoding)
        if ts_text is not None:
            ts_s = parse_timestamp(ts_text, unit=spec.timestamp_unit)
            if now_s is not None:
                check_window(ts_s, now_s=now_s, tolerance_s=self.tolerance_s)
        content = self._render(
            body=request.body,
            timestamp=ts_text,
            url=self.url or request.url,
            header=request.header,
        )
        key = self._find(content, presented)
        if key is None:
            raise InvalidSignature("the signature does not match")
        if spec.timestamp_source == "json" and now_s is not None:
            # The timestamp lives in the body: parse it only once the body is authenticated.
            ts_s = parse_timestamp(self._json_timestamp(request.body), unit=spec.timestamp_unit)
            check_window(ts_s, now_s=now_s, tolerance_s=self.tolerance_s)
        return key

    def find_key(self, request: InboundRequest) -> bytes | None:
        """The key that signed this request, ignoring the clock; ``None`` when none did."""
        try:
            return self.matching_key(request, now_s=None)
        except RequestRejected:
            return None

    def _find(self, content: bytes, presented: list[bytes]) -> bytes | None:
        found: bytes | None = None
        for key in self.keys:
            if matches_any([hmac_digest(key, content, self.spec.algorithm)], presented):
                found = found or key
        return found

    def _read_signature_header(self, value: str) -> tuple[list[str], str | None]:
        spec = self.spec
        if spec.format == "plain":
            if not value.startswith(spec.prefix):
                raise InvalidSignature(f"the {spec.header} header lacks its {spec.prefix} prefix")
            return [value.removeprefix(spec.prefix)], None
        pairs = parse_kv_list(value, item_sep=spec.item_sep, kv_sep=spec.kv_sep)
        signatures = [v for k, v in pairs if k == spec.signature_key]
        if not signatures:
            raise InvalidSignature(f"the {spec.header} header has no {spec.signature_key} entry")
        if spec.timestamp_source != "kv":
            return signatures, None
        timestamps = [v for k, v in pairs if k == spec.timestamp_key]
        if not timestamps:
            raise InvalidSignature(f"the {spec.header} header has no {spec.timestamp_key} entry")
        return signatures, timestamps[0]

    def _json_timestamp(self, body: bytes) -> str:
        node = parse_json(body)
        for part in self._json_path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, int) and not isinstance(node, bool):
            return str(node)
        if isinstance(node, str):
            return node
        raise InvalidSignature("the body has no signed timestamp")

    def _render(
        self,
        *,
        body: bytes,
        timestamp: str | None,
        url: str,
        header: Callable[[str], str | None],
    ) -> bytes:
        out: list[bytes] = []
        for kind, arg in self._parts:
            if kind == "text":
                out.append(to_bytes(arg))
            elif kind == "body":
                out.append(body)
            elif kind == "timestamp":
                out.append(to_bytes(timestamp or ""))
            elif kind == "url":
                out.append(to_bytes(url))
            else:
                name = self.spec.id_header if kind == "id" else arg
                value = header(name)
                if value is None:
                    raise MissingSignature(f"the {name} header is missing")
                out.append(to_bytes(value))
        return b"".join(out)

    # --- signing ------------------------------------------------------------------------

    def sign(self, d: Unsigned) -> dict[str, str]:
        spec = self.spec
        ts = str(int(d.now_s * 1000) if spec.timestamp_unit == "ms" else int(d.now_s))
        headers: dict[str, str] = {}
        if spec.timestamp_source == "header":
            headers[spec.timestamp_header] = ts
        if ("id", "") in self._parts:
            headers[spec.id_header] = d.event_id
        if spec.event_id_header:
            headers[spec.event_id_header] = d.event_id
        lowered = {k.lower(): v for k, v in {**d.carried, **headers}.items()}

        def header(name: str) -> str | None:
            if name.lower() not in lowered:
                raise ValueError(
                    f"cannot sign: the signed content needs the {name} header (give it with"
                    " --header)"
                )
            return lowered[name.lower()]

        content = self._render(body=d.body, timestamp=ts, url=self.url or d.url, header=header)
        mac = hmac_digest(self.keys[0], content, spec.algorithm)
        signature = encode_signature(mac, spec.encoding)
        if spec.format == "plain":
            headers[spec.header] = spec.prefix + signature
        else:
            items = [f"{spec.signature_key}{spec.kv_sep}{signature}"]
            if spec.timestamp_source == "kv":
                items.insert(0, f"{spec.timestamp_key}{spec.kv_sep}{ts}")
            headers[spec.header] = spec.item_sep.join(items)
        return headers


class HmacOptions(BaseModel):
    """``options:`` of ``scheme: hmac``. Separators default by ``format``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    header: str = Field(min_length=1)
    algorithm: Algorithm = "sha256"
    encoding: Encoding = "hex"
    format: Format = "plain"
    prefix: str = ""
    item_sep: str | None = Field(default=None, min_length=1)
    kv_sep: str | None = Field(default=None, min_length=1)
    signature_key: str = Field(default="v1", min_length=1)
    timestamp_key: str = Field(default="t", min_length=1)
    # S105: option names and a key prefix, not passwords.
    secret_decoding: SecretDecoding = "utf8"  # noqa: S105
    secret_prefix: str = "whsec_"  # noqa: S105
    signed_content: str = "{body}"
    timestamp_source: TimestampSource = "none"
    timestamp_header: str | None = Field(default=None, min_length=1)
    timestamp_json_path: str | None = Field(default=None, min_length=1)
    timestamp_unit: Literal["s", "ms"] = "s"
    id_header: str = Field(default="webhook-id", min_length=1)

    @model_validator(mode="after")
    def _check_consistency(self) -> Self:
        if self.timestamp_source == "header" and not self.timestamp_header:
            raise ValueError("timestamp_source 'header' needs timestamp_header")
        if self.timestamp_source == "json" and not self.timestamp_json_path:
            raise ValueError("timestamp_source 'json' needs timestamp_json_path")
        if self.timestamp_source == "kv" and self.format == "plain":
            raise ValueError("timestamp_source 'kv' needs format kv_list or versioned_list")
        if self.prefix and self.format != "plain":
            raise ValueError("prefix applies only to format 'plain'")
        parts = parse_template(self.signed_content)
        is_signed = ("timestamp", "") in parts
        if is_signed and self.timestamp_source in ("none", "json"):
            raise ValueError("{timestamp} in signed_content needs a header or kv timestamp")
        if not is_signed and self.timestamp_source in ("header", "kv"):
            # Checked against the window but not signed: anyone could put a fresh one on an old
            # signature, and the window would protect nothing.
            raise ValueError(
                f"timestamp_source {self.timestamp_source!r} needs {{timestamp}} in signed_content"
            )
        return self

    def signed_headers(self) -> frozenset[str]:
        """The headers the signature covers (lower-case): ``{header:Name}`` and, for ``{id}``,
        ``id_header``."""
        parts = parse_template(self.signed_content)
        named = {value.lower() for kind, value in parts if kind == "header"}
        return frozenset(named | ({self.id_header.lower()} if ("id", "") in parts else set()))

    def to_spec(self) -> HmacSpec:
        item_sep, kv_sep = _DEFAULT_SEPARATORS[self.format]
        return HmacSpec(
            header=self.header,
            algorithm=self.algorithm,
            encoding=self.encoding,
            format=self.format,
            prefix=self.prefix,
            item_sep=self.item_sep or item_sep,
            kv_sep=self.kv_sep or kv_sep,
            signature_key=self.signature_key,
            timestamp_key=self.timestamp_key,
            signed_content=self.signed_content,
            timestamp_source=self.timestamp_source,
            timestamp_header=self.timestamp_header or "",
            timestamp_json_path=self.timestamp_json_path or "",
            timestamp_unit=self.timestamp_unit,
            id_header=self.id_header,
        )


def spec_builder(
    spec: HmacSpec,
    *,
    default_tolerance_s: int | None,
    verifier: type[HmacVerifier] = HmacVerifier,
) -> Callable[[BuildContext], HmacVerifier]:
    """A ``Scheme.build`` for a preset: UTF-8 secrets, the provider's URL, the spec's window."""

    def build(ctx: BuildContext) -> HmacVerifier:
        keys = tuple(decode_secret(s, "utf8") for s in require_secrets(ctx))
        has_timestamp = spec.timestamp_source != "none"
        return verifier(
            spec,
            keys=keys,
            tolerance_s=resolve_tolerance(ctx, default_tolerance_s) if has_timestamp else None,
            url=ctx.public_url,
        )

    return build


_DEFAULT_TOLERANCE_S = 300


def _build(ctx: BuildContext) -> HmacVerifier:
    if ctx.options is None:
        raise ValueError("scheme hmac needs an options: block (at least options.header)")
    options = options_of(ctx, HmacOptions)
    keys = tuple(
        decode_secret(s, options.secret_decoding, prefix=options.secret_prefix)
        for s in require_secrets(ctx)
    )
    has_timestamp = options.timestamp_source != "none"
    return HmacVerifier(
        options.to_spec(),
        keys=keys,
        tolerance_s=resolve_tolerance(ctx, _DEFAULT_TOLERANCE_S) if has_timestamp else None,
        url=ctx.public_url,
    )


register(
    Scheme(
        name="hmac",
        summary="Generic declarative HMAC: header, algorithm, encoding, signed-content template.",
        build=_build,
        event_id=None,
        event_type=None,
        default_tolerance_s=_DEFAULT_TOLERANCE_S,
        dedupe_retention_s=7 * DAY_S,
        payload_retention_s=7 * DAY_S,
        options_model=HmacOptions,
        # The configured header is per provider; the verifier also exposes ``secret_headers``.
        secret_headers=frozenset(),
        docs={
            "headers": "options.header (+ options.timestamp_header)",
            "event_id": "required: set event_id",
            "tolerance": "300 s both ways when a timestamp source is set; tolerance_s overrides",
            "dedupe": "7 days",
            "signing": "HMAC with the first configured secret, as described by options",
        },
    )
)
