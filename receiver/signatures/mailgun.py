"""Mailgun: the signature travels in the body, ``signature.{timestamp,token,signature}``.

Signed content is ``{timestamp}{token}``, hex HMAC-SHA256 keyed with the webhook signing key;
900 s either way, as in Mailgun's SDK. JSON bodies and legacy url-encoded forms (top-level
``timestamp``/``token``/``signature`` fields) are read; multipart bodies are not.

The signature does not cover the body: one captured signature would carry any body for its
900 s. As Mailgun advises, tokens are remembered (with their timestamp: what was signed): a
token seen before is accepted again only with the same body (a redelivery of the same request),
never with another.
"""

from __future__ import annotations

__all__ = ["MailgunVerifier", "UsedTokens", "read_signature"]

import hashlib
from collections import OrderedDict
from urllib.parse import parse_qs

from receiver.errors import InvalidSignature, MissingSignature
from receiver.keys import MAX_FORM_FIELDS
from receiver.models import InboundRequest
from receiver.signatures.base import BuildContext, Scheme
from receiver.signatures.common import (
    DAY_S,
    check_window,
    decode_secret,
    decode_signature,
    hmac_digest,
    matches_any,
    parse_json,
    parse_timestamp,
    require_secrets,
    resolve_tolerance,
    to_bytes,
)
from receiver.signatures.registry import register

_TOLERANCE_S = 900


def _field(container: dict[str, object], name: str) -> str | None:
    value = container.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) and value else None


def read_signature(body: bytes) -> tuple[str, str, str]:
    """``(timestamp, token, signature)`` from a JSON or url-encoded body."""
    document = parse_json(body)
    container: dict[str, object] = {}
    if isinstance(document, dict):
        signature = document.get("signature")
        container = signature if isinstance(signature, dict) else {}
    elif document is None:
        try:
            form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=MAX_FORM_FIELDS)
        except ValueError:
            form = {}
        container = {k: v[0] for k, v in form.items() if v}
    fields = [_field(container, n) for n in ("timestamp", "token", "signature")]
    if fields[0] is None or fields[1] is None or fields[2] is None:
        raise MissingSignature("the body has no signature timestamp, token and signature")
    return fields[0], fields[1], fields[2]


class UsedTokens:
    """Tokens of verified deliveries with the body digest each came with, for as long as their
    timestamp could still pass the window (in this process; bounded, oldest forgotten first)."""

    def __init__(self, *, keep_s: float | None, max_tokens: int = 100_000) -> None:
        self._keep_s = keep_s
        self._max_tokens = max_tokens
        self._seen: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def admits(self, token: str, digest: bytes, *, now_s: float) -> bool:
        """True for a new token (now remembered) or a known one with the same body."""
        while self._seen:
            seen_at, _ = next(iter(self._seen.values()))
            is_stale = self._keep_s is not None and seen_at < now_s - 2 * self._keep_s
            if not is_stale and len(self._seen) < self._max_tokens:
                break
            self._seen.popitem(last=False)
        known = self._seen.get(token)
        if known is not None:
            return known[1] == digest
        self._seen[token] = (now_s, digest)
        return True


class MailgunVerifier:
    def __init__(self, keys: tuple[bytes, ...], *, tolerance_s: int | None) -> None:
        self.keys = keys
        self.tolerance_s = tolerance_s
        self.used_tokens = UsedTokens(keep_s=tolerance_s)

    def verify(self, request: InboundRequest, *, now_s: float) -> None:
        timestamp, token, signature_hex = read_signature(request.body)
        signature = decode_signature(signature_hex, "hex")
        if not signature:
            raise InvalidSignature("the signature is not valid hex")
        check_window(parse_timestamp(timestamp), now_s=now_s, tolerance_s=self.tolerance_s)
        content = to_bytes(timestamp + token)
        if not matches_any([hmac_digest(k, content) for k in self.keys], [signature]):
            raise InvalidSignature("the signature does not match")
        digest = hashlib.sha256(request.body).digest()
        # Remembered by what was signed, not by the token alone: the timestamp's last digit
        # moved to the token's front signs the same (with no window, a timestamp that old
        # passes) and would read as a new token.
        if not self.used_tokens.admits(timestamp + token, digest, now_s=now_s):
            raise InvalidSignature("this signature's token came before with another body: a replay")


def _build(ctx: BuildContext) -> MailgunVerifier:
    keys = tuple(decode_secret(s, "utf8") for s in require_secrets(ctx))
    return MailgunVerifier(keys, tolerance_s=resolve_tolerance(ctx, _TOLERANCE_S))


register(
    Scheme(
        name="mailgun",
        summary="Mailgun: body signature {timestamp, token, signature}, HMAC-SHA256 hex.",
        build=_build,
        # event-data.id is "unique within a day" (Mailgun's words): the event's own timestamp
        # makes it unique for the whole window. Legacy form webhooks carry no ID: keyed on
        # their fields without the signature's, which a retry signs again.
        event_id="{json:event-data.id}:{json:event-data.timestamp?} || event_sha256",
        event_type="json:event-data.event || form:event",
        default_tolerance_s=_TOLERANCE_S,
        dedupe_retention_s=2 * DAY_S,  # retried for 8 h
        payload_retention_s=7 * DAY_S,
        # Each attempt is signed anew: a retry's body differs from the first in these only.
        delivery_fields=frozenset({"signature", "timestamp", "token"}),
        docs={
            "headers": "none: signature.timestamp/token/signature in the body",
            "event_id": "body event-data.id and event-data.timestamp (the ID is unique only "
            "within a day); legacy forms: SHA-256 of the fields but the signature's",
            "tolerance": "900 s both ways (Mailgun SDK default)",
            "dedupe": "2 days (retries for 8 h)",
            "signing": "HMAC-SHA256 hex of timestamp+token with the signing key, written into "
            "the body's signature object; the receiver does not rewrite bodies, so no sign",
        },
    )
)
