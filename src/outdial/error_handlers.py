"""How errors answer over HTTP: every error, ours or the framework's, as the contract's error
JSON, and the OpenAPI text that documents it."""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from outdial.errors import OutdialError, error_body
from outdial.validation import printable


class Answered(Exception):
    """Raised by a dependency that already has the request's answer (an idempotent replay):
    the route does not run, and `response` is sent."""

    def __init__(self, response: JSONResponse) -> None:
        super().__init__("answered")
        self.response = response


class ErrorDetail(BaseModel):
    code: str = Field(description="What went wrong, in snake_case (e.g. `agent_not_found`).")
    message: str = Field(description="What went wrong, as a human sentence.")
    details: Any = Field(
        description="More about it, or null: for validation errors, every bad field or "
        "recipient with its location."
    )


class ErrorResponse(BaseModel):
    """Every error, whatever its status, answers this shape."""

    error: ErrorDetail


_ERROR_DESCRIPTIONS = {
    400: "The request is invalid (`validation_error`, or a more specific code).",
    401: "The API key is missing or unknown.",
    402: "The available balance cannot cover the request.",
    403: "This key may not do this.",
    404: "No such resource for this tenant.",
    409: "The request conflicts with the resource's state.",
    422: "This Idempotency-Key was already used with a different request.",
}
# Any route may also answer 408 (`request_timeout`) or 413 (`request_too_large`): see
# request_limits.py; they are documented once, in the README, not on every operation.


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for the error statuses a route can answer (all as ErrorResponse).

    A route that takes input gets 400 documented by itself (see below), unless it declares
    422: FastAPI then skips its own validation entry, so such a route lists 400 too."""
    return {
        status: {"model": ErrorResponse, "description": _ERROR_DESCRIPTIONS[status]}
        for status in statuses
    }


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Every error as `{"loc", "message", "type"}`: the location of the field (a JSON value's
    own path within it appended), plus whatever fields the error adds (`validation.problem`).
    Locations and messages may quote the input: what cannot be encoded is escaped."""
    details = []
    for err in exc.errors():
        loc = list(err.get("loc", ()))
        if loc[:1] == ["body"]:
            loc = loc[1:]
        ctx = err.get("ctx") or {}
        loc += ctx.get("path", [])
        message = err.get("msg", "").removeprefix("Value error, ")
        details.append(
            {
                "loc": [printable(p) if isinstance(p, str) else p for p in loc],
                "message": printable(message),
                "type": err.get("type", ""),
                **ctx.get("details", {}),
            }
        )
    return details


def validation_error_body(details: list[dict[str, Any]]) -> dict[str, Any]:
    """The answer to invalid input: code `duplicate_recipient` when repeated recipients are
    its only problem, else `validation_error`, every problem listed either way."""
    fields = ", ".join(".".join(str(p) for p in d["loc"]) or "body" for d in details)
    if details and all(d["type"] == "duplicate_recipient" for d in details):
        listed = ", ".join(sorted({d["identity"] for d in details}))
        return error_body(
            "duplicate_recipient", f"A recipient appears more than once: {listed}.", details
        )
    return error_body("validation_error", f"Invalid request: {fields}.", details)


def _openapi_with_honest_validation_errors(app: FastAPI) -> dict[str, Any]:
    """FastAPI documents a 422 `HTTPValidationError` on every route that takes input; this
    app answers such errors 400 as ErrorResponse (see below), so document that instead."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = FastAPI.openapi(app)  # builds and caches app.openapi_schema; amended in place
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in error_schema.pop("$defs", {}).items():
        schemas.setdefault(name, definition)
    schemas.setdefault(ErrorResponse.__name__, error_schema)
    framework_422 = {"$ref": "#/components/schemas/HTTPValidationError"}
    validation_400 = {
        "description": _ERROR_DESCRIPTIONS[400],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            content = responses.get("422", {}).get("content", {})
            if content.get("application/json", {}).get("schema") != framework_422:
                continue
            del responses["422"]
            responses.setdefault("400", validation_400)
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return schema


def install_error_handlers(app: FastAPI) -> None:
    """Render every error, ours or the framework's, as the contract's error JSON."""
    app.openapi = lambda: _openapi_with_honest_validation_errors(app)  # type: ignore[method-assign]

    @app.exception_handler(OutdialError)
    async def _outdial_error(_: Request, exc: OutdialError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, exc.details), exc.status_code)

    @app.exception_handler(Answered)
    async def _answered(_: Request, exc: Answered) -> JSONResponse:
        return exc.response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_error_body(_validation_details(exc)), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {
            400: "invalid_body",
            401: "unauthorized",
            404: "not_found",
            405: "method_not_allowed",
            408: "request_timeout",
            413: "request_too_large",
        }
        code = codes.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, headers=exc.headers)
