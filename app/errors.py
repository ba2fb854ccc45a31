"""The server's one error shape, `{"error": {"message", "type", "param", "code"}}`, and the input error that maps to it."""

from __future__ import annotations

from fastapi.responses import JSONResponse


class InputError(ValueError):
    """A request that breaks a limit or the media policy: 400 (or the given status), naming the field."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.param, self.status = param, status


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
    body = {"error": {"message": _printable(message), "type": type_, "param": _printable(param), "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)
