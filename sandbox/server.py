"""The sandbox's aiohttp application, and a runner to start it in-process (tests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from sandbox import control_api, gupshup_api
from sandbox.state import HTTP_KEY, STATE_KEY, ErrorResponse, SandboxState


def create_app(*, auto_status: bool = False) -> web.Application:
    """Build the sandbox; with `auto_status`, each accepted send reports enqueued/sent/delivered."""
    app = web.Application(middlewares=[_render_errors])
    app[STATE_KEY] = SandboxState(auto_status=auto_status)
    app.cleanup_ctx.append(_callback_client)
    app.add_routes(
        [
            web.post("/wa/api/v1/msg", gupshup_api.send_session_message),
            web.post("/wa/api/v1/template/msg", gupshup_api.send_template_message),
            web.post("/partner/account/login", gupshup_api.partner_login),
            web.get("/partner/app/{appId}/token", gupshup_api.partner_app_token),
            web.post("/partner/app/{appId}/subscription", gupshup_api.partner_subscription),
            web.get("/partner/app/{appId}/templates", gupshup_api.partner_list_templates),
            web.post("/partner/app/{appId}/templates", gupshup_api.partner_create_template),
            web.put("/partner/app/{appId}/config/bsuid", gupshup_api.partner_bsuid_config),
            web.get("/sandbox/v1/apps", control_api.list_apps),
            web.post("/sandbox/v1/apps", control_api.register_app),
            web.get("/sandbox/v1/apps/{app}/rules", control_api.get_rules),
            web.post("/sandbox/v1/apps/{app}/rules", control_api.set_rules),
            web.delete("/sandbox/v1/apps/{app}/rules", control_api.clear_rules),
            web.get("/sandbox/v1/optouts", control_api.list_opt_outs),
            web.post("/sandbox/v1/optouts", control_api.add_opt_out),
            web.delete("/sandbox/v1/optouts", control_api.remove_opt_out),
            web.get("/sandbox/v1/clock", control_api.get_clock),
            web.post("/sandbox/v1/clock", control_api.set_clock),
            web.get("/sandbox/v1/metrics", control_api.metrics),
            web.post("/sandbox/v1/inbound", control_api.simulate_inbound),
            web.get("/sandbox/v1/messages", control_api.list_messages),
            web.post("/sandbox/v1/statuses", control_api.emit_status),
            web.post("/sandbox/v1/events", control_api.emit_raw_event),
            web.post("/sandbox/v1/templates/status", control_api.set_template_status),
            web.post("/sandbox/v1/partner/credentials", control_api.set_partner_credentials),
            web.post("/sandbox/v1/partner/expire-tokens", control_api.expire_partner_tokens),
            web.get("/sandbox/v1/faults", control_api.list_faults),
            web.post("/sandbox/v1/faults", control_api.set_fault),
            web.delete("/sandbox/v1/faults", control_api.clear_faults),
            web.get("/sandbox/v1/status-faults", control_api.list_status_faults),
            web.post("/sandbox/v1/status-faults", control_api.set_status_faults),
            web.post("/sandbox/v1/reset", control_api.reset),
            web.get("/sandbox/v1/healthz", control_api.healthz),
            web.get("/healthz", control_api.healthz),
        ]
    )
    return app


@dataclass
class RunningSandbox:
    """A sandbox serving in the current event loop; `base_url` has no trailing slash."""

    runner: web.AppRunner
    host: str
    port: int

    @property
    def base_url(self) -> str:
        """Where to send requests, e.g. `http://127.0.0.1:8090`."""
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        """Stop serving and cancel callbacks still in flight."""
        await self.runner.cleanup()


async def start_sandbox(
    host: str = "127.0.0.1", port: int = 0, *, auto_status: bool = False
) -> RunningSandbox:
    """Serve a fresh sandbox on host:port in this event loop; port 0 picks a free port."""
    runner = web.AppRunner(create_app(auto_status=auto_status), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = int(runner.addresses[0][1])
    return RunningSandbox(runner=runner, host=host, port=bound_port)


async def _callback_client(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as http:
        app[HTTP_KEY] = http
        yield
        state = app[STATE_KEY]
        in_flight = list(state.tasks)
        state.reset()
        await asyncio.gather(*in_flight, return_exceptions=True)


@web.middleware
async def _render_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Gupshup answers every refusal with the same JSON shape; so does the control API.
    try:
        return await handler(request)
    except ErrorResponse as exc:
        return web.json_response({"status": "error", "message": exc.message}, status=exc.status)
