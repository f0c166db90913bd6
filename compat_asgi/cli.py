"""``compat-asgi``: a thin command line over :func:`create_app` and uvicorn."""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, Literal

from compat_asgi.config import load_config
from compat_asgi.idempotency import DEFAULT_WINDOW
from compat_asgi.middleware import CompatMiddleware
from compat_asgi.observability import ACCESS_LOGGER
from compat_asgi.settings import DEFAULT_MAX_CONCURRENT
from compat_asgi.types import ASGIApp
from compat_asgi.upstream import DEFAULT_TIMEOUT, HTTPClientName

__all__ = ["main", "create_app", "serve", "default_store_url"]


def default_store_url() -> str:
    """SQLite under the user's state directory: survives restarts, no setup."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return "sqlite:///" + os.path.abspath(os.path.join(base, "compat-asgi", "responses.db"))


def create_app(
    *,
    config: str | None = None,
    upstream: str | None = None,
    upstream_api: Literal["chat", "responses"] = "chat",
    demo: Literal["chat", "responses"] = "chat",
    store: str | None = None,
    upstream_key: str | None = None,
    upstream_timeout: float = DEFAULT_TIMEOUT,
    api_keys: Sequence[str] = (),
    cors_origins: Sequence[str] = (),
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT,
    think_tags: bool = False,
    drop_unsupported_tools: bool = False,
    strict: bool = False,
    reasoning_key: str | None = None,
    log_format: Literal["json", "text"] | None = None,
    metrics: bool = False,
    idempotency_window: float = DEFAULT_WINDOW,
    http_client: HTTPClientName = "auto",
) -> ASGIApp:
    """The app ``compat-asgi serve`` runs: the demo backend, or a proxy to ``upstream``."""
    backend: ASGIApp | None = None
    routing = load_config(config) if config is not None else None
    if routing is not None and upstream is not None:
        raise ValueError("give --config or --upstream, not both")
    if upstream is None and routing is None:
        from compat_asgi.demo import DemoChatApp

        backend = DemoChatApp()
        upstream_api = demo
        if demo == "responses":
            # A Responses backend to put the chat API in front of: the demo
            # itself, made to speak Responses by an inner middleware.
            backend = CompatMiddleware(backend, store="memory")
    app: ASGIApp = CompatMiddleware(
        backend,
        upstream=upstream,
        upstream_api=upstream_api,
        config=routing,
        store=store,
        upstream_key=upstream_key,
        upstream_timeout=upstream_timeout,
        api_keys=api_keys,
        max_concurrent_requests=max_concurrent_requests,
        think_tags=think_tags,
        drop_unsupported_tools=drop_unsupported_tools,
        strict=strict,
        reasoning_key=reasoning_key,
        health=True,
        access_log=log_format,
        metrics=metrics,
        idempotency_window=idempotency_window,
        upstream_http_client=http_client,
    )
    if cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app = CORSMiddleware(
            app,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["*"],
        )
    return app


def serve(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    authenticated: bool = False,
    allow_public_without_key: bool = False,
    loop: Literal["auto", "asyncio", "uvloop"] = "auto",
    http: Literal["auto", "h11", "httptools"] = "auto",
) -> None:
    """Run ``app`` (see :func:`create_app`) under uvicorn. Refuses to expose an
    unauthenticated server beyond loopback unless ``allow_public_without_key``.

    ``loop``/``http`` ``auto``: uvloop and httptools when importable
    (``compat-asgi[fast]``), else asyncio and h11."""
    _check_exposure(host, authenticated, allow_public_without_key)
    import uvicorn  # imported here so that importing compat_asgi stays light

    release_large_blocks()

    # Our access log replaces uvicorn's: one line per request, with model and timings.
    uvicorn.run(
        app, host=host, port=port, log_level=log_level, lifespan="on", access_log=False, loop=loop, http=http
    )


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
LARGE_BLOCK = 128 << 10  # bytes: glibc's initial mmap threshold, kept fixed by serve


def release_large_blocks() -> bool:
    """Keep glibc giving each block of 128 KiB or more its own mapping, which
    goes back to the system when freed. By default glibc raises that
    threshold (up to 32 MiB) the first time such a block is freed; from then
    on the transient copies of long answers come from the heap, whose pages
    the process keeps: a server's RSS creeps up answer after answer.

    The serving process calls it once at start (``MALLOC_MMAP_THRESHOLD_`` in
    the environment, glibc's own setting, takes precedence). False where it
    does nothing: another C library, or the variable is set."""
    import ctypes
    import platform

    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is not None or platform.libc_ver()[0] != "glibc":
        return False
    try:
        return bool(ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, LARGE_BLOCK))
    except (OSError, AttributeError):
        return False


def log_access_to_stderr(log_level: str = "info") -> None:
    """Give the ``compat_asgi.access`` logger a stderr handler, as uvicorn does for
    its own loggers: without one, Python drops INFO records and a user of
    ``compat-asgi serve`` sees no request at all, not even the 400s. Lines are
    written as the access log formats them (text or JSON, client bytes escaped).
    ``log_level`` above ``info`` silences them, like uvicorn's access log."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(getattr(handler, _OURS, False) for handler in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        setattr(handler, _OURS, True)
        logger.addHandler(handler)
    logger.setLevel(log_level.upper())
    # Root handlers (uvicorn's, an application's) would print each line twice.
    logger.propagate = False


_OPTIONS_ENV = "COMPAT_ASGI_APP_OPTIONS"
# Marks the handler log_access_to_stderr added, so a second call adds none.
_OURS = "_compat_asgi_stderr"


def app_from_environment() -> ASGIApp:
    """The app of one worker process: :func:`create_app` with the options the
    parent put in the environment (uvicorn workers import their app by name)."""
    release_large_blocks()
    options = json.loads(os.environ[_OPTIONS_ENV])
    log_level = options.pop("log_level", "info")
    if options.get("log_format") is not None:
        log_access_to_stderr(log_level)
    return create_app(**options)


def _serve_workers(options: dict[str, Any], args: argparse.Namespace) -> None:
    import uvicorn

    os.environ[_OPTIONS_ENV] = json.dumps({**options, "log_level": args.log_level})
    uvicorn.run(
        "compat_asgi.cli:app_from_environment",
        factory=True,
        workers=args.workers,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        lifespan="on",
        access_log=False,
        loop=args.loop,
        http=args.http,
    )


def _check_exposure(host: str, authenticated: bool, allowed: bool) -> None:
    if not authenticated and not _is_loopback(host) and not allowed:
        raise ValueError(
            f"refusing to serve on {host} without --api-key; "
            "pass --allow-public-without-key if that is really intended"
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="compat-asgi",
        description="Serve the OpenAI Responses API over a chat-completions backend.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "serve",
        help="run the HTTP server (the embedded demo backend unless --upstream is given)",
    )
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument(
        "--config",
        metavar="FILE",
        help="TOML routing config: several upstreams, models mapped onto them",
    )
    run.add_argument(
        "--upstream",
        metavar="URL",
        help="chat-completions server to translate for, e.g. http://127.0.0.1:8080/v1",
    )
    run.add_argument("--upstream-key", metavar="KEY", help="bearer key sent to the upstream")
    run.add_argument(
        "--http-client",
        choices=["auto", "httpx", "aiohttp"],
        default="auto",
        help="transport of the upstream client: aiohttp's C parser under httpx (needs "
        "compat-asgi[fast]) or httpx's own; auto picks aiohttp when installed (default: %(default)s)",
    )
    run.add_argument(
        "--upstream-api",
        choices=["chat", "responses"],
        default="chat",
        help="what the upstream speaks; the other API is translated (default: %(default)s)",
    )
    run.add_argument(
        "--demo",
        choices=["chat", "responses"],
        default="chat",
        help="without --upstream: the embedded demo speaks this API (default: %(default)s)",
    )
    run.add_argument(
        "--store",
        metavar="URL",
        help="response store: memory[://?max_bytes=N], sqlite:///PATH or redis://HOST:PORT/DB "
        "(also rediss://, unix://, redis+sentinel://, redis+cluster://; needs compat-asgi[redis]) "
        "(default: SQLite under $XDG_STATE_HOME/compat-asgi)",
    )
    run.add_argument(
        "--upstream-timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="longest upstream silence tolerated (default: %(default)s)",
    )
    run.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY",
        help="require this bearer key from clients (repeatable)",
    )
    run.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow browser requests from this origin (repeatable)",
    )
    run.add_argument(
        "--max-concurrent",
        type=int,
        default=DEFAULT_MAX_CONCURRENT,
        metavar="N",
        help="requests in flight to the upstream before 503 (default: %(default)s)",
    )
    run.add_argument(
        "--think-tags",
        action="store_true",
        help="the backend writes reasoning as <think>...</think>: make it a reasoning item",
    )
    run.add_argument(
        "--strict",
        action="store_true",
        help="refuse (400) request fields, items and tools the server cannot use, as OpenAI "
        "does for unknown ones; by default they are ignored and named in x-compat-ignored",
    )
    run.add_argument(
        "--drop-unsupported-tools",
        action="store_true",
        help="with --strict: still leave hosted tools (web_search, ...) out instead of refusing",
    )
    run.add_argument(
        "--reasoning-key",
        metavar="KEY",
        default=os.environ.get("COMPAT_REASONING_KEY"),
        help="key that seals reasoning.encrypted_content; share it between workers "
        "(default: $COMPAT_REASONING_KEY, else random per process)",
    )
    run.add_argument(
        "--allow-public-without-key",
        action="store_true",
        help="allow a non-loopback --host without --api-key",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes; share state with a SQLite or Redis --store (default: 1)",
    )
    run.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="event loop; auto: uvloop when installed (compat-asgi[fast]) (default: %(default)s)",
    )
    run.add_argument(
        "--http",
        choices=["auto", "h11", "httptools"],
        default="auto",
        help="HTTP/1.1 parser of the server; auto: httptools when installed (default: %(default)s)",
    )
    run.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    run.add_argument(
        "--access-log",
        dest="access_log",
        default="text",
        choices=["text", "json", "off"],
        help="one line per request to stderr, as text or JSON (default: %(default)s)",
    )
    # The flag's first name, kept so existing command lines keep working.
    run.add_argument("--log-format", dest="access_log", choices=["text", "json"], help=argparse.SUPPRESS)
    run.add_argument(
        "--metrics",
        action="store_true",
        help="serve Prometheus metrics at /metrics (needs compat-asgi[metrics])",
    )
    run.add_argument(
        "--idempotency-window",
        type=float,
        default=DEFAULT_WINDOW,
        metavar="SECONDS",
        help="how long an Idempotency-Key replays its first answer; 0 turns it off "
        "(default: %(default)s)",
    )
    check = commands.add_parser(
        "conformance",
        help="score an OpenAI-compatible endpoint against the protocol rules",
    )
    check.add_argument(
        "--base-url",
        action="append",
        metavar="URL",
        help="e.g. http://127.0.0.1:8000/v1; give it several times to compare servers side by side",
    )
    check.add_argument("--name", action="append", default=[], metavar="NAME",
                       help="a label for each --base-url, in order (e.g. 'llama-server b4500')")
    check.add_argument("--suite", choices=["openresponses", "ours", "all"], default="all",
                       help="the public OpenResponses suite's cases, ours, or both (default: %(default)s)")
    check.add_argument("--client", action="append", default=[], choices=["codex"],
                       help="also replay a real client's captured requests")
    check.add_argument("--list", action="store_true", help="list the cases, what each asserts, and exit")
    check.add_argument("--file-search-vector-store-id", metavar="ID",
                       help="run the optional file-search case against this vector store (skipped without it)")
    check.add_argument("--enable-offline-web-search", action="store_true",
                       help="run the optional offline-web-search case (skipped without it)")
    check.add_argument("--html", metavar="PATH", help="also write a static HTML report")
    check.add_argument("--model", metavar="M", help="default: the first model GET /models lists")
    check.add_argument(
        "--api", choices=["responses", "chat", "both"], default="both", help="default: %(default)s"
    )
    check.add_argument("--api-key", metavar="K", help="bearer key sent to the server")
    check.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    check.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="per request, body included (default: %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "conformance" and not args.base_url and not args.list:
        parser.error("conformance: --base-url is required (give it several times to compare servers)")
    if args.command == "conformance":
        from compat_asgi.conformance.command import main as conformance

        return conformance(
            base_url=args.base_url,
            model=args.model,
            api=args.api,
            api_key=args.api_key,
            json_path=args.json,
            timeout=args.timeout,
            suite=args.suite,
            clients=args.client,
            html_path=args.html,
            names=args.name,
            list_only=args.list,
            file_search_vector_store_id=args.file_search_vector_store_id,
            offline_web_search=args.enable_offline_web_search,
        )
    if args.command == "serve":
        if args.upstream_timeout <= 0 or args.max_concurrent <= 0 or args.workers <= 0:
            print("compat-asgi: timeouts and limits must be positive", file=sys.stderr)
            return 2
        try:
            # Before create_app, which may open the store: a refusal leaves nothing behind.
            _check_exposure(args.host, bool(args.api_key), args.allow_public_without_key)
            options = {
                "config": args.config,
                "upstream": args.upstream,
                "upstream_api": args.upstream_api,
                "demo": args.demo,
                "store": args.store or default_store_url(),
                "upstream_key": args.upstream_key,
                "upstream_timeout": args.upstream_timeout,
                "api_keys": args.api_key,
                "cors_origins": args.cors_origin,
                "max_concurrent_requests": args.max_concurrent,
                "think_tags": args.think_tags,
                "drop_unsupported_tools": args.drop_unsupported_tools,
                "strict": args.strict,
                # Workers must agree on the seal, or reasoning sent back to another is refused.
                "reasoning_key": args.reasoning_key or (os.urandom(32).hex() if args.workers > 1 else None),
                "log_format": None if args.access_log == "off" else args.access_log,
                "metrics": args.metrics,
                "idempotency_window": args.idempotency_window,
                "http_client": args.http_client,
            }
            app = create_app(**options)  # validates everything once, before any worker starts
            if args.workers > 1 and str(options["store"]).startswith("memory"):
                raise ValueError("--store memory is per process; give workers a sqlite or redis store")
            if args.workers > 1:
                _serve_workers(options, args)
            else:
                if options["log_format"] is not None:
                    log_access_to_stderr(args.log_level)
                serve(
                    app,
                    host=args.host,
                    port=args.port,
                    log_level=args.log_level,
                    authenticated=bool(args.api_key),
                    allow_public_without_key=args.allow_public_without_key,
                    loop=args.loop,
                    http=args.http,
                )
        except (ValueError, ImportError) as exc:
            print(f"compat-asgi: {exc}", file=sys.stderr)
            return 2
    return 0
