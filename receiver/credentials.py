"""Which header names carry credentials: never stored with an event, never shown.

A provider's own signature headers are named by its scheme; this catches the rest by name
(``Authorization``, ``X-Api-Key``, ``Private-Token``, ``X-Webhook-Secret``, ``Cookie``, …), in
any case and with ``_`` or ``-``. Better to drop a harmless header than to keep a secret.
"""

from __future__ import annotations

__all__ = ["is_credential_header"]

import functools
import re

_CREDENTIAL = re.compile(
    r"auth|token|secret|passw|passcode|pwd|signature|hmac|cookie|session|credential|bearer"
    r"|jwt|oidc|(?:api|private|access|client|secret|subscription|functions|webhook|signing"
    r"|shared|master|account|app)-?key"
    # "sig" and "key" as a whole word ("X-Hook-Sig", "Key"), not inside one: Idempotency-Key
    # and X-Event-Key (Bitbucket's event type) name no secret.
    r"|(?:^|-)sig(?:-|$)|^key$"
)


@functools.lru_cache(maxsize=4096)  # names repeat from request to request
def is_credential_header(name: str) -> bool:
    return _CREDENTIAL.search(name.lower().replace("_", "-")) is not None
