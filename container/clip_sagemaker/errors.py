"""The one error type the API answers with, and how it is rendered.

Every client mistake is raised as an ApiError carrying its HTTP status, a stable machine-readable code, a
message for people, and where it happened (a field path such as `images[2]`). app.py renders each one as
`{"error": {"code", "message", "field"?}}`; anything else that escapes is our bug and becomes a generic 500.

Two integrations' clients read errors in their own shape, so their routes render the same errors in that
shape (`render`, by the request's error style): OpenAI's clients read `error.message`, `type`, `param` and
`code` (our body plus `type` and `param`); Weaviate's CLIP module reads `{"error": "<message>"}`.
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
                 status: Optional[int] = None, details: Optional[dict[str, Any]] = None):
        """`details`: figures a program may act on (the memory a model needs and the memory available)."""
        message = _OBJECT_REPR.sub("the data", message)
        super().__init__(message)
        self.message = message
        self.code = code
        self.field = field
        self.details = details or {}
        if status is not None:
            self.status = status

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": {**error, **self.details}}

    def openai_body(self) -> dict[str, Any]:
        body = self.body()
        # OpenAI's two error types: the client's mistake, or the server's trouble (which a client may retry).
        body["error"].update(type="invalid_request_error" if self.status < 500 else "server_error", param=self.field)
        return body

    def message_body(self) -> dict[str, Any]:
        return {"error": self.message}


DEFAULT_STYLE, OPENAI_STYLE, WEAVIATE_STYLE = "default", "openai", "weaviate"
_RENDERERS = {DEFAULT_STYLE: ApiError.body, OPENAI_STYLE: ApiError.openai_body, WEAVIATE_STYLE: ApiError.message_body}


def render(error: ApiError, style: Optional[str]) -> dict[str, Any]:
    """The error's body in the style of the route that raised it (DEFAULT_STYLE when None)."""
    return _RENDERERS[style or DEFAULT_STYLE](error)


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
