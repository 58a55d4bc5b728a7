"""The shared helpers: window, parsing, decoding, matching."""

from __future__ import annotations

import pytest

from receiver.errors import InvalidSignature, MissingSignature, TimestampOutOfTolerance
from receiver.signatures.common import (
    check_window,
    decode_secret,
    decode_signature,
    matches_any,
    parse_kv_list,
    parse_timestamp,
    require_header,
)


@pytest.mark.parametrize(
    ("ts", "ok"), [(1000, True), (700, True), (1300, True), (699, False), (1301, False)]
)
def test_window_is_inclusive_and_symmetric(ts, ok):
    if ok:
        check_window(ts, now_s=1000, tolerance_s=300)
    else:
        with pytest.raises(TimestampOutOfTolerance):
            check_window(ts, now_s=1000, tolerance_s=300)


def test_no_tolerance_means_no_window():
    check_window(0, now_s=10**10, tolerance_s=None)


@pytest.mark.parametrize("text", ["", " 1", "1 ", "-1", "+1", "1.0", "1_000", "٣", "1" * 17, "0x1"])
def test_timestamps_are_plain_ascii_digits(text):
    with pytest.raises(InvalidSignature):
        parse_timestamp(text)


def test_millisecond_timestamps():
    assert parse_timestamp("1700000000123", unit="ms") == pytest.approx(1700000000.123)


def test_kv_list_keeps_base64_padding_and_skips_junk():
    assert parse_kv_list(" t=1 , v1=ab== ,junk,,=x, v1=cd", item_sep=",", kv_sep="=") == [
        ("t", "1"),
        ("v1", "ab=="),
        ("v1", "cd"),
    ]


@pytest.mark.parametrize(
    ("text", "encoding", "expected"),
    [
        ("00ff", "hex", b"\x00\xff"),
        ("00FF", "hex", b"\x00\xff"),
        ("0", "hex", None),
        ("zz", "hex", None),
        ("00 ff", "hex", None),
        ("é", "hex", None),
        ("AAE=", "base64", b"\x00\x01"),
        ("AAE", "base64", b"\x00\x01"),
        ("A", "base64", None),
        ("AA!E", "base64", None),
        ("_-8", "base64url", b"\xff\xef"),
        ("é", "base64", None),
    ],
)
def test_decode_signature(text, encoding, expected):
    assert decode_signature(text, encoding) == expected


def test_matches_any_is_any_by_any():
    assert matches_any([b"a", b"b"], [b"x", b"b"])
    assert not matches_any([b"a"], [b"x", b"ab"])
    assert not matches_any([], [b"a"])


def test_decode_secret_errors_never_quote_the_secret():
    for secret, decoding in (("s3cr3t-not-hex", "hex"), ("s3cr3t!!", "base64"), ("", "utf8")):
        with pytest.raises(ValueError, match="configured secret") as info:
            decode_secret(secret, decoding)
        assert "s3cr3t" not in str(info.value)


def test_blank_header_is_missing_and_says_it_is_empty(kit):
    with pytest.raises(MissingSignature, match="the X-Sig header is empty"):
        require_header(kit.request({"X-Sig": " \t"}), "X-Sig")
    with pytest.raises(MissingSignature, match="the X-Sig header is missing"):
        require_header(kit.request({}), "X-Sig")
    assert require_header(kit.request({"x-sig": " v "}), "X-SIG") == "v"
