"""Every preset, one table (``case``, see conftest): what passes and what is refused, and how."""

from __future__ import annotations

from dataclasses import replace

import pytest

from receiver.errors import (
    InvalidSignature,
    MissingSignature,
    RequestRejected,
    TimestampOutOfTolerance,
)

GARBAGE = [
    "garbage",
    "sha256=",
    "sha1=",
    "v0=",
    "v1,",
    "v1a,",
    "t=,v1=",
    "ts=;h1=",
    "=,=,;;",
    ",,,",
    "   v1,   ",
    "sha256=zz",
    "sha256=" + "0" * 63,
    "v1,!!!!",
    "v1a,AAAA",
    "t=abc,v1=00",
    "t=1700000000,v1=zz,v1=",
    "ts=1;h1=0;x=y",
    "é" * 10,
    "\udcff\udcfe",
    "\x00",
    "x" * 5000,
]

TIMESTAMP_GARBAGE = ["abc", "-1", "1.5", "1e9", "١٧٠٠٠٠٠٠٠٠", "99999999999999999999", "0x10"]


def test_signed_request_passes(case, kit):
    case.build(0).verify(case.request(0), now_s=kit.NOW)


def test_rotation_either_configured_secret_passes(case, kit):
    for index in (0, 1):
        case.build(0, 1).verify(case.request(index), now_s=kit.NOW)
        case.build(1, 0).verify(case.request(index), now_s=kit.NOW)


def test_wrong_secret_is_invalid(case, kit):
    with pytest.raises(InvalidSignature):
        case.build(1).verify(case.request(0), now_s=kit.NOW)


@pytest.mark.case_needs("signs_body")
def test_tampered_body_is_invalid(case, kit):
    request = case.request(0)
    tampered = request.body.replace(b"1", b"2", 1) if b"1" in request.body else request.body + b" "
    assert tampered != request.body
    with pytest.raises(InvalidSignature):
        case.build(0).verify(replace(request, body=tampered), now_s=kit.NOW)


@pytest.mark.case_needs("signs_body")
def test_invalid_utf8_body_is_rejected_cleanly(case, kit):
    request = case.request(0)
    with pytest.raises(InvalidSignature):
        case.build(0).verify(replace(request, body=b"\xff\xfe" + request.body), now_s=kit.NOW)


@pytest.mark.case_needs("default_tolerance")
def test_stale_and_future_timestamps_are_out_of_tolerance(case, kit):
    tolerance = case.tolerance_s
    verifier = case.build(0)
    for ts in (kit.NOW - tolerance - 1, kit.NOW + tolerance + 1):
        with pytest.raises(TimestampOutOfTolerance):
            verifier.verify(case.request(0, ts=ts), now_s=kit.NOW)
    for ts in (kit.NOW - tolerance + 1, kit.NOW + tolerance - 1):
        verifier.verify(case.request(0, ts=ts), now_s=kit.NOW)


@pytest.mark.case_needs("signed_timestamp")
def test_configured_tolerance_overrides_the_default(case, kit):
    verifier = case.build(0, tolerance_s=10)
    verifier.verify(case.request(0, ts=kit.NOW - 9), now_s=kit.NOW)
    with pytest.raises(TimestampOutOfTolerance):
        verifier.verify(case.request(0, ts=kit.NOW - 11), now_s=kit.NOW)


@pytest.mark.case_needs("signed_timestamp")
def test_a_tolerance_of_zero_is_no_window(case, kit):
    """``tolerance_s: 0`` is "none" (README, and the providers' SDKs read 0 so); it used to
    refuse every delivery not signed in the very second it arrived."""
    verifier = case.build(0, tolerance_s=0)
    for ts in (kit.NOW - 30 * 86_400, kit.NOW - 1, kit.NOW + 3600):
        verifier.verify(case.request(0, ts=ts), now_s=kit.NOW)


@pytest.mark.case_needs("signature_header")
def test_missing_signature_header(case, kit):
    request = case.request(0)
    headers = {k: v for k, v in request.headers.items() if k != case.signature_header.lower()}
    with pytest.raises(MissingSignature):
        case.build(0).verify(replace(request, headers=headers), now_s=kit.NOW)


@pytest.mark.case_needs("signature_header")
def test_empty_signature_header_is_missing(case, kit):
    request = case.request(0)
    headers = {**request.headers, case.signature_header.lower(): "  "}
    with pytest.raises(MissingSignature):
        case.build(0).verify(replace(request, headers=headers), now_s=kit.NOW)


@pytest.mark.parametrize("value", GARBAGE)
@pytest.mark.case_needs("signature_header")
def test_mangled_signature_header_is_invalid(case, kit, value):
    request = case.request(0)
    headers = {**request.headers, case.signature_header.lower(): value}
    with pytest.raises(InvalidSignature):
        case.build(0).verify(replace(request, headers=headers), now_s=kit.NOW)


@pytest.mark.case_needs("timestamp_header")
def test_missing_timestamp_header(case, kit):
    request = case.request(0)
    headers = {k: v for k, v in request.headers.items() if k != case.timestamp_header.lower()}
    with pytest.raises(MissingSignature):
        case.build(0).verify(replace(request, headers=headers), now_s=kit.NOW)


@pytest.mark.parametrize("value", TIMESTAMP_GARBAGE)
@pytest.mark.case_needs("timestamp_header")
def test_mangled_timestamp_header_is_rejected(case, kit, value):
    request = case.request(0)
    headers = {**request.headers, case.timestamp_header.lower(): value}
    with pytest.raises((InvalidSignature, TimestampOutOfTolerance)):
        case.build(0, tolerance_s=300).verify(replace(request, headers=headers), now_s=kit.NOW)


def test_empty_request_is_rejected(case, kit):
    with pytest.raises(RequestRejected):
        case.build(0).verify(kit.request({}, b""), now_s=kit.NOW)
