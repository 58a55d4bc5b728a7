"""Scheme lookup by name. Scheme modules register themselves when imported."""

from __future__ import annotations

__all__ = ["all_schemes", "get_scheme", "register"]

from receiver.signatures.base import Scheme

_SCHEMES: dict[str, Scheme] = {}


def register(scheme: Scheme) -> Scheme:
    if scheme.name in _SCHEMES:
        raise ValueError(f"scheme {scheme.name!r} registered twice")
    _SCHEMES[scheme.name] = scheme
    return scheme


def get_scheme(name: str) -> Scheme | None:
    _load_builtin()
    return _SCHEMES.get(name)


def all_schemes() -> dict[str, Scheme]:
    _load_builtin()
    return dict(sorted(_SCHEMES.items()))


def _load_builtin() -> None:
    # Importing the package registers every built-in scheme module.
    import receiver.signatures.builtin  # noqa: F401
