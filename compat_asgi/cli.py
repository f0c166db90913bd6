"""``compat-asgi``: a thin command line over :func:`create_app` and uvicorn."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from compat_asgi.middleware import CompatMiddleware
from compat_asgi.upstream import DEFAULT_TIMEOUT

__all__ = ["main", "create_app", "serve"]


def create_app(
    *,
    upstream: str | None = None,
    upstream_key: str | None = None,
    upstream_timeout: float = DEFAULT_TIMEOUT,
) -> CompatMiddleware:
    """The app ``compat-asgi serve`` runs: the demo backend, or a proxy to ``upstream``."""
    if upstream is None:
        from compat_asgi.demo import DemoChatApp

        return CompatMiddleware(DemoChatApp())
    return CompatMiddleware(
        upstream=upstream, upstream_key=upstream_key, upstream_timeout=upstream_timeout
    )


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    upstream: str | None = None,
    upstream_key: str | None = None,
    upstream_timeout: float = DEFAULT_TIMEOUT,
    log_level: str = "info",
) -> None:
    import uvicorn  # imported here so that importing compat_asgi stays light

    app = create_app(upstream=upstream, upstream_key=upstream_key, upstream_timeout=upstream_timeout)
    uvicorn.run(app, host=host, port=port, log_level=log_level, lifespan="on")


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
        "--upstream",
        metavar="URL",
        help="chat-completions server to translate for, e.g. http://127.0.0.1:8080/v1",
    )
    run.add_argument("--upstream-key", metavar="KEY", help="bearer key sent to the upstream")
    run.add_argument(
        "--upstream-timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="longest upstream silence tolerated (default: %(default)s)",
    )
    run.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        if args.upstream_timeout <= 0:
            print("compat-asgi: --upstream-timeout must be positive", file=sys.stderr)
            return 2
        try:
            serve(
                host=args.host,
                port=args.port,
                upstream=args.upstream,
                upstream_key=args.upstream_key,
                upstream_timeout=args.upstream_timeout,
                log_level=args.log_level,
            )
        except ValueError as exc:
            print(f"compat-asgi: {exc}", file=sys.stderr)
            return 2
    return 0
