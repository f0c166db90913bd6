"""One exception hierarchy for everything the middleware can refuse or fail on.

Each error knows the HTTP status, the OpenAI error ``type``, ``code`` and
``param`` it becomes; the shell turns it into a JSON envelope (before the
response started) or into ``error`` + ``response.failed`` events (after).
This module is pure: the sans-io core raises these too.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = [
    "CompatError",
    "InvalidRequest",
    "NotFound",
    "Unauthorized",
    "ServerBusy",
    "MethodNotAllowed",
    "UnsupportedMediaType",
    "Conflict",
    "RequestTooLarge",
    "RequestTimeout",
    "URITooLong",
    "InternalError",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamStatusError",
    "UpstreamProtocolError",
    "LineTooLong",
]


class CompatError(Exception):
    """Base of every error compat_asgi raises on purpose."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers: list[tuple[bytes, bytes]] = headers or []

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI error envelope: ``{"error": {message, type, param, code}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


class InvalidRequest(CompatError):
    """The client's request is malformed or names something unsupported (400)."""

    status = 400
    type = "invalid_request_error"


class NotFound(CompatError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class Unauthorized(CompatError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class ServerBusy(CompatError):
    """Past the configured number of concurrent upstream requests (503 + Retry-After)."""

    status = 503
    type = "server_error"
    code = "server_busy"


class UnsupportedMediaType(CompatError):
    """A request body in a Content-Encoding this server cannot decode (415)."""

    status = 415
    type = "invalid_request_error"
    code = "unsupported_content_encoding"


class Conflict(CompatError):
    """A request that contradicts an earlier one, e.g. a reused Idempotency-Key (422)."""

    status = 422
    type = "invalid_request_error"
    code = "idempotency_key_reused"


class MethodNotAllowed(CompatError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RequestTooLarge(CompatError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RequestTimeout(CompatError):
    """The client did not finish sending its request body in time (408)."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class URITooLong(CompatError):
    status = 414
    type = "invalid_request_error"
    code = "uri_too_long"


class InternalError(CompatError):
    """A bug in this server, not the upstream's fault nor the client's (500)."""

    status = 500
    type = "server_error"
    code = "internal_error"


class UpstreamError(CompatError):
    """The upstream could not be reached or misbehaved (502)."""

    status = 502
    type = "server_error"
    code: str | None = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamProtocolError(UpstreamError):
    """The upstream answered with something that is not the protocol it claims."""

    code = "upstream_protocol_error"


class LineTooLong(UpstreamProtocolError):
    """One SSE line from the upstream exceeded the configured limit."""

    code = "upstream_line_too_long"


class UpstreamStatusError(UpstreamError):
    """The upstream answered with an HTTP error; its envelope is carried through.

    4xx keep their status (the client's request was at fault); 5xx become 502
    except 503, which keeps its status and ``Retry-After``.
    """

    def __init__(
        self,
        upstream_status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        if upstream_status < 500 or upstream_status == 503:
            status = upstream_status
        else:
            status = 502
        super().__init__(message, param=param, status=status, headers=headers)
        self.upstream_status = upstream_status
        # The upstream's own code, or none for its 4xx: the client's request was at fault.
        if code is not None or status < 500:
            self.code = code
        if type is not None:
            self.type = type
        elif upstream_status < 500:
            self.type = "invalid_request_error"
