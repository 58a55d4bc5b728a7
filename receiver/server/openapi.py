"""The admin listener's OpenAPI 3.1 description, written by hand and served at
``/admin/openapi.json``. A test keeps its paths in step with the registered routes."""

from __future__ import annotations

__all__ = ["openapi_document"]

import copy
from typing import Any

from receiver import __version__
from receiver.models import EventStatus

_JSON = "application/json"


def _nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **extra}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ref("Error")}}}


def _bad_request(description: str) -> dict[str, Any]:
    """400: our JSON error, or aiohttp's plain-text answer to a request line over 8 KiB."""
    return {
        "description": f"{description} (a request line over 8 KiB: plain text from the parser)",
        "content": {_JSON: {"schema": _ref("Error")}, "text/plain": {"schema": {"type": "string"}}},
    }


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ref(schema)}}}


_COMMON_ERRORS = {
    "401": _error("Missing or wrong bearer token"),
    "503": _error("The store is unavailable"),
}
_WRITE_ERRORS = {
    **_COMMON_ERRORS,
    "403": _error("The read-only token cannot replay"),
    "413": _error("The request body is too large"),
}

_TIME_DOC = "ISO-8601 time (UTC unless an offset is given), Unix seconds, or a duration ago (2h)"


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


_FILTER_PARAMETERS = [
    _query("provider", "Provider name from the config", {"type": "string", "maxLength": 64}),
    _query("status", "Event status", {"type": "string", "enum": [s.value for s in EventStatus]}),
    _query("type", "Event type", {"type": "string", "maxLength": 200}),
    _query("key", "Exact dedupe key ({provider}:{event id})", {"type": "string", "maxLength": 600}),
    _query("since", f"Received at or after: {_TIME_DOC}", {"type": "string"}),
    _query("until", f"Received before: {_TIME_DOC}", {"type": "string"}),
    _query(
        "q",
        "Text search over bodies (FTS5 terms when available, else substring)",
        {"type": "string", "maxLength": 500},
    ),
]
_PAGE_PARAMETERS = [
    _query("cursor", "next_cursor from the previous page", {"type": "string"}),
    _query("limit", "Page size (capped at 500)", {"type": "integer", "minimum": 1}),
]
_ID_PARAMETER = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "Receiver event id",
    "schema": {"type": "string"},
}

_FILTER_PROPERTIES: dict[str, Any] = {
    "provider": {"type": "string", "maxLength": 64},
    "status": {"type": "string", "enum": [s.value for s in EventStatus]},
    "type": {"type": "string", "maxLength": 200},
    "key": {"type": "string", "maxLength": 600},
    "since": {"type": ["string", "number"], "description": _TIME_DOC},
    "until": {"type": ["string", "number"], "description": _TIME_DOC},
    "q": {"type": "string", "maxLength": 500},
}
_REASON = {
    "type": "string",
    "minLength": 1,
    "maxLength": 500,
    "description": "Why (kept in the audit trail); optional, never blank",
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {
            "error": {"type": "string"},
            "detail": {"type": "string"},
            "parameter": {"type": "string", "description": "The parameter at fault (400)"},
        },
    },
    "EventSummary": {
        "type": "object",
        "required": ["id", "provider", "key", "status", "received_at"],
        "properties": {
            "id": {"type": "string"},
            "provider": {"type": "string"},
            "key": {"type": "string"},
            "provider_event_id": {"type": "string"},
            "type": _nullable("string"),
            "status": {"type": "string"},
            "received_at": {"type": "string", "format": "date-time"},
            "last_seen_at": {"type": "string", "format": "date-time"},
            "duplicate_count": {"type": "integer"},
            "conflict_count": {"type": "integer"},
            "body_bytes": _nullable("integer"),
            "payload_purged": {"type": "boolean"},
        },
    },
    "EventPage": {
        "type": "object",
        "required": ["events", "next_cursor"],
        "properties": {
            "events": {"type": "array", "items": _ref("EventSummary")},
            "next_cursor": _nullable("string"),
        },
    },
    "EventDetail": {
        "type": "object",
        "required": ["id", "provider", "key", "status", "body", "encoding", "headers"],
        "properties": {
            "id": {"type": "string"},
            "provider": {"type": "string"},
            "key": {"type": "string"},
            "provider_event_id": {"type": "string"},
            "type": _nullable("string"),
            "status": {"type": "string"},
            "fingerprint": {"type": "string"},
            "content_type": _nullable("string"),
            "remote_addr": _nullable("string"),
            "received_at": {"type": "string"},
            "last_seen_at": {"type": "string"},
            "duplicate_count": {"type": "integer"},
            "conflict_count": {"type": "integer"},
            "payload_expires_at": {"type": "string"},
            "dedupe_expires_at": {"type": "string"},
            "payload_purged_at": _nullable("string"),
            "body": _nullable("string", description="Text, or base64 when encoding says so"),
            "encoding": {"enum": ["utf-8", "base64", None]},
            "body_bytes": _nullable("integer"),
            "headers": {
                "type": ["object", "null"],
                "additionalProperties": {"type": "string"},
                "description": "Stored headers; credential-like names show [redacted]",
            },
            "job": {"type": ["object", "null"]},
            "attempts": {"type": "array", "items": {"type": "object"}},
            "conflicts": {"type": "array", "items": {"type": "object"}},
            "requeues": {"type": "array", "items": {"type": "object"}},
        },
    },
    "ReplayOneRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"reason": _REASON, "dry_run": {"type": "boolean", "default": False}},
    },
    "ReplayOneResult": {
        "type": "object",
        "required": ["id", "status", "dry_run"],
        "properties": {
            "id": {"type": "string"},
            "status": {"enum": ["replayed", "would_replay"]},
            "dry_run": {"type": "boolean"},
        },
    },
    "ReplayRequest": {
        "type": "object",
        "additionalProperties": False,
        "description": "At least one filter is required",
        "properties": {
            **_FILTER_PROPERTIES,
            "reason": _REASON,
            "dry_run": {"type": "boolean", "default": False},
            "limit": {"type": "integer", "minimum": 1, "description": "At most 10000"},
            "cursor": {
                "type": "string",
                "description": "A report's next_cursor: continue with the older matches",
            },
        },
    },
    "ReplayReport": {
        "type": "object",
        "required": [
            "dry_run",
            "matched",
            "replayed",
            "would_replay",
            "skipped",
            "sample",
            "has_more",
        ],
        "properties": {
            "dry_run": {"type": "boolean"},
            "matched": {"type": "integer"},
            "replayed": {"type": "integer", "description": "Queued by this request (dry run: 0)"},
            "would_replay": {
                "type": "integer",
                "description": "What a run that is not a dry run queues (this one's count)",
            },
            "skipped": {"type": "object", "additionalProperties": {"type": "integer"}},
            "sample": {"type": "array", "items": {"type": "string"}},
            "has_more": {"type": "boolean"},
            "next_cursor": {
                "type": ["string", "null"],
                "description": "Send as cursor (same filters) to replay the older matches",
            },
        },
    },
    "RejectionPage": {
        "type": "object",
        "required": ["rejections", "next_cursor"],
        "properties": {
            "rejections": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "at", "cause"],
                    "properties": {
                        "id": {"type": "string"},
                        "at": {"type": "string"},
                        "provider": _nullable("string"),
                        "cause": {"type": "string"},
                        "remote_addr": _nullable("string"),
                        "body_bytes": _nullable("integer"),
                    },
                },
            },
            "next_cursor": _nullable("string"),
        },
    },
    "Stats": {
        "type": "object",
        "required": ["totals", "providers", "queue", "rejections", "retention"],
        "properties": {
            "totals": {"type": "object"},
            "providers": {"type": "object", "additionalProperties": {"type": "object"}},
            "queue": {
                "type": "object",
                "properties": {
                    "queued": {"type": "integer"},
                    "ready": {"type": "integer"},
                    "running": {"type": "integer"},
                    "depth": {"type": "integer"},
                    "oldest_ready_age_s": {
                        "type": "number",
                        "description": "How long the oldest due job has waited for a worker",
                    },
                    "oldest_unfinished_age_s": {
                        "type": "number",
                        "description": "How long the oldest event not yet handled has been"
                        " queued (received, redelivered or replayed), its retries included",
                    },
                    "waiting_for_a_handler": {
                        "type": "integer",
                        "description": "Jobs of providers with no handler configured",
                    },
                },
            },
            "rejections": {"type": "object"},
            "retention": {"type": "object", "additionalProperties": {"type": "object"}},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {},
            "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
            "reasons": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "Why each failing check fails (the admin listener only)",
            },
        },
    },
}

_ADMIN_SECURITY: list[dict[str, list[str]]] = [
    {"bearer": []},
    {},
]  # {}: open when no admin token is configured


def _paths() -> dict[str, Any]:
    body = {"required": False, "content": {_JSON: {"schema": _ref("ReplayOneRequest")}}}
    bulk = {"required": True, "content": {_JSON: {"schema": _ref("ReplayRequest")}}}
    return {
        "/admin/events": {
            "get": {
                "operationId": "listEvents",
                "summary": "Events, newest first, filtered, cursor-paginated",
                "parameters": [*_FILTER_PARAMETERS, *_PAGE_PARAMETERS],
                "responses": {
                    "200": _ok("A page of events", "EventPage"),
                    "400": _bad_request("An invalid filter; 'parameter' names it"),
                    **_COMMON_ERRORS,
                },
            }
        },
        "/admin/events/{id}": {
            "get": {
                "operationId": "getEvent",
                "summary": "One event: body, redacted headers, attempts, duplicates, conflicts",
                "parameters": [_ID_PARAMETER],
                "responses": {
                    "200": _ok("The event", "EventDetail"),
                    "400": _bad_request("The request cannot be parsed"),
                    "404": _error("No such event"),
                    **_COMMON_ERRORS,
                },
            }
        },
        "/admin/events/{id}/replay": {
            "post": {
                "operationId": "replayEvent",
                "summary": "Queue one event again (audited)",
                "parameters": [_ID_PARAMETER],
                "requestBody": body,
                "responses": {
                    "200": _ok("Replayed (or, dry run: would be)", "ReplayOneResult"),
                    "400": _bad_request("A blank reason or an invalid field"),
                    "404": _error("No such event"),
                    "409": _error("payload_purged, no_handler, or event_running"),
                    **_WRITE_ERRORS,
                },
            }
        },
        "/admin/replay": {
            "post": {
                "operationId": "replayMatching",
                "summary": "Queue every event matching the filters again, in one transaction",
                "requestBody": bulk,
                "responses": {
                    "200": _ok("What was (or, dry run: would be) replayed", "ReplayReport"),
                    "400": _error("No filter, a blank reason, or an invalid field"),
                    **_WRITE_ERRORS,
                },
            }
        },
        "/admin/rejections": {
            "get": {
                "operationId": "listRejections",
                "summary": "Rejected deliveries (no bodies), newest first",
                "parameters": [
                    _query("cause", "Error code, e.g. invalid_signature", {"type": "string"}),
                    _query("provider", "Provider name", {"type": "string"}),
                    _query("since", f"At or after: {_TIME_DOC}", {"type": "string"}),
                    _query("until", f"Before: {_TIME_DOC}", {"type": "string"}),
                    *_PAGE_PARAMETERS,
                ],
                "responses": {
                    "200": _ok("A page of rejections", "RejectionPage"),
                    "400": _bad_request("An invalid filter"),
                    **_COMMON_ERRORS,
                },
            }
        },
        "/admin/stats": {
            "get": {
                "operationId": "getStats",
                "summary": "Counts, queue depth, rejections by cause, retention per provider",
                "responses": {"200": _ok("Stats", "Stats"), **_COMMON_ERRORS},
            }
        },
        "/admin/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document",
                "responses": {
                    "200": {"description": "OpenAPI 3.1", "content": {_JSON: {"schema": {}}}},
                    "401": _COMMON_ERRORS["401"],
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "The process is up",
                "security": [],
                "responses": {"200": _ok("Up", "Health")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "The store is writable and the worker runs",
                "security": [],
                "responses": {"200": _ok("Ready", "Health"), "503": _ok("Not ready", "Health")},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus text format",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }


_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "receiver admin API",
        "version": __version__,
        "description": "Inspect, search and replay stored webhook events. Errors are JSON "
        '{"error": "<code>", "detail": "<plain words>"}.',
    },
    "servers": [{"url": "http://127.0.0.1:8081"}],
    "security": _ADMIN_SECURITY,
    "paths": _paths(),
    "components": {
        "schemas": _SCHEMAS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
}


def openapi_document() -> dict[str, Any]:
    """A fresh copy (callers may add a server URL or otherwise change it)."""
    return copy.deepcopy(_DOCUMENT)
