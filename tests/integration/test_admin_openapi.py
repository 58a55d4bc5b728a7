"""The OpenAPI document matches the registered routes, and a bounded schemathesis run against a
real admin listener (on a free port of 127.0.0.1) finds no 5xx."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Err

from receiver.config import load_config
from receiver.runtime import Receiver
from receiver.server.openapi import openapi_document
from tests.integration.conftest import AdminHarness, admin_providers
from tests.support import factories

_METHODS = {"get", "post", "put", "patch", "delete"}


def _operations(schema: Any) -> list[Any]:
    """Every operation of a loaded schema; a schema problem fails here, by name."""
    operations = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise AssertionError(f"the OpenAPI document is invalid: {result.err()}")
        operations.append(result.ok())
    return operations


def _documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method.upper())
        for path, item in document["paths"].items()
        for method in item
        if method in _METHODS
    }


def _registered(receiver: Receiver) -> set[tuple[str, str]]:
    return {
        (route.resource.canonical, route.method)
        for route in receiver.admin_app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }


async def test_openapi_is_in_step_with_the_routes(admin_harness: AdminHarness) -> None:
    resp = await admin_harness.get("/admin/openapi.json")
    assert resp.status == 200
    document = await resp.json()
    assert document["openapi"].startswith("3.1")
    assert _documented(document) == _registered(admin_harness.receiver)
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation["operationId"], (path, method)
            assert "200" in operation["responses"], (path, method)
            if path.startswith("/admin/") and path != "/admin/openapi.json":
                assert "401" in operation["responses"], (path, method)


def test_openapi_document_is_valid_for_schemathesis() -> None:
    schema = schemathesis.openapi.from_dict(openapi_document())
    operations = _operations(schema)
    assert len(operations) == len(_documented(openapi_document()))


@pytest.fixture
def admin_live_server(tmp_path: Path) -> Iterator[str]:
    """``receiver`` running in its own thread and event loop, on free ports of 127.0.0.1."""
    path = factories.write_config(tmp_path, providers=admin_providers())
    env = factories.test_environ()
    env.pop("RECEIVER_ADMIN_TOKEN", None)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="admin-live-server", daemon=True)
    thread.start()

    async def start() -> Receiver:
        receiver = Receiver(load_config(path, environ=env), environ=env)
        await receiver.start()
        return receiver

    receiver = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    try:
        for i in range(5):
            body = json.dumps({"id": f"fz{i}", "type": "fuzz", "n": i}).encode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{receiver.ingest_port}/webhooks/plain",
                data=body,
                headers={"content-type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as resp:
                assert resp.status == 200
        yield f"http://127.0.0.1:{receiver.admin_port}"
    finally:
        asyncio.run_coroutine_threadsafe(receiver.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_schemathesis_finds_no_server_errors(admin_live_server: str) -> None:
    schema = schemathesis.openapi.from_dict(openapi_document())
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    failures: list[str] = []
    statuses: list[int] = []
    for operation in _operations(schema):
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @hypothesis.settings(
                max_examples=30,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(hypothesis.HealthCheck),
                phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            )
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                response = case.call_and_validate(base_url=admin_live_server, checks=checks)
                statuses.append(response.status_code)

            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                continue  # negative mode: nothing in this operation can be made invalid
            except (Exception, BaseExceptionGroup) as exc:  # collect all, then report them
                failures.append(f"{operation.label} [{mode.value}]: {exc}")
    assert not failures, "\n\n".join(failures)
    assert len(statuses) > 200  # the run really exercised the API
    assert {200, 400, 404} <= set(statuses)
