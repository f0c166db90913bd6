"""Per-request operations: one access-log line and Prometheus metrics.

The middleware fills a :class:`RequestRecord` as a request goes along and hands
it to :class:`AccessLog` and :class:`Metrics` once at the start and once at the
end; nothing here runs per body chunk or per stream event.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import orjson

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["RequestRecord", "AccessLog", "Metrics", "path_template", "log_safe", "ACCESS_LOGGER"]

#: The logger access lines go to unless another is given.
ACCESS_LOGGER = "compat_asgi.access"


@dataclass(slots=True)
class RequestRecord:
    """What one request did, filled in by the middleware as it learns it.

    ``path`` is the path as routed (below ``root_path``), without the query
    string, which may carry secrets. Times are ``time.perf_counter()`` values.
    """

    request_id: str
    method: str
    path: str
    model: str | None = None
    upstream: str | None = None
    mode: str = "local"
    status: int = 0
    stream: bool = False
    error: str | None = None
    ignored: tuple[str, ...] = ()  # request fields/tools/items accepted but left unused
    started: float = 0.0
    first_byte: float | None = None
    finished: float | None = None

    @property
    def ttfb_ms(self) -> float | None:
        if self.first_byte is None:
            return None
        return (self.first_byte - self.started) * 1000.0

    @property
    def duration_ms(self) -> float | None:
        if self.finished is None:
            return None
        return (self.finished - self.started) * 1000.0


# -- access log ---------------------------------------------------------------

# Paths arrive percent-decoded, so a client can put a newline or a quote in one;
# such values are quoted and escaped so one request stays one parseable line.
# orjson escapes only C0 controls, '"' and '\\'; these it leaves raw, yet
# terminals act on them (DEL, C1 controls such as U+009B, the 8-bit CSI) or log
# viewers break lines or reorder text on them (U+2028/2029, bidi controls).
_UNSAFE = [*range(0x7F, 0xA0), 0x2028, 0x2029, *range(0x200E, 0x2010), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_ESCAPES = str.maketrans({code: f"\\u{code:04x}" for code in _UNSAFE})
_NEEDS_QUOTES = re.compile(
    r'[\s"=\\\x00-\x1f' + "".join(re.escape(chr(code)) for code in _UNSAFE) + "]"
)


def log_safe(value: str) -> str:
    """``value`` as a JSON string literal with every control and line or text
    direction character escaped: one client-supplied value, one log token."""
    return orjson.dumps(value).decode().translate(_ESCAPES)


def _text_value(value: str | None) -> str:
    if value is None:
        return "-"
    if value and not _NEEDS_QUOTES.search(value):
        return value
    return log_safe(value)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


class AccessLog:
    """Writes one INFO line per request to ``compat_asgi.access`` (or ``logger``).

    ``fmt="json"`` gives one JSON object per line for log pipelines; ``"text"``
    gives ``POST /v1/responses 200 translated model=... id=...`` for people.
    """

    __slots__ = ("fmt", "logger")

    def __init__(
        self, fmt: Literal["json", "text"] = "text", logger: logging.Logger | None = None
    ) -> None:
        if fmt not in ("json", "text"):
            raise ValueError(f"fmt must be 'json' or 'text', not {fmt!r}")
        self.fmt = fmt
        self.logger = logger if logger is not None else logging.getLogger(ACCESS_LOGGER)

    def emit(self, record: RequestRecord) -> None:
        # Building the line costs more than the check; most deployments that
        # silence access logs do it by level.
        if not self.logger.isEnabledFor(logging.INFO):
            return
        line = self._json(record) if self.fmt == "json" else self._text(record)
        # No args: the line is never %-formatted, so a '%' in a path is harmless.
        self.logger.info(line)

    @staticmethod
    def _json(record: RequestRecord) -> str:
        return orjson.dumps(
            {
                "request_id": record.request_id,
                "method": record.method,
                "path": record.path,
                "model": record.model,
                "upstream": record.upstream,
                "mode": record.mode,
                "status": record.status,
                "stream": record.stream,
                "error": record.error,
                "ignored": list(record.ignored),
                "ttfb_ms": _ms(record.ttfb_ms),
                "duration_ms": _ms(record.duration_ms),
            }
        ).decode().translate(_ESCAPES)

    @staticmethod
    def _text(record: RequestRecord) -> str:
        ttfb, duration = _ms(record.ttfb_ms), _ms(record.duration_ms)
        parts = [
            _text_value(record.method),
            _text_value(record.path),
            str(record.status),
            _text_value(record.mode),
            f"model={_text_value(record.model)}",
            f"upstream={_text_value(record.upstream)}",
            "ttfb=-" if ttfb is None else f"ttfb={ttfb}ms",
            "dur=-" if duration is None else f"dur={duration}ms",
        ]
        # Only failed requests carry an error, so successful lines stay short.
        if record.error is not None:
            parts.append(f"error={_text_value(record.error)}")
        # Names the client sent that the server accepted but did not use
        # (client bytes: escaped like any other value).
        if record.ignored:
            parts.append(f"ignored={_text_value(','.join(record.ignored))}")
        parts.append(f"id={_text_value(record.request_id)}")
        return " ".join(parts)


# -- path templates -----------------------------------------------------------

_ID = "{id}"
_REST = "{id...}"  # one or more segments: Hugging Face model ids contain "/"
# Literal routes come before the id patterns they would otherwise match.
_TEMPLATES: tuple[tuple[str, ...], ...] = (
    ("responses",),
    ("responses", "input_tokens"),
    ("responses", "compact"),
    ("responses", _ID),
    ("responses", _ID, "input_items"),
    ("responses", _ID, "cancel"),
    ("conversations",),
    ("conversations", _ID),
    ("conversations", _ID, "items"),
    ("conversations", _ID, "items", _ID),
    ("chat", "completions"),
    ("chat", "completions", _ID),
    ("chat", "completions", _ID, "messages"),
    ("models",),
    ("models", _REST),
    ("completions",),
    ("embeddings",),
)


def _match(template: tuple[str, ...], parts: list[str]) -> bool:
    for index, expected in enumerate(template):
        if expected == _REST:
            return len(parts) > index and all(parts[index:])
        if index >= len(parts):
            return False
        if expected == _ID:
            if not parts[index]:
                return False
        elif parts[index] != expected:
            return False
    return len(parts) == len(template)


def path_template(path: str, prefix: str = "/v1") -> str:
    """``path`` with its ids replaced, for a metric label: a known route under
    ``prefix`` (``/v1/responses/{id}/input_items``) or ``"other"``, so clients
    cannot grow the number of time series by requesting new paths."""
    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
    if not path.startswith(prefix + "/"):
        return "other"
    parts = path[len(prefix) + 1 :].split("/")
    for template in _TEMPLATES:
        if _match(template, parts):
            shown = (_ID if segment == _REST else segment for segment in template)
            return prefix + "/" + "/".join(shown)
    return "other"


# -- metrics ------------------------------------------------------------------

# The classic text format; generate_latest writes it for names like ours, and
# prometheus_client's own CONTENT_TYPE_LATEST differs between its versions.
_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
# Methods are whatever the client sent; only the standard ones get a series.
# "WS": one turn (response.create) of a Responses WebSocket.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "WS"})
_MODES = frozenset({"translated", "passthrough", "local", "app"})
# Upstream error codes are passed through, so an upstream could invent any
# number of them; past this many distinct kinds, new ones count as "other".
MAX_ERROR_KINDS = 64
_ERROR_KIND = re.compile(r"[a-z][a-z0-9_.\-]{0,63}")
# Model calls run from well under a second to minutes, past the default buckets.
_TTFB_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class Metrics:
    """Prometheus metrics; needs the optional prometheus_client package.

    Each instance registers in its own ``CollectorRegistry`` unless given one,
    so several middlewares (or tests) in one process do not collide. ``prefix``
    is the middleware's API prefix, used to template path labels.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, prefix: str = "/v1") -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError as exc:
            raise ImportError(
                "compat_asgi.observability.Metrics needs prometheus_client: "
                "pip install compat-asgi[metrics]"
            ) from exc
        self.registry = registry if registry is not None else CollectorRegistry()
        self.prefix = prefix
        self._requests = Counter(
            "compat_asgi_requests",
            "Requests answered, by method, path template, mode and status.",
            ["method", "path", "mode", "status"],
            registry=self.registry,
        )
        self._errors = Counter(
            "compat_asgi_errors",
            "Failed requests, by error code.",
            ["kind"],
            registry=self.registry,
        )
        self._active = Gauge(
            "compat_asgi_active_requests", "Requests in progress.", registry=self.registry
        )
        self._active_streams = Gauge(
            "compat_asgi_active_streams", "Streaming responses in progress.", registry=self.registry
        )
        self._ttfb = Histogram(
            "compat_asgi_ttfb_seconds",
            "Time from request start to the first response body byte.",
            ["mode"],
            buckets=_TTFB_BUCKETS,
            registry=self.registry,
        )
        self._duration = Histogram(
            "compat_asgi_duration_seconds",
            "Time from request start to the end of the response.",
            ["mode"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        # What started() counted for each live record, so finished() undoes
        # exactly that even if record.stream changed in between (the body, and
        # with it "stream", is read after the request starts) or a record is
        # finished twice or never started.
        self._open: dict[int, bool] = {}
        self._kinds: set[str] = set()

    def started(self, record: RequestRecord) -> None:
        if id(record) in self._open:
            return
        self._open[id(record)] = record.stream
        self._active.inc()
        if record.stream:
            self._active_streams.inc()

    def finished(self, record: RequestRecord) -> None:
        streamed = self._open.pop(id(record), None)
        if streamed is not None:
            self._active.dec()
            if streamed:
                self._active_streams.dec()
        mode = record.mode if record.mode in _MODES else "other"
        self._requests.labels(
            record.method if record.method in _METHODS else "other",
            path_template(record.path, self.prefix),
            mode,
            str(record.status),
        ).inc()
        if record.error is not None:
            self._errors.labels(self._error_kind(record.error)).inc()
        ttfb = record.ttfb_ms
        if ttfb is not None:
            self._ttfb.labels(mode).observe(ttfb / 1000.0)
        duration = record.duration_ms
        if duration is not None:
            self._duration.labels(mode).observe(duration / 1000.0)

    def render(self) -> tuple[bytes, bytes]:
        """``(content-type, body)`` for a ``/metrics`` response."""
        from prometheus_client import generate_latest

        return _CONTENT_TYPE, generate_latest(self.registry)

    def _error_kind(self, error: str) -> str:
        if error in self._kinds:
            return error
        if len(self._kinds) >= MAX_ERROR_KINDS or not _ERROR_KIND.fullmatch(error):
            return "other"
        self._kinds.add(error)
        return error
