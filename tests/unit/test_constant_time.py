"""Secrets and signatures are compared with ``hmac.compare_digest`` (asserted on the code path:
timings on a shared machine prove nothing)."""

from __future__ import annotations

import hmac
from typing import Any

import pytest

from receiver.server import admin_auth
from receiver.signatures import common
from receiver.signatures.registry import get_scheme
from tests.support.provider_cases import CASES, Kit

_REAL_COMPARE = hmac.compare_digest


class _Spy:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, a: Any, b: Any) -> bool:
        self.calls += 1
        return _REAL_COMPARE(a, b)


def test_every_signature_comparison_goes_through_compare_digest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each symmetric preset, fed a wrong signature, reaches compare_digest and nothing else
    decides: with the comparison forced to 'equal', the same request passes."""
    checked = 0
    for case in CASES:
        scheme = get_scheme(case.scheme)
        assert scheme is not None
        if case.scheme in {"discord", "sendgrid"} or "v1a" in case.id:
            continue  # asymmetric: verified by cryptography, nothing to compare
        spy = _Spy()
        monkeypatch.setattr(common.hmac, "compare_digest", spy)
        verifier = case.build(1)  # configured with the other secret: the signature is wrong
        request = case.request(0)
        with pytest.raises(Exception):  # noqa: B017, PT011 - any rejection; the spy is the point
            verifier.verify(request, now_s=Kit.NOW)
        assert spy.calls > 0, f"{case.id}: no constant-time comparison on the path"
        monkeypatch.setattr(common.hmac, "compare_digest", lambda a, b: True)
        verifier.verify(request, now_s=Kit.NOW)
        checked += 1
    assert checked >= 15


def test_admin_tokens_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = admin_auth.AdminTokens(full="full-token", read="read-token")
    spy = _Spy()
    monkeypatch.setattr(admin_auth.hmac, "compare_digest", spy)
    assert tokens.access_for("Bearer nope") is None
    assert spy.calls == 2  # against both tokens, every time: no early exit on the first
    assert tokens.access_for("Bearer full-token") is admin_auth.Access.FULL
    assert tokens.access_for("Bearer read-token") is admin_auth.Access.READ
    # compare_digest alone decides: forced to "equal", any bearer value is let in.
    monkeypatch.setattr(admin_auth.hmac, "compare_digest", lambda a, b: True)
    assert tokens.access_for("Bearer anything") is admin_auth.Access.FULL
