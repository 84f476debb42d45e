from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException


class OutdialError(Exception):
    """The one error base: carries the HTTP status and the contract's snake_case code."""

    status_code: int = 400
    code: str = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        details: Any = None,
        code: str | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code


class ValidationFailed(OutdialError):
    status_code = 400
    code = "validation_error"


class Unauthorized(OutdialError):
    status_code = 401
    code = "unauthorized"


class InsufficientCredits(OutdialError):
    status_code = 402
    code = "insufficient_credits"


class Forbidden(OutdialError):
    status_code = 403
    code = "forbidden"


class NotFound(OutdialError):
    status_code = 404
    code = "not_found"


class Conflict(OutdialError):
    status_code = 409
    code = "conflict"


class Unprocessable(OutdialError):
    status_code = 422
    code = "unprocessable"


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


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


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for the error statuses a route can answer (all as ErrorResponse).

    A route that takes input gets 400 documented by itself (see below), unless it declares
    422: FastAPI then skips its own validation entry, so such a route lists 400 too."""
    return {
        status: {"model": ErrorResponse, "description": _ERROR_DESCRIPTIONS[status]}
        for status in statuses
    }


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    details = []
    for err in exc.errors():
        loc = [part for part in err.get("loc", ()) if part != "body"]
        message = err.get("msg", "").removeprefix("Value error, ")
        details.append({"loc": loc, "message": message, "type": err.get("type", "")})
    return details


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

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(exc)
        fields = ", ".join(".".join(str(p) for p in d["loc"]) or "body" for d in details)
        return JSONResponse(
            error_body("validation_error", f"Invalid request: {fields}.", details), 400
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}
        code = codes.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, headers=exc.headers)
