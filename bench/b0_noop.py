"""Baseline B0, the framework's ceiling: an aiohttp handler that reads the body and answers 200.

    python bench/b0_noop.py --port PORT

Same stack as ``receiver serve`` (aiohttp, uvloop when installed, no access log), nothing else.
It also serves as the no-op target of the worker-drain scenario (any path, any method).
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

_OK = b'{"status":"ok"}'


DELAY_S = web.AppKey("delay_s", float)


async def handle(request: web.Request) -> web.Response:
    await request.read()
    if request.app[DELAY_S] and request.method == "POST":  # a slow downstream (backlog)
        await asyncio.sleep(request.app[DELAY_S])
    return web.Response(body=_OK, content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-s", type=float, default=0.0, help="answer this much later")
    args = parser.parse_args()
    app = web.Application()
    app[DELAY_S] = args.delay_s
    app.router.add_route("*", "/{tail:.*}", handle)
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = asyncio.new_event_loop
    loop = loop_factory()
    asyncio.set_event_loop(loop)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None, loop=loop)


if __name__ == "__main__":
    main()
