"""Helpers every scheme module shares.

Reading and shaping headers, the timestamp window, decoding presented signatures and configured
secrets, and constant-time "any configured key matches any presented signature" matching. Every
function here either returns a value or raises one of the :mod:`receiver.errors` rejections
(``ValueError`` only for configuration problems, at build time); none of them lets a parsing
error of the request escape.
"""

from __future__ import annotations

__all__ = [
    "DAY_S",
    "HOUR_S",
    "Algorithm",
    "Encoding",
    "SecretDecoding",
    "check_window",
    "decode_secret",
    "decode_signature",
    "decode_signatures",
    "encode_signature",
    "ed25519_public_key",
    "hmac_digest",
    "json_reply",
    "matches_any",
    "options_of",
    "parse_json",
    "parse_kv_list",
    "parse_timestamp",
    "require_header",
    "require_secrets",
    "resolve_tolerance",
    "to_bytes",
]

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Sequence
from typing import Literal, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel

from receiver.errors import InvalidSignature, MissingSignature, TimestampOutOfTolerance
from receiver.models import HandshakeReply, InboundRequest
from receiver.signatures.base import BuildContext

HOUR_S = 3600
DAY_S = 86400

Algorithm = Literal["sha1", "sha256", "sha512"]
Encoding = Literal["hex", "base64", "base64url"]
SecretDecoding = Literal["utf8", "base64", "base64_after_prefix", "hex"]

_DIGESTS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}
# Unix times as providers send them: ASCII digits only (``int()`` would also take "٣" or " 1_0").
_DIGITS = re.compile(r"[0-9]{1,16}")

_Model = TypeVar("_Model", bound=BaseModel)


# --- build time ---------------------------------------------------------------------------


def require_secrets(ctx: BuildContext) -> tuple[str, ...]:
    """The configured secrets, or ``ValueError`` when there are none (fail closed)."""
    secrets = tuple(s for s in ctx.secrets if s)
    if not secrets:
        raise ValueError(f"scheme for provider {ctx.provider!r} needs at least one secret")
    return secrets


def resolve_tolerance(ctx: BuildContext, default_s: int | None) -> int | None:
    """The provider's ``tolerance_s`` when set, else the scheme's default; ``0`` is no window
    at all (as the providers' own SDKs read a tolerance of 0), not "signed this very second"."""
    if ctx.tolerance_s is None:
        return default_s
    return ctx.tolerance_s or None


def options_of(ctx: BuildContext, model: type[_Model]) -> _Model:
    """The validated ``options:`` block, or the model's defaults when none was given."""
    if ctx.options is None:
        return model()
    if not isinstance(ctx.options, model):
        raise ValueError(f"options for provider {ctx.provider!r} are not {model.__name__}")
    return ctx.options


def _base64_bytes(text: str, *, altchars: bytes | None = None) -> bytes:
    # Providers and SDKs disagree on padding; add what is missing, reject everything else.
    padded = text + "=" * (-len(text) % 4)
    return base64.b64decode(padded, altchars=altchars, validate=True)


def _decoding_name(decoding: str, prefix: str) -> str:
    """A decoding as an error names it."""
    names = {"utf8": "UTF-8 text", "hex": "hexadecimal", "base64": "base64"}
    return names.get(decoding, f"base64 (after its {prefix} prefix, if any)")


def decode_secret(secret: str, decoding: SecretDecoding, *, prefix: str = "whsec_") -> bytes:
    """Turn a configured secret string into key bytes. ``ValueError`` never quotes the secret."""
    if decoding == "utf8" and ("\n" in secret or "\r" in secret):
        # Two secrets in one file ("current" and "previous"): one key with a line break in
        # it, which no signature matches. Rotation is one file or variable per secret.
        raise ValueError(
            "a configured secret holds a line break: give each secret its own file or variable"
        )
    try:
        if decoding == "utf8":
            key = secret.encode("utf-8")
        elif decoding == "hex":
            key = binascii.unhexlify(secret.strip())
        elif decoding == "base64":
            key = _base64_bytes(secret.strip())
        else:
            key = _base64_bytes(secret.strip().removeprefix(prefix))
    except (ValueError, UnicodeEncodeError):
        raise ValueError(f"a configured secret is not {_decoding_name(decoding, prefix)}") from None
    if not key:
        raise ValueError("a configured secret is empty")
    return key


def ed25519_public_key(raw: bytes) -> Ed25519PublicKey:
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key must be 32 bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


# --- request time -------------------------------------------------------------------------


def to_bytes(text: str) -> bytes:
    """Header text back to bytes, never raising (headers may carry escaped or odd characters)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def require_header(request: InboundRequest, name: str) -> str:
    """A header's stripped value; absent or blank is :class:`MissingSignature`."""
    value = request.header(name)
    if value is None:
        raise MissingSignature(f"the {name} header is missing")
    if not value.strip():
        raise MissingSignature(f"the {name} header is empty")
    return value.strip()


def parse_timestamp(text: str, *, unit: Literal["s", "ms"] = "s") -> float:
    """A unix time in seconds from ASCII digits; anything else is :class:`InvalidSignature`."""
    if not _DIGITS.fullmatch(text):
        raise InvalidSignature("the signature timestamp is not a unix time")
    value = int(text)
    return value / 1000 if unit == "ms" else float(value)


def check_window(timestamp_s: float, *, now_s: float, tolerance_s: int | None) -> None:
    """Reject a signed timestamp more than ``tolerance_s`` away from now, in either direction."""
    if tolerance_s is None:
        return
    age_s = now_s - timestamp_s
    if age_s > tolerance_s:
        raise TimestampOutOfTolerance("the signature timestamp is too old")
    if -age_s > tolerance_s:
        raise TimestampOutOfTolerance("the signature timestamp is in the future")


_MAX_ENTRIES = 32


def parse_kv_list(value: str, *, item_sep: str, kv_sep: str) -> list[tuple[str, str]]:
    """``t=1,v1=ab,v1=cd`` -> ``[("t","1"), ("v1","ab"), ("v1","cd")]``.

    Splits each item on the first separator only (base64 values end in ``=``); items without a
    separator are ignored, as the providers' own parsers do. A provider lists a few entries (a
    timestamp, a signature per secret during a rotation): a header with thousands would cost a
    MAC per entry per key, and is refused.
    """
    items = value.split(item_sep, _MAX_ENTRIES)
    if len(items) > _MAX_ENTRIES:
        raise InvalidSignature(f"the signature header lists more than {_MAX_ENTRIES} entries")
    pairs: list[tuple[str, str]] = []
    for item in items:
        key, sep, val = item.strip().partition(kv_sep)
        if sep and key.strip():
            pairs.append((key.strip(), val.strip()))
    return pairs


def decode_signature(text: str, encoding: Encoding) -> bytes | None:
    """A presented signature as bytes, or ``None`` when it is not valid ``encoding``."""
    try:
        if encoding == "hex":
            return binascii.unhexlify(text)
        if encoding == "base64":
            return _base64_bytes(text)
        return _base64_bytes(text, altchars=b"-_")
    except ValueError:  # binascii.Error, and non-ASCII text
        return None


def decode_signatures(texts: Iterable[str], encoding: Encoding) -> list[bytes]:
    """Decode every presented signature; all undecodable is :class:`InvalidSignature`."""
    decoded = [sig for sig in (decode_signature(t, encoding) for t in texts) if sig]
    if not decoded:
        raise InvalidSignature(f"the signature is not valid {encoding}")
    return decoded


def encode_signature(mac: bytes, encoding: Encoding) -> str:
    if encoding == "hex":
        return mac.hex()
    if encoding == "base64":
        return base64.b64encode(mac).decode("ascii")
    return base64.urlsafe_b64encode(mac).decode("ascii").rstrip("=")


def hmac_digest(key: bytes, content: bytes, algorithm: Algorithm = "sha256") -> bytes:
    return hmac.new(key, content, _DIGESTS[algorithm]).digest()


def matches_any(expected: Iterable[bytes], presented: Sequence[bytes]) -> bool:
    """True when any expected MAC equals any presented one, each compared in constant time."""
    matched = False
    for mac in expected:
        for sig in presented:
            matched |= hmac.compare_digest(mac, sig)
    return matched


def parse_json(body: bytes) -> object:
    """The JSON body, or ``None`` when it is not JSON (never raises)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def json_reply(document: object, *, status: int = 200) -> HandshakeReply:
    body = json.dumps(document, separators=(",", ":")).encode("utf-8")
    return HandshakeReply(status=status, content_type="application/json", body=body)
