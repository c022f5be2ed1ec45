"""Run the Gupshup sandbox: `python -m sandbox [--host 127.0.0.1] [--port 8090] [--auto-status]`."""

from __future__ import annotations

import argparse
import logging

from aiohttp import web

from sandbox.server import create_app


def main() -> None:
    """Parse the command line and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument(
        "--auto-status",
        action="store_true",
        help="after each accepted send, post enqueued, sent and delivered statuses",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    web.run_app(create_app(auto_status=args.auto_status), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
