"""GitLab: ``X-Gitlab-Token`` (the secret itself) and the optional Standard Webhooks signing.

A configured secret starting with ``whsec_`` is a *signing token* (GitLab accepts only
``whsec_`` + base64 of 32 bytes): such deliveries carry ``webhook-id`` (= ``Idempotency-Key``),
``webhook-timestamp`` and ``webhook-signature: v1,<base64>`` and are checked as Standard
Webhooks, five minutes either way. Any other secret is a plain token compared in constant time.
When a delivery carries ``webhook-signature`` and a signing token is configured, the signature
is what counts; ``options.require_signature`` refuses token-only deliveries altogether.
"""

from __future__ import annotations

__all__ = ["GitlabOptions", "GitlabVerifier"]

import hmac

from pydantic import BaseModel, ConfigDict

from receiver.errors import InvalidSignature, MissingSignature
from receiver.models import InboundRequest
from receiver.signatures.base import BuildContext, Scheme, Unsigned
from receiver.signatures.common import (
    DAY_S,
    options_of,
    require_header,
    require_secrets,
    resolve_tolerance,
    to_bytes,
)
from receiver.signatures.registry import register
from receiver.signatures.standard import StandardKeys, StandardSigningVerifier, load_keys

_TOLERANCE_S = 300
_TOKEN_HEADER = "X-Gitlab-Token"  # noqa: S105  # a header name, not a password
_SIGNATURE_HEADER = "webhook-signature"


class GitlabOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # Refuse deliveries without webhook-signature even when a plain token is configured.
    require_signature: bool = False


class GitlabVerifier:
    def __init__(
        self,
        *,
        tokens: tuple[bytes, ...],
        signing: StandardSigningVerifier | None,
        require_signature: bool,
    ) -> None:
        self.tokens = tokens
        self.signing = signing
        self.require_signature = require_signature

    @property
    def tolerance_s(self) -> int | None:
        """The window of signed deliveries (a plain token signs no time)."""
        return self.signing.tolerance_s if self.signing is not None else None

    def verify(self, request: InboundRequest, *, now_s: float) -> None:
        has_signature = bool((request.header(_SIGNATURE_HEADER) or "").strip())
        use_signing = has_signature or self.require_signature or not self.tokens
        if self.signing is not None and use_signing:
            self.signing.verify(request, now_s=now_s)
            return
        if self.require_signature:
            raise MissingSignature(f"the {_SIGNATURE_HEADER} header is missing")
        presented = to_bytes(require_header(request, _TOKEN_HEADER))
        matched = False
        for token in self.tokens:
            matched |= hmac.compare_digest(token, presented)
        if not matched:
            raise InvalidSignature("the token does not match")

    def sign(self, d: Unsigned) -> dict[str, str]:
        headers = {"Idempotency-Key": d.event_id}
        if self.signing is not None:
            headers.update(self.signing.sign(d))
        if self.tokens:
            headers[_TOKEN_HEADER] = self.tokens[0].decode("utf-8", "surrogateescape")
        return headers


def _build(ctx: BuildContext) -> GitlabVerifier:
    options = options_of(ctx, GitlabOptions)
    secrets = require_secrets(ctx)
    signing_secrets = tuple(s.strip() for s in secrets if s.strip().startswith("whsec_"))
    tokens = tuple(s.encode("utf-8") for s in secrets if not s.strip().startswith("whsec_"))
    signing = None
    if signing_secrets:
        keys: StandardKeys = load_keys(signing_secrets)
        signing = StandardSigningVerifier(
            keys, header_prefix="webhook-", tolerance_s=resolve_tolerance(ctx, _TOLERANCE_S)
        )
    elif options.require_signature:
        raise ValueError("options.require_signature needs a whsec_ signing token")
    return GitlabVerifier(
        tokens=tokens, signing=signing, require_signature=options.require_signature
    )


register(
    Scheme(
        name="gitlab",
        summary="GitLab: X-Gitlab-Token compare, or Standard Webhooks signing (whsec_ token).",
        build=_build,
        # Signed deliveries: webhook-id, which the signature covers (= Idempotency-Key, which it
        # does not: a captured request must not become a new event under a new header). Token
        # mode: Idempotency-Key (GitLab 17.4+), else the body.
        event_id="header:webhook-id || header:Idempotency-Key || body_sha256",
        event_type="header:X-Gitlab-Event",
        default_tolerance_s=_TOLERANCE_S,
        dedupe_retention_s=7 * DAY_S,  # manual resend from the hook's recent deliveries
        payload_retention_s=7 * DAY_S,
        options_model=GitlabOptions,
        secret_headers=frozenset({"x-gitlab-token", "webhook-signature"}),
        docs={
            "headers": "X-Gitlab-Token, or webhook-id/webhook-timestamp/webhook-signature",
            "event_id": (
                "webhook-id when signed; else Idempotency-Key (same across retries; GitLab"
                " 17.4+); else SHA-256 of the body"
            ),
            "tolerance": "300 s both ways when signed; none for the plain token",
            "dedupe": "7 days (manual resends)",
            "secret": "the secret token, and/or the whsec_ signing token",
        },
    )
)
