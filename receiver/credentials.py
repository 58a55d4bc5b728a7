"""Which header names carry credentials: never stored with an event, never shown.

A provider's own signature headers are named by its scheme; this catches the rest by name
(``Authorization``, ``X-Api-Key``, ``Private-Token``, ``X-Webhook-Secret``, ``Cookie``, …), in
any case and with any separators (``_``, ``.``, ``--``). Better to drop a harmless header than
to keep a secret.
"""

from __future__ import annotations

__all__ = ["is_credential_header"]

import functools
import re

_CREDENTIAL = re.compile(
    r"auth|token|secret|passw|passcode|passphrase|pwd|signature|hmac|cookie|session"
    r"|credential|bearer|jwt|oidc|(?:api|private|access|client|secret|subscription|functions"
    r"|webhook|signing|shared|master|account|app|encryption)-?key"
    # "sig", "sign" and "key" as a whole word ("X-Hook-Sig", "X-Sign", "Key", "X-Key"), not
    # inside one: Idempotency-Key and X-Event-Key (Bitbucket's event type) name no secret.
    r"|(?:^|-)sign?(?:-|$)|^(?:x-)?key$"
)
# Every run of characters that are not letters or digits reads as one "-": X.Api.Key,
# X-Api--Key and X_Api_Key are X-Api-Key.
_SEPARATORS = re.compile(r"[^a-z0-9]+")


@functools.lru_cache(maxsize=4096)  # names repeat from request to request
def is_credential_header(name: str) -> bool:
    return _CREDENTIAL.search(_SEPARATORS.sub("-", name.lower())) is not None
