from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    details = []
    for err in exc.errors():
        loc = [part for part in err.get("loc", ()) if part != "body"]
        message = err.get("msg", "").removeprefix("Value error, ")
        details.append({"loc": loc, "message": message, "type": err.get("type", "")})
    return details


def install_error_handlers(app: FastAPI) -> None:
    """Render every error, ours or the framework's, as the contract's error JSON."""

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
