"""The server's one error shape, `{"error": {"message", "type", "param", "code"}}`, and the errors that map to it."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field


class ErrorInfo(BaseModel):
    message: str = Field(..., description="What is wrong, naming the field and, for limits, the numbers.")
    type: str = Field(..., description="invalid_request_error, authentication_error, overloaded, timeout, ...")
    param: str | None = Field(None, description="The offending field, e.g. 'items[3].images[0]'.")
    code: int = Field(..., description="The HTTP status.")


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx answer of every route."""

    error: ErrorInfo


class InputError(ValueError):
    """A request that breaks a limit or the media policy: 400 (or the given status), naming the field."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.param, self.status = param, status


class EngineError(RuntimeError):
    """The backend failed to generate (an engine crash, an error from the engine behind): a 500 server_error."""


def _printable(text: str | None) -> str | None:
    # Messages can quote the request (field names, ids); a lone surrogate there would make the answer unencodable.
    return None if text is None else text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_response(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    info = ErrorInfo(message=_printable(message) or "", type=type_, param=_printable(param), code=status)
    return JSONResponse(ErrorResponse(error=info).model_dump(mode="json"), status_code=status, headers=headers)
