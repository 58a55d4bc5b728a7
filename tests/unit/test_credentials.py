"""Header names that carry credentials are recognised in any case and spelling; the ones that
name events (and that handlers and the admin API need) are kept."""

from __future__ import annotations

import pytest

from receiver.credentials import is_credential_header


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "Proxy-Authorization",
        "X-Api-Key",
        "x_api_key",
        "Private-Token",
        "X-Webhook-Secret",
        "Cookie",
        "X-Amz-Security-Token",
        # Found stored by an audit: gateways and proxies forward these.
        "Ocp-Apim-Subscription-Key",
        "X-Functions-Key",
        "X-Webhook-Key",
        "X-Signing-Key",
        "X-Shared-Key",
        "Key",
        "Cf-Access-Jwt-Assertion",
        "X-Goog-Iap-Jwt-Assertion",
        "X-Amzn-Oidc-Data",
        "X-Hook-Sig",
        "X-Passcode",
        "X-Pwd",
        "Bearer",
        # Found stored by a later audit: other separators, and other words for the same.
        "X.Api.Key",
        "X-Api--Key",
        "X-Sign",
        "X-Passphrase",
        "X-Encryption-Key",
        "X-Key",
    ],
)
def test_credential_headers_are_recognised(name: str) -> None:
    assert is_credential_header(name)


@pytest.mark.parametrize(
    "name",
    [
        "Idempotency-Key",  # GitLab's event ID
        "X-Event-Key",  # Bitbucket's event type
        "X-GitHub-Delivery",
        "X-Shopify-Topic",
        "Content-Type",
        "User-Agent",
        "X-Request-UUID",
        "X-Signal-Strength",
        "X-Design",
        "X-Signal",
        "X-Monkey",
        "X-Keyboard-Layout",
    ],
)
def test_event_headers_are_kept(name: str) -> None:
    assert not is_credential_header(name)
