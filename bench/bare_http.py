"""The HTTP ceiling: an aiohttp server with ingress's webhook route that reads the body and
answers 200 without any I/O. `python -m bench.bare_http --port N`."""

from __future__ import annotations

import argparse

import uvloop
from aiohttp import web


async def accept(request: web.Request) -> web.Response:
    """Read the body, answer 200 with an empty body (as ingress does once confirmed)."""
    await request.read()
    return web.Response(status=200)


async def healthz(request: web.Request) -> web.Response:
    """Alive."""
    return web.Response(status=200)


def main() -> None:
    """Serve until SIGTERM on the services' event loop (uvloop), without an access log
    (ingress writes none per request either)."""
    parser = argparse.ArgumentParser(prog="python -m bench.bare_http")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/v1/webhooks/gupshup/{agent_key}", accept)
    app.router.add_get("/readyz", healthz)
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
