"""What every registered scheme promises, and a fuzz test of every verifier.

The fuzz test sends arbitrary header values (mostly for the headers the schemes read, shaped
like their real values) and arbitrary bodies: a verifier may only return or raise a
``RequestRejected`` subclass, and a handshake may only return.
"""

from __future__ import annotations

import ast
import json
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from receiver.errors import RequestRejected
from receiver.keys import parse_source
from receiver.signatures.base import Handshaker, Scheme, Signer, Unsigned
from receiver.signatures.registry import all_schemes

DAY = 86400
# providers.md, "Dedupe retention guidance": at least this long; longer where the provider
# replays by hand for longer (Svix keeps a message 90 days and resends it, Paddle replays a
# notification up to 90 days old).
MIN_DEDUPE_S = {
    "stripe": 30 * DAY,
    "github": 7 * DAY,
    "shopify": 2 * DAY,
    "slack": 3600,
    "standard-webhooks": 90 * DAY,
    "svix": 90 * DAY,
    "clerk": 90 * DAY,
    "resend": 90 * DAY,
    "twilio": DAY,
    "discord": 3600,
    "sendgrid": 3 * DAY,
    "paddle": 90 * DAY,
    "square": 7 * DAY,
    "mailgun": 2 * DAY,
    "zoom": DAY,
    "linear": 2 * DAY,
    "gitlab": 7 * DAY,
    "intercom": 7 * DAY,
    "bitbucket": 7 * DAY,
    "jira": 7 * DAY,
}
EXPECTED = set(MIN_DEDUPE_S) | {"hmac", "none"}
ASYMMETRIC = {"discord", "sendgrid"}
NO_HEADER_SIGNER = {"mailgun"}  # signature inside the body


def _scheme(name: str) -> Scheme:
    return all_schemes()[name]


def test_every_preset_is_registered():
    assert set(all_schemes()) == EXPECTED


def test_scheme_description(scheme_name):
    scheme = _scheme(scheme_name)
    assert scheme.name == scheme_name
    assert scheme.summary
    assert {"headers", "event_id", "tolerance", "dedupe"} <= set(scheme.docs)
    assert all(isinstance(v, str) and v for v in scheme.docs.values())
    assert all(h == h.lower() for h in scheme.secret_headers)
    for expression in (scheme.event_id, scheme.event_type):
        if expression is not None:
            parse_source(expression)
    assert scheme.payload_retention_s > 0
    assert scheme.dedupe_retention_s >= MIN_DEDUPE_S.get(scheme_name, 0)
    if scheme.options_model is not None:
        assert issubclass(scheme.options_model, BaseModel)
        config = scheme.options_model.model_config
        assert config.get("extra") == "forbid" and config.get("frozen") is True


def test_signing_capability(kit, scheme_name):
    verifier = kit.build_scheme(scheme_name)
    scheme = _scheme(scheme_name)
    if scheme_name in ASYMMETRIC or scheme_name in NO_HEADER_SIGNER:
        assert not isinstance(verifier, Signer)
        assert scheme.docs.get("signing")
    else:
        assert isinstance(verifier, Signer)


def test_sign_output_verifies(kit, scheme_name):
    verifier = kit.build_scheme(scheme_name)
    if not isinstance(verifier, Signer):
        return
    body = kit.linear_body(kit.NOW * 1000) if scheme_name == "linear" else kit.BODY
    headers = verifier.sign(
        Unsigned(body=body, now_s=kit.NOW, event_id="evt_contract", url=kit.URL)
    )
    verifier.verify(kit.request(headers, body), now_s=kit.NOW)


def test_none_is_for_local_testing(kit):
    scheme = _scheme("none")
    assert not scheme.needs_secret
    assert "local testing" in scheme.summary
    kit.build("none").verify(kit.request({}, b"\xff anything"), now_s=0)


def test_secret_needing_schemes_refuse_to_build_without_one(kit, scheme_name):
    scheme = _scheme(scheme_name)
    if not scheme.needs_secret:
        return
    options = {"header": "X"} if scheme_name == "hmac" else None
    with pytest.raises(ValueError):  # noqa: PT011  # message wording is scheme-specific
        kit.build(scheme_name, [], options=options, public_url=kit.URL)


HEADER_NAMES = sorted(
    {
        "stripe-signature",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "svix-id",
        "svix-timestamp",
        "svix-signature",
        "x-hub-signature-256",
        "x-hub-signature",
        "x-shopify-hmac-sha256",
        "x-slack-signature",
        "x-slack-request-timestamp",
        "x-signature-ed25519",
        "x-signature-timestamp",
        "x-twilio-signature",
        "x-twilio-webhooks-signature-settings",
        "x-twilio-email-event-webhook-signature",
        "x-twilio-email-event-webhook-timestamp",
        "paddle-signature",
        "x-square-hmacsha256-signature",
        "x-gitlab-token",
        "linear-signature",
        "x-zm-signature",
        "x-zm-request-timestamp",
        "x-other",
    }
)

_shaped = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=string.hexdigits, max_size=130),
    st.text(alphabet=string.ascii_letters + string.digits + "+/=-_", max_size=100),
    st.from_regex(r"\A(t|v1|v0|ts|h1)=[0-9a-f]{0,70}([,;](t|v1|ts|h1)=[0-9a-zA-Z=]{0,70}){0,3}\Z"),
    st.from_regex(r"\A(v1|v1a|v2),[A-Za-z0-9+/=]{0,90}( (v1|v1a),[A-Za-z0-9+/=]{0,90}){0,2}\Z"),
    st.from_regex(r"\A(sha256|sha1|v0)=[0-9a-fA-F]{0,70}\Z"),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.just("1700000000"),
    st.sampled_from(["key=k,algorithm=HMAC_SHA256", "algorithm=", "algorithm=HMAC_SHA1"]),
)
_headers = st.dictionaries(st.sampled_from(HEADER_NAMES), _shaped, max_size=8)
_bodies = st.one_of(
    st.binary(max_size=300),
    st.just(b'{"signature":{"timestamp":"1700000000","token":"t","signature":"00"}}'),
    st.from_regex(rb"\A\{\"webhookTimestamp\": ?-?[0-9]{0,15}\}\Z"),
    st.just(b'{"type":"url_verification","challenge":"c"}'),
    st.just(b'{"event":"endpoint.url_validation","payload":{"plainToken":"p"}}'),
    st.just(b'{"type":1}'),
    st.just(b"[]"),
)
_urls = st.sampled_from(
    [
        "https://hooks.example.test/webhooks/demo",
        "https://h:bad/x?bodySHA256=00",
        "http://[::1/x",
        "https://hooks.example.test/x?bodySHA256=zz&bodySHA256=aa",
    ]
)


def _literals(*packages: str) -> tuple[str, ...]:
    root = Path(__file__).resolve().parents[3]
    return tuple(
        node.value
        for package in packages
        for path in sorted((root / package).rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    )


# Hypothesis also draws text from the string constants of the code under test, so a header value
# may be "Stripe-Signature", which a fixed rejection text names ("the Stripe-Signature header is
# missing"). Only a value found in no literal can have come from the request.
_SOURCE_LITERALS = _literals("receiver", "tests")


def _echoed(value: str, detail: str) -> bool:
    return value in detail and not any(value in literal for literal in _SOURCE_LITERALS)


def test_fixed_texts_naming_a_header_are_not_echoes(kit):
    request = kit.request({"x-other": "Stripe-Signature"}, b"[]")
    with pytest.raises(RequestRejected) as caught:
        kit.build_scheme("stripe").verify(request, now_s=0.0)
    assert "Stripe-Signature" in caught.value.detail
    assert not _echoed("Stripe-Signature", caught.value.detail)
    pasted = "v1=" + "5e" * 16  # built here, so in no literal
    assert _echoed(pasted, f"{caught.value.detail}: {pasted}")


def test_arbitrary_input_only_ever_passes_or_is_rejected(kit, scheme_name):
    verifier = kit.build_scheme(scheme_name)

    # Derandomized: a case found once on CI is found again on the next run.
    @settings(max_examples=200, deadline=None, database=None, derandomize=True)
    @given(headers=_headers, body=_bodies, url=_urls, now=st.integers(0, 2 * 10**9))
    def check(headers: dict[str, str], body: bytes, url: str, now: int) -> None:
        request = kit.request(headers, body, url=url)
        rejected: RequestRejected | None = None
        try:
            verifier.verify(request, now_s=float(now))
        except RequestRejected as exc:
            rejected = exc
        # Nothing made up without the secret passes (a verifier that passed everything did).
        assert rejected is not None or scheme_name == "none"
        if rejected is not None:
            assert rejected.detail
            for value in headers.values():
                if len(value) >= 16:
                    assert not _echoed(value, rejected.detail)
        if isinstance(verifier, Handshaker):
            try:
                document = json.loads(body)
            except (ValueError, RecursionError):
                document = None
            verifier.handshake(request, document)

    check()
