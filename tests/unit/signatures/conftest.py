"""Fixtures for the signature table tests; the table itself is tests/support/provider_cases.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from receiver.signatures.registry import all_schemes
from tests.support.provider_cases import CASES, Kit


@pytest.fixture(scope="session")
def kit() -> type[Kit]:
    return Kit


# What a test marked ``@pytest.mark.case_needs(...)`` requires of a provider; providers without
# it are not parametrized at all (rather than skipped), so every collected test runs.
CASE_NEEDS: dict[str, Callable[[Any], bool]] = {
    "signs_body": lambda c: bool(c.signs_body),
    "default_tolerance": lambda c: c.tolerance_s is not None,
    "signed_timestamp": lambda c: bool(c.has_timestamp) or c.timestamp_header is not None,
    "signature_header": lambda c: c.signature_header is not None,
    "timestamp_header": lambda c: c.timestamp_header is not None,
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("case_needs")
        needs = [CASE_NEEDS[name] for name in (marker.args if marker else ())]
        cases = [c for c in CASES if all(need(c) for need in needs)]
        metafunc.parametrize("case", cases, ids=[c.id for c in cases])
    if "scheme_name" in metafunc.fixturenames:
        names = list(all_schemes())
        metafunc.parametrize("scheme_name", names, ids=names)
