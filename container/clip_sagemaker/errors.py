"""The one error type the API answers with, and how it is rendered.

Every client mistake is raised as an ApiError carrying its HTTP status, a stable machine-readable code, a
message for people, and where it happened (a field path such as `images[2]`). app.py renders each one as
`{"error": {"code", "message", "field"?}}`; anything else that escapes is our bug and becomes a generic 500.
"""
from __future__ import annotations

import re
from typing import Any, Optional

# `<_io.BytesIO object at 0x7fe6...>` inside a library's message: meaningless to a client, and it leaks
# memory addresses.
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


class ApiError(Exception):
    status = 400

    def __init__(self, message: str, code: str = "invalid_request", field: Optional[str] = None,
                 status: Optional[int] = None):
        message = _OBJECT_REPR.sub("the data", message)
        super().__init__(message)
        self.message = message
        self.code = code
        self.field = field
        if status is not None:
            self.status = status

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


def invalid(field: str, message: str, code: str = "invalid_field") -> ApiError:
    return ApiError(f"{field}: {message}", code=code, field=field)


def internal_error() -> ApiError:
    """A bug of ours, told to the client without details: those are in the log, under the request id."""
    return ApiError("internal server error; the request id in X-Request-Id identifies it in the logs",
                    code="internal_error", status=500)


class Unavailable(ApiError):
    """503: the service cannot answer now (still loading, overloaded, or past its deadline)."""
    status = 503

    def __init__(self, message: str, code: str):
        super().__init__(message, code=code)
