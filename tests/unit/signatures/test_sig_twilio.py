"""Twilio, with ``twilio.request_validator.RequestValidator`` as the oracle."""

from __future__ import annotations

import hashlib
import json

import pytest
from twilio.request_validator import RequestValidator

from receiver.errors import InvalidSignature
from receiver.signatures.base import Signer, Unsigned

TOKEN = "test_twilio_token"


def _form(kit):
    return {"CallSid": "CA1", "From": "+15550001111", "Body": "hi there", "Empty": ""}


def test_form_post_signed_by_sdk_passes(kit):
    from urllib.parse import urlencode

    params = _form(kit)
    body = urlencode(params).encode()
    signature = RequestValidator(TOKEN).compute_signature(kit.URL, params)
    verifier = kit.build("twilio", [TOKEN], public_url=kit.URL)
    verifier.verify(
        kit.request({"X-Twilio-Signature": signature}, body, url="http://10.0.0.1/x"), now_s=kit.NOW
    )


def test_repeated_params_are_sorted_and_deduplicated(kit):
    body = b"b=2&a=z&a=y&a=z"
    content = (kit.URL + "ayazb2").encode()
    import base64
    import hmac

    signature = base64.b64encode(hmac.new(TOKEN.encode(), content, "sha1").digest()).decode()
    kit.build("twilio", [TOKEN], public_url=kit.URL).verify(
        kit.request({"X-Twilio-Signature": signature}, body), now_s=kit.NOW
    )


def test_json_body_with_body_sha256_in_url(kit):
    body = json.dumps({"event": "x"}).encode()
    url = f"{kit.URL}?bodySHA256={hashlib.sha256(body).hexdigest()}"
    validator = RequestValidator(TOKEN)
    signature = validator.compute_signature(url, {})
    assert validator.validate(url, body.decode(), signature)
    request = kit.request({"X-Twilio-Signature": signature}, body, url=url)
    kit.build("twilio", [TOKEN]).verify(request, now_s=kit.NOW)
    # public_url without a query string takes the request's query string
    kit.build("twilio", [TOKEN], public_url=kit.URL).verify(request, now_s=kit.NOW)
    tampered = kit.request({"X-Twilio-Signature": signature}, body + b" ", url=url)
    with pytest.raises(InvalidSignature, match="bodySHA256"):
        kit.build("twilio", [TOKEN]).verify(tampered, now_s=kit.NOW)


def test_sha256_shared_key_algorithm(kit):
    from urllib.parse import urlencode

    params = _form(kit)
    signature = RequestValidator(TOKEN).compute_signature(kit.URL, params, "HMAC_SHA256")
    headers = {
        "X-Twilio-Signature": signature,
        "X-Twilio-Webhooks-Signature-Settings": "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256",
    }
    body = urlencode(params).encode()
    verifier = kit.build("twilio", [TOKEN], public_url=kit.URL)
    verifier.verify(kit.request(headers, body), now_s=kit.NOW)
    headers["X-Twilio-Webhooks-Signature-Settings"] = "key=k,algorithm=HMAC_MD5"
    with pytest.raises(InvalidSignature, match="algorithm"):
        verifier.verify(kit.request(headers, body), now_s=kit.NOW)


@pytest.mark.parametrize(
    ("signed_url", "configured_url"),
    [
        ("https://hooks.example.test:443/t", "https://hooks.example.test/t"),
        ("https://hooks.example.test/t", "https://hooks.example.test:443/t"),
    ],
)
def test_default_port_variants(kit, signed_url, configured_url):
    signature = RequestValidator(TOKEN).compute_signature(signed_url, {})
    kit.build("twilio", [TOKEN], public_url=configured_url).verify(
        kit.request({"X-Twilio-Signature": signature}, b""), now_s=kit.NOW
    )


def test_our_signature_passes_the_sdk(kit):
    verifier = kit.build("twilio", [TOKEN], public_url=kit.URL)
    assert isinstance(verifier, Signer)
    headers = verifier.sign(Unsigned(body=kit.FORM_BODY, now_s=kit.NOW, event_id="e", url=kit.URL))
    from urllib.parse import parse_qs

    params = {k: v[0] for k, v in parse_qs(kit.FORM_BODY.decode(), keep_blank_values=True).items()}
    assert RequestValidator(TOKEN).validate(kit.URL, params, headers["X-Twilio-Signature"])


def test_a_signed_request_with_a_query_passes_behind_a_public_url(kit):
    """``receiver sign --url 'http://127.0.0.1:PORT/webhooks/twilio?a=1'`` with a public URL
    configured: the signer dropped the query the verifier (and Twilio) put after it."""
    public_url = "https://hooks.example.com/webhooks/twilio"
    verifier = kit.build("twilio", [TOKEN], public_url=public_url)
    local = "http://127.0.0.1:8080/webhooks/twilio?a=1&b=two"
    headers = verifier.sign(Unsigned(body=kit.FORM_BODY, now_s=kit.NOW, event_id="e", url=local))
    verifier.verify(kit.request(headers, kit.FORM_BODY, url=local), now_s=kit.NOW)
    from urllib.parse import parse_qs

    params = {k: v[0] for k, v in parse_qs(kit.FORM_BODY.decode(), keep_blank_values=True).items()}
    signed = f"{public_url}?a=1&b=two"
    assert RequestValidator(TOKEN).validate(signed, params, headers["X-Twilio-Signature"])


def test_bad_port_in_url_does_not_crash(kit):
    request = kit.request({"X-Twilio-Signature": "AAAA"}, b"", url="https://h:notaport/x")
    with pytest.raises(InvalidSignature):
        kit.build("twilio", [TOKEN]).verify(request, now_s=kit.NOW)


def test_a_form_of_more_fields_than_any_callback_is_refused_before_it_is_read(kit):
    """Parsing and sorting the fields comes before the signature can be checked: 10 000 empty
    fields (a 59 KB body) cost 15 ms of the event loop per unsigned request."""
    from urllib.parse import urlencode

    from receiver.keys import MAX_FORM_FIELDS

    verifier = kit.build("twilio", [TOKEN], public_url=kit.URL)
    for count in (MAX_FORM_FIELDS, MAX_FORM_FIELDS + 1, 10_000):
        params = {f"Field{n}": "v" for n in range(count)}
        signature = RequestValidator(TOKEN).compute_signature(kit.URL, params)
        request = kit.request({"X-Twilio-Signature": signature}, urlencode(params).encode())
        if count <= MAX_FORM_FIELDS:
            verifier.verify(request, now_s=kit.NOW)  # signed by the SDK: accepted
        else:
            with pytest.raises(InvalidSignature, match="too many fields"):
                verifier.verify(request, now_s=kit.NOW)
    assert MAX_FORM_FIELDS <= 1_000
