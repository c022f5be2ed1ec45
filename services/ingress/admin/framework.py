"""The admin API's plumbing: routes that describe themselves and the steps every endpoint shares.

Each route declares its method, path and scope, and where it has them its query parameters
and the model of its answer; its summary is the handler's docstring and its body model the
type of the handler's parameter after `call`. The OpenAPI document is built from the same
declarations, so it cannot drift from what is served. Written once
here: authentication and organization scoping (an org key sees only its organization), body
validation (422 naming the fields), query parameters, not-found (404, never 403), pages
(`{"items", "next"}`), the audit entry of a write, and JSON errors.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal, TypeVar, get_type_hints

from aiohttp import web
from aiohttp.helpers import ChainMapProxy
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from services.ingress.admin.dependencies import API_KEYS, AUDIT
from services.ingress.admin.lockout import AuthLockout
from services.ingress.metrics import ADMIN_AUTH_FAILURES
from shared.logs import get_logger
from shared.repositories.api_keys import ApiKey
from shared.store import Document

log = get_logger(__name__)

Scope = Literal["org", "platform", "public"]
MAX_BODY_BYTES = 1024 * 1024
ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
PATH_PARAMETER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\}")
T = TypeVar("T")


class Body(BaseModel):
    """Base of request bodies: unknown fields are rejected, values are not coerced loosely."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ApiError(Exception):
    """An error answered as `{"error": {"code", "message", "fields"?}}`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields
        self.headers = headers


def not_found(what: str) -> ApiError:
    """The answer for anything absent or belonging to another organization (never 403)."""
    return ApiError(404, "not_found", f"{what} not found")


def found(value: T | None, what: str) -> T:
    """`value`, or a 404 saying `what` is not found."""
    if value is None:
        raise not_found(what)
    return value


def invalid_query(name: str, reason: str) -> ApiError:
    """422 for a query parameter, naming it."""
    return ApiError(422, "invalid", "invalid query parameter", {name: reason})


def rows_rejected(what: str, fields: dict[str, str]) -> ApiError:
    """422 for a CSV import refused as a whole (`what`: "listing", "lead"), naming the rows."""
    return ApiError(422, "invalid_rows", f"no {what} was imported", fields)


def invalid_body(field: str, reason: str) -> ApiError:
    """422 for a body field the model accepted but the organization's data does not."""
    return ApiError(422, "invalid", "the request body is invalid", {field: reason})


@dataclass(frozen=True)
class Call:
    """One authenticated request, as a handler sees it."""

    request: web.Request
    key: ApiKey | None

    @property
    def org_id(self) -> str:
        """The caller's organization (org-scoped routes only)."""
        assert self.key is not None and self.key.org_id is not None
        return self.key.org_id

    @property
    def actor(self) -> str:
        """Who is calling, for the audit log."""
        return f"api-key:{self.key.id}" if self.key else "anonymous"

    @property
    def app(self) -> ChainMapProxy:
        """The application's dependencies, read by their `web.AppKey`."""
        return self.request.config_dict

    def param(self, name: str) -> str:
        """A path parameter."""
        return self.request.match_info[name]

    async def audited(
        self,
        action: str,
        target: str,
        *,
        before: Document | None = None,
        after: Document | None = None,
    ) -> None:
        """Record a write made through the API in the organization's audit log."""
        await self.app[AUDIT].record(
            org_id=self.key.org_id if self.key else None,
            actor=self.actor,
            action=action,
            target=target,
            before=before,
            after=after,
        )

    async def csv_text(self) -> str:
        """The raw request body as text (a UTF-8 BOM dropped), or a 422."""
        try:
            return (await self.request.read()).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ApiError(422, "invalid", "the CSV is not UTF-8 text") from None

    def query_int(self, name: str, default: int, low: int, high: int) -> int:
        """An integer query parameter within bounds, or a 422 naming it."""
        raw = self.request.query.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise invalid_query(name, "must be an integer") from None
        if not low <= value <= high:
            raise invalid_query(name, f"must be between {low} and {high}")
        return value

    def query_date(self, name: str, default: date) -> date:
        """A date query parameter (YYYY-MM-DD), or a 422 naming it."""
        raw = self.request.query.get(name)
        if raw is None:
            return default
        try:
            if not ISO_DATE.fullmatch(raw):
                raise ValueError(raw)
            return date.fromisoformat(raw)
        except ValueError:
            raise invalid_query(name, "must be a date (YYYY-MM-DD)") from None

    def query_time(self, name: str) -> datetime | None:
        """An ISO-8601 date or time query parameter (UTC when it has no offset), or a 422."""
        raw = self.request.query.get(name)
        if raw is None:
            return None
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            raise invalid_query(name, "must be an ISO-8601 date or time") from None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# `(call)` or, for a route with a JSON body, `(call, body: SomeModel)`.
Handler = Callable[..., Awaitable[web.StreamResponse]]


def body_model(handler: Handler) -> type[BaseModel] | None:
    """The model of the handler's parameter after `call`, or None when it takes no JSON body."""
    hints = get_type_hints(handler)
    names = [name for name in inspect.signature(handler).parameters if name != "call"]
    hint = hints.get(names[0]) if names else None
    return hint if isinstance(hint, type) and issubclass(hint, BaseModel) else None


@dataclass(frozen=True)
class Query:
    """A query parameter a route reads, as the OpenAPI document describes it."""

    name: str
    description: str
    type: Literal["string", "integer"] = "string"

    def openapi(self) -> dict[str, Any]:
        """The parameter object of the OpenAPI document."""
        return {
            "name": self.name,
            "in": "query",
            "required": False,
            "description": self.description,
            "schema": {"type": self.type},
        }


# The query parameters of every paginated list.
PAGE_QUERY = (
    Query("limit", "items per page (1-200, default 50)", "integer"),
    Query("after", "the `next` of the previous page"),
)


@dataclass(frozen=True)
class Route:
    """A declared endpoint."""

    method: str
    path: str
    summary: str
    handler: Handler
    scope: Scope
    body: type[BaseModel] | None
    status: int
    content_type: str | None  # a raw (non-JSON) request body, e.g. text/csv
    query: tuple[Query, ...] = ()
    response: type[BaseModel] | None = None  # documents the JSON answer


@dataclass
class RouteTable:
    """The routes of one resource module (like aiohttp's `RouteTableDef`, but self-describing)."""

    routes: list[Route] = field(default_factory=list)

    def add(
        self,
        method: str,
        path: str,
        *,
        summary: str | None = None,
        scope: Scope = "org",
        status: int = 200,
        content_type: str | None = None,
        query: Sequence[Query] = (),
        response: type[BaseModel] | None = None,
    ) -> Callable[[Handler], Handler]:
        """Declare the decorated function as an endpoint; its docstring is the summary.

        `query` and `response` (a model of the answer) only describe the route.
        """

        def register(handler: Handler) -> Handler:
            described = summary or " ".join((inspect.getdoc(handler) or "").split())
            self.routes.append(
                Route(
                    method,
                    path,
                    described.removesuffix("."),
                    handler,
                    scope,
                    body_model(handler),
                    status,
                    content_type,
                    tuple(query),
                    response,
                )
            )
            return handler

        return register


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON answer (datetimes as ISO-8601)."""
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def page_response(
    page: Sequence[T], limit: int, show: Callable[[T], Any], cursor: Callable[[T], Any]
) -> web.Response:
    """A page of items; `next` (the last item's cursor) only when the page is full."""
    return json_response(
        {
            "items": [show(item) for item in page],
            "next": cursor(page[-1]) if len(page) == limit else None,
        }
    )


def _validation_fields(exc: ValidationError) -> dict[str, str]:
    return {".".join(str(p) for p in err["loc"]) or "body": err["msg"] for err in exc.errors()}


def build_app(table: RouteTable, title: str, lockout: AuthLockout) -> web.Application:
    """The aiohttp application serving a route table and its OpenAPI description.

    `lockout` refuses (429) addresses that presented too many wrong keys lately. API keys
    are looked up in the application's `API_KEYS` repository.
    """

    async def authenticate(request: web.Request, scope: Scope) -> ApiKey | None:
        if scope == "public":
            return None
        # The peer's address: the admin listener is internal, with no proxy to trust.
        address = request.remote or "unknown"
        locked_for = lockout.retry_after(address)
        if locked_for is not None:
            ADMIN_AUTH_FAILURES.labels("locked_out").inc()
            raise ApiError(
                429,
                "too_many_failures",
                "too many wrong API keys from this address; retry later",
                headers={"Retry-After": str(max(1, math.ceil(locked_for)))},
            )
        kind, _, token = request.headers.get("Authorization", "").partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            ADMIN_AUTH_FAILURES.labels("missing_key").inc()
            raise ApiError(401, "unauthenticated", "missing API key (Authorization: Bearer ...)")
        # Looked up by its SHA-256, never compared as text: response timing says nothing
        # about the key's characters.
        key = await request.config_dict[API_KEYS].authenticate(token.strip())
        if key is None:
            ADMIN_AUTH_FAILURES.labels("unknown_key").inc()
            locked = lockout.record_failure(address)
            # Never the presented key, not even part of it.
            log.warning(
                "admin authentication failed",
                client=address,
                method=request.method,
                path=request.path,
                locked_out=locked,
            )
            raise ApiError(401, "unauthenticated", "unknown or revoked API key")
        if key.scope != scope:
            raise ApiError(403, "forbidden", f"this endpoint needs a {scope} key")
        return key

    def endpoint(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            key = await authenticate(request, route.scope)
            call = Call(request, key)
            if route.body is None:
                return await route.handler(call)
            raw = await request.read()
            try:
                body = route.body.model_validate_json(raw or b"{}", strict=True)
            except ValidationError as exc:
                raise ApiError(
                    422, "invalid", "the request body is invalid", _validation_fields(exc)
                ) from None
            return await route.handler(call, body)

        return handle

    @web.middleware
    async def errors(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            error: dict[str, Any] = {"code": exc.code, "message": exc.message}
            if exc.fields:
                error["fields"] = exc.fields
            response = json_response({"error": error}, status=exc.status)
            response.headers.update(exc.headers or {})
            return response
        except web.HTTPRequestEntityTooLarge:
            return json_response(
                {"error": {"code": "too_large", "message": "request body too large"}}, status=413
            )
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
            return json_response(
                {"error": {"code": code, "message": exc.reason}}, status=exc.status
            )
        except Exception:
            log.exception("admin request failed", path=request.path, method=request.method)
            return json_response(
                {"error": {"code": "internal", "message": "internal error"}}, status=500
            )

    app = web.Application(middlewares=[errors], client_max_size=MAX_BODY_BYTES)
    for route in table.routes:
        app.router.add_route(route.method, route.path, endpoint(route))
    spec = openapi(table, title)

    async def serve_spec(_request: web.Request) -> web.Response:
        return json_response(spec)

    async def healthz(_request: web.Request) -> web.Response:
        return json_response({"status": "alive"})

    app.router.add_get("/v1/openapi.json", serve_spec)
    app.router.add_get("/healthz", healthz)
    return app


ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "fields": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "required": ["code", "message"],
        }
    },
}


def _model_schemas(table: RouteTable) -> tuple[dict[Any, Any], dict[str, Any]]:
    """The schemas of every body and answer model, named apart where two models share a
    name: (reference per model and mode, component schemas)."""
    models: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {}
    for route in table.routes:
        if route.body is not None:
            models[(route.body, "validation")] = None
        if route.response is not None:
            models[(route.response, "serialization")] = None
    if not models:
        return {}, {}
    refs, defs = models_json_schema(list(models), ref_template="#/components/schemas/{model}")
    return dict(refs), dict(defs.get("$defs", {}))


def openapi(table: RouteTable, title: str) -> dict[str, Any]:
    """An OpenAPI 3 document describing every declared route."""
    paths: dict[str, dict[str, Any]] = {}
    refs, component_schemas = _model_schemas(table)
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA, **component_schemas}
    for route in table.routes:
        success: dict[str, Any] = {"description": "success"}
        if route.response is not None:
            success["content"] = {
                "application/json": {"schema": refs[(route.response, "serialization")]}
            }
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.handler.__name__,
            "responses": {
                str(route.status): success,
                "default": {
                    "description": "error",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
            },
            "security": [] if route.scope == "public" else [{"bearer": []}],
        }
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[(route.body, "validation")]}},
            }
        if route.content_type is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {route.content_type: {"schema": {"type": "string"}}},
            }
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in PATH_PARAMETER.findall(route.path)
        ] + [query.openapi() for query in route.query]
        if parameters:
            operation["parameters"] = parameters
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
