"""receiver cut short: where a unique event's CPU goes, one ingest phase at a time.

    python -m bench.stages --stage verify --config PATH

Starts the receiver exactly as ``receiver serve`` does (same config, store, worker, logging,
uvloop), except that the ingest route answers a fixed ``200`` right after the named phase:

- ``framework``: the body is read; nothing else (the receiver's aiohttp app, middleware and
  route, the same work as B0);
- ``capture``: plus the request as ingest sees it (headers, URL, query);
- ``verify``: plus signature check, parsing and the event key (``IngestService.prepare``);
- ``store``: plus the group commit (``IngestService.record``): the event is stored and queued.

The full receiver adds the real answer, the metrics and the request's log line. The harness
runs each stage under the unique-event load; the differences of CPU per request between
consecutive stages are the cost of each phase.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from receiver.ingest import IngestService
from receiver.models import HandshakeReply, InboundRequest
from receiver.server import ingest_routes

_OK = b'{"status":"ok"}'

Stage = Callable[[IngestService, InboundRequest], Awaitable[None]]


async def _nothing(service: IngestService, inbound: InboundRequest) -> None:
    return None


async def _verify(service: IngestService, inbound: InboundRequest) -> None:
    service.prepare(inbound)


async def _store(service: IngestService, inbound: InboundRequest) -> None:
    prepared = service.prepare(inbound)
    if not isinstance(prepared, HandshakeReply):
        await service.record(prepared)


def _handler(stage: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    work: Stage = {"capture": _nothing, "verify": _verify, "store": _store}.get(stage, _nothing)

    async def handle(request: web.Request) -> web.StreamResponse:
        limits = request.app[ingest_routes.INGEST_LIMITS]
        if stage == "framework":
            await ingest_routes.read_body(request, limits)
        else:
            inbound = await ingest_routes.capture(request, limits)
            await work(request.app[ingest_routes.INGEST], inbound)
        return web.Response(body=_OK, content_type="application/json")

    return handle


STAGES = ("framework", "capture", "verify", "store")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", choices=STAGES, required=True)
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args()
    # The route is registered when the app is built: swap the handler before that.
    ingest_routes.receive = _handler(args.stage)  # type: ignore[assignment]
    from receiver.cli import main as receiver_main

    raise SystemExit(receiver_main(["serve", "--config", str(args.config)]))


if __name__ == "__main__":
    main()
