"""Run one benchmark server under uvicorn: ``python -m benchmarks.serve KIND --port N``.

KIND is ``upstream`` (the fast chat-stream app of :mod:`benchmarks.chatstream`),
``bigtext`` (a chat app whose answer is as long as its model name says, see
:mod:`benchmarks.memory`) or ``middleware`` (what ``compat-asgi serve --upstream URL`` runs, built by
:func:`compat_asgi.cli.create_app`, without a response store). Both use the
same uvicorn settings (by default the asyncio loop and h11, which every
install has; ``--loop uvloop --http httptools`` for uvicorn[standard]; no
access log), so a comparison measures the app, not the server configuration. ``--profile PATH`` runs the server under cProfile and
writes the stats to PATH when it shuts down (SIGINT or SIGTERM).
"""

from __future__ import annotations

import argparse
import cProfile
from typing import Any

import uvicorn


def build(
    kind: str, upstream: str | None, http_client: Any = "auto", store: str | None = None, slow_path: bool = False
) -> Any:
    if kind == "upstream":
        from benchmarks.chatstream import app

        return app
    if kind == "bigtext":
        from benchmarks.memory import big_answer_app

        return big_answer_app
    from compat_asgi.cli import create_app, release_large_blocks

    if not upstream:
        raise SystemExit("middleware needs --upstream URL")
    release_large_blocks()  # as compat-asgi serve does
    if slow_path:  # the before of the core's byte-level fast path, for a comparison in one run
        from functools import partial

        from compat_asgi.endpoints import responses

        responses.ChatToResponses = partial(responses.ChatToResponses, fast=False)  # type: ignore[misc]
    return create_app(upstream=upstream, http_client=http_client, store=store)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve")
    parser.add_argument("kind", choices=["upstream", "bigtext", "middleware"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", metavar="URL")
    parser.add_argument("--profile", metavar="PATH")
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    parser.add_argument("--http", default="h11", choices=["h11", "httptools"])
    parser.add_argument("--http-client", default="auto", choices=["auto", "httpx", "aiohttp"])
    parser.add_argument("--store", metavar="URL", help="middleware: a response store (default: none)")
    parser.add_argument("--slow-path", action="store_true", help="middleware: the core's byte-level fast path off")
    args = parser.parse_args()
    app = build(args.kind, args.upstream, args.http_client, args.store, args.slow_path)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=args.port,
        loop=args.loop,
        http=args.http,
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=3,
    )
    server = uvicorn.Server(config)
    if not args.profile:
        server.run()
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        server.run()
    finally:
        profiler.disable()
        profiler.dump_stats(args.profile)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT we stop it with, after a clean shutdown
        pass
