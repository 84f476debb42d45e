"""The one error base: every error the services raise carries its HTTP status and the
contract's snake_case code (`error_handlers.py` renders them as the contract's error JSON).
No web framework here: the dialer and the CLI raise these too."""

from typing import Any


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
