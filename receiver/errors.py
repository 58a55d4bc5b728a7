"""Every exception receiver raises on purpose.

Hierarchy::

    ReceiverError
    ├── ConfigError                    the YAML or the environment is wrong (all problems at once)
    ├── RequestRejected                a delivery the receiver refuses (4xx at the HTTP edge)
    │   ├── UnknownProvider            404 unknown_provider
    │   ├── MethodNotAllowed           405 method_not_allowed
    │   ├── PayloadTooLarge            413 payload_too_large
    │   ├── MissingSignature           401 missing_signature
    │   ├── InvalidSignature           401 invalid_signature
    │   ├── TimestampOutOfTolerance    401 timestamp_out_of_tolerance
    │   ├── MissingEventId             400 missing_event_id
    │   ├── InvalidBody                400 invalid_body
    │   ├── BodyTimeout                408 request_timeout
    │   ├── ClientDisconnected         (400) client_disconnected: nobody reads the answer
    │   └── KeyConflict                409 key_conflict
    ├── Unavailable                    not now: 503 with Retry-After
    │   ├── StorageUnavailable         storage_unavailable: the store cannot commit now
    │   └── ServerBusy                 server_busy: too many request bodies held at once
    └── PermanentError                 raised by a user's python handler: do not retry this event

The HTTP layer maps these to statuses with one table; the CLI turns them into exit codes.
Expected outcomes (a duplicate delivery) are values, not exceptions.
"""

from __future__ import annotations

__all__ = [
    "BodyTimeout",
    "ClientDisconnected",
    "ConfigError",
    "ConfigProblem",
    "InvalidBody",
    "InvalidSignature",
    "KeyConflict",
    "MethodNotAllowed",
    "MissingEventId",
    "MissingSignature",
    "PayloadTooLarge",
    "PermanentError",
    "ReceiverError",
    "RequestRejected",
    "ServerBusy",
    "StorageUnavailable",
    "TimestampOutOfTolerance",
    "Unavailable",
    "UnknownProvider",
]

from dataclasses import dataclass


class ReceiverError(Exception):
    """Base of every error receiver raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem in the configuration, located by its key path (``providers.stripe.scheme``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class StartupError(ReceiverError):
    """The receiver refuses to start (for a reason that is not a config file problem)."""


class ConfigError(ReceiverError):
    """The configuration cannot be used. Carries every problem found, not just the first."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration ({len(problems)} problem(s)):\n{lines}")


class RequestRejected(ReceiverError):
    """A delivery the receiver refuses. ``code`` is the stable JSON error code."""

    code: str = "rejected"
    status: int = 400

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class UnknownProvider(RequestRejected):
    code = "unknown_provider"
    status = 404


class UnknownRoute(RequestRejected):
    code = "not_found"
    status = 404


class MethodNotAllowed(RequestRejected):
    code = "method_not_allowed"
    status = 405


class MalformedRequest(RequestRejected):
    """What aiohttp's HTTP parser refused: no route ever saw it."""

    code = "bad_request"
    status = 400


class ExpectationFailed(RequestRejected):
    code = "expectation_failed"
    status = 417


class PayloadTooLarge(RequestRejected):
    code = "payload_too_large"
    status = 413


class MissingSignature(RequestRejected):
    code = "missing_signature"
    status = 401


class InvalidSignature(RequestRejected):
    code = "invalid_signature"
    status = 401


class TimestampOutOfTolerance(RequestRejected):
    code = "timestamp_out_of_tolerance"
    status = 401


class MissingEventId(RequestRejected):
    code = "missing_event_id"
    status = 400


class InvalidBody(RequestRejected):
    code = "invalid_body"
    status = 400


class BodyTimeout(RequestRejected):
    code = "request_timeout"
    status = 408


class ClientDisconnected(RequestRejected):
    """The client hung up before its body arrived: nobody reads the answer, but the delivery is
    counted and logged like any refused one (not as a server error)."""

    code = "client_disconnected"
    status = 400


class KeyConflict(RequestRejected):
    code = "key_conflict"
    status = 409


class Unavailable(ReceiverError):
    """Not now: the sender should retry after ``retry_after_s`` (503 with ``Retry-After``)."""

    code = "unavailable"
    status = 503

    def __init__(self, detail: str, *, retry_after_s: int = 5) -> None:
        self.detail = detail
        self.retry_after_s = retry_after_s
        super().__init__(detail)


class StorageUnavailable(Unavailable):
    """The store could not commit (disk full, locked past its budget, I/O error)."""

    code = "storage_unavailable"


class ServerBusy(Unavailable):
    """Taking this body would pass the memory held for request bodies at once."""

    code = "server_busy"


class PermanentError(ReceiverError):
    """Raise this from a ``python`` handler when retrying cannot help: the event goes ``dead``
    at once instead of being retried. Any other exception is retried with backoff."""
