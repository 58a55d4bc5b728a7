"""Twilio: ``X-Twilio-Signature``, base64 HMAC of the called URL plus the sorted form params.

For a form POST the signed string is the full URL followed by ``name + value`` for every
parameter name in sorted order and every distinct value of it in sorted order. For a JSON body
Twilio puts ``bodySHA256=<hex>`` in the query string: that hash must match the body and the URL
alone is signed. The Auth Token signs with HMAC-SHA1; a SharedKey names its algorithm in
``X-Twilio-Webhooks-Signature-Settings`` (HMAC-SHA256). Like Twilio's validator, the URL is
tried with and without its default port. The URL is the provider's ``public_url`` (with the
request's query string appended when it has none), else the request URL.
"""

from __future__ import annotations

__all__ = ["TwilioVerifier", "signed_string"]

import hashlib
import hmac
from urllib.parse import urlsplit, urlunsplit

from receiver.errors import InvalidSignature
from receiver.keys import body_sha256_param, form_signing_text, signed_form_params, signed_url
from receiver.models import InboundRequest
from receiver.signatures.base import BuildContext, Scheme, Unsigned
from receiver.signatures.common import (
    DAY_S,
    Algorithm,
    decode_secret,
    decode_signature,
    encode_signature,
    hmac_digest,
    matches_any,
    require_header,
    require_secrets,
    to_bytes,
)
from receiver.signatures.registry import register

_SIGNATURE_HEADER = "X-Twilio-Signature"
_SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"
_ALGORITHMS: dict[str, Algorithm] = {"HMAC_SHA1": "sha1", "HMAC_SHA256": "sha256"}


def signed_string(url: str, params: dict[str, list[str]]) -> str:
    return url + form_signing_text(params)


def _url_variants(url: str) -> list[str]:
    """The URL as given, without and with its default port (Twilio signs either)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return [url]
    host = parts.netloc.rsplit("@", 1)[-1]
    userinfo = parts.netloc[: len(parts.netloc) - len(host)]
    bare = host if port is None else host.rsplit(":", 1)[0]
    default = 443 if parts.scheme == "https" else 80
    with_port = f"{userinfo}{bare}:{port if port is not None else default}"
    variants = [url, urlunsplit(parts._replace(netloc=userinfo + bare))]
    variants.append(urlunsplit(parts._replace(netloc=with_port)))
    return list(dict.fromkeys(variants))


def _algorithm(settings: str | None) -> Algorithm:
    name = "HMAC_SHA1"
    for part in (settings or "").split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip() == "algorithm" and value.strip():
            name = value.strip().upper()
    if name not in _ALGORITHMS:
        raise InvalidSignature("the signature algorithm is not supported")
    return _ALGORITHMS[name]


class TwilioVerifier:
    def __init__(self, keys: tuple[bytes, ...], *, public_url: str | None) -> None:
        self.keys = keys
        self.public_url = public_url
        self.signs_request_url = public_url is None  # the Host header's, then

    def verify(self, request: InboundRequest, *, now_s: float) -> None:
        presented = decode_signature(require_header(request, _SIGNATURE_HEADER), "base64")
        if not presented:
            raise InvalidSignature("the signature is not valid base64")
        algorithm = _algorithm(request.header(_SETTINGS_HEADER))
        url = signed_url(self.public_url, request.url)
        # The parameters' text once, not once per URL variant and key: it is the costly part.
        params = to_bytes(form_signing_text(self._params(request.body, url)))
        macs = [
            hmac_digest(key, to_bytes(variant) + params, algorithm)
            for key in self.keys
            for variant in _url_variants(url)
        ]
        if not matches_any(macs, [presented]):
            raise InvalidSignature("the signature does not match")

    @staticmethod
    def _params(body: bytes, url: str) -> dict[str, list[str]]:
        body_hash = body_sha256_param(url.partition("?")[2])
        if body_hash is not None:
            # JSON mode: the body is bound through its hash in the (signed) URL.
            expected = hashlib.sha256(body).hexdigest().encode("ascii")
            if not hmac.compare_digest(expected, to_bytes(body_hash.lower())):
                raise InvalidSignature("the body does not match bodySHA256")
            return {}
        try:
            return signed_form_params(body)
        except ValueError:
            raise InvalidSignature("the form body has too many fields") from None

    def sign(self, d: Unsigned) -> dict[str, str]:
        target = signed_url(self.public_url, d.url)
        content = to_bytes(signed_string(target, self._params(d.body, target)))
        mac = hmac_digest(self.keys[0], content, "sha1")
        return {_SIGNATURE_HEADER: encode_signature(mac, "base64")}


def _build(ctx: BuildContext) -> TwilioVerifier:
    keys = tuple(decode_secret(s, "utf8") for s in require_secrets(ctx))
    return TwilioVerifier(keys, public_url=ctx.public_url)


register(
    Scheme(
        name="twilio",
        summary="Twilio: X-Twilio-Signature base64 HMAC-SHA1/256 of URL + sorted form params.",
        build=_build,
        # No event id is documented for Messaging/Voice callbacks; a retry repeats the body.
        # The key is what the signature covers past the endpoint's URL (the query string and the
        # sorted parameters), not the raw bytes: reordered or re-encoded parameters carry the
        # same signature and are the same event; the same ones on another query are not.
        event_id="form_sha256",
        event_type=None,
        default_tolerance_s=None,
        dedupe_retention_s=DAY_S,  # at most a few connection retries within 15 s
        payload_retention_s=7 * DAY_S,
        secret_headers=frozenset({"x-twilio-signature"}),
        content_type="application/x-www-form-urlencoded",
        docs={
            "headers": "X-Twilio-Signature (base64), X-Twilio-Webhooks-Signature-Settings",
            "event_id": "SHA-256 of the query string and sorted form parameters (no event id)",
            "tolerance": "none (no signed timestamp)",
            "dedupe": "1 day (connection retries within 15 s)",
            "url": "public_url, exactly as configured in Twilio (query string from the request)",
        },
    )
)
