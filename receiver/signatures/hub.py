"""``X-Hub-Signature`` senders other than GitHub: Intercom (SHA-1), Bitbucket and Jira (SHA-256).

All sign the raw body with no timestamp; their ID headers are not signed, so a captured body
resent under a new ID is a new event (the providers' scheme; README says so).
"""

from __future__ import annotations

__all__ = ["BITBUCKET", "INTERCOM", "JIRA"]

from receiver.signatures.base import Scheme
from receiver.signatures.common import DAY_S
from receiver.signatures.declarative import HmacSpec, spec_builder
from receiver.signatures.registry import register

INTERCOM = HmacSpec(header="X-Hub-Signature", algorithm="sha1", prefix="sha1=")
BITBUCKET = HmacSpec(header="X-Hub-Signature", prefix="sha256=", event_id_header="X-Request-UUID")
JIRA = HmacSpec(
    header="X-Hub-Signature",
    prefix="sha256=",
    event_id_header="X-Atlassian-Webhook-Identifier",
)

_RETENTION_S = 7 * DAY_S  # retry schedules are not documented: conservative


def _scheme(
    name: str,
    summary: str,
    spec: HmacSpec,
    event_id: str,
    event_type: str,
    docs_id: str,
    delivery_fields: frozenset[str] = frozenset(),
) -> Scheme:
    algorithm = spec.algorithm.upper().replace("SHA", "SHA-")
    return Scheme(
        name=name,
        summary=summary,
        build=spec_builder(spec, default_tolerance_s=None),
        event_id=event_id,
        event_type=event_type,
        default_tolerance_s=None,
        dedupe_retention_s=_RETENTION_S,
        payload_retention_s=7 * DAY_S,
        delivery_fields=delivery_fields,
        secret_headers=frozenset({"x-hub-signature"}),
        docs={
            "headers": f"X-Hub-Signature ({spec.prefix}hex HMAC-{algorithm} of the body)",
            "event_id": docs_id,
            "tolerance": "none (no signed timestamp)",
            "dedupe": "7 days (retry schedule undocumented)",
        },
    )


register(
    _scheme(
        "intercom",
        "Intercom: X-Hub-Signature sha1=<hex> HMAC-SHA1 of the body.",
        INTERCOM,
        "json:id",
        "json:topic",
        "body id (notif_…)",
        # A notification counts its own attempts in its body.
        delivery_fields=frozenset({"delivery_attempts"}),
    )
)
register(
    _scheme(
        "bitbucket",
        "Bitbucket Cloud: X-Hub-Signature sha256=<hex> HMAC-SHA256 of the body.",
        BITBUCKET,
        "header:X-Request-UUID",
        "header:X-Event-Key",
        "X-Request-UUID header",
    )
)
register(
    _scheme(
        "jira",
        "Jira Cloud admin webhooks: X-Hub-Signature sha256=<hex> HMAC-SHA256 of the body.",
        JIRA,
        "header:X-Atlassian-Webhook-Identifier",
        "json:webhookEvent",
        "X-Atlassian-Webhook-Identifier header (unchanged across retries)",
    )
)
