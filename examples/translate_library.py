"""Responses API events from a chat-completions server, with no middleware.

``compat_asgi.translate`` is the pure core of the middleware: request mapping
and the incremental stream translator, no I/O. Here an ``httpx.AsyncClient``
talks to a chat server directly and the library turns what comes back into
Responses events and Response objects, as a client library or another
framework's route handler would.

    compat-asgi serve --port 8000                      # or any chat-completions server
    COMPAT_CHAT_URL=http://127.0.0.1:8000/v1 python examples/translate_library.py "hello there"
    COMPAT_CHAT_URL=http://127.0.0.1:8000/v1 python examples/translate_library.py --sse hi   # raw SSE frames
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx

from compat_asgi import translate


async def create_response(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    """``POST /responses`` without streaming: one chat completion, one Response object."""
    request = translate.responses_to_chat({**body, "stream": False})
    ids = translate.RandomIds()
    response = translate.new_response(request.echo, ids("resp"), translate.system_clock())
    upstream = await client.post("chat/completions", json=request.chat)
    upstream.raise_for_status()
    return translate.chat_completion_to_response(upstream.json(), response, ids, request.output)


async def stream_response(client: httpx.AsyncClient, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """``POST /responses`` with ``stream: true``: Responses events as the chat stream arrives.

    Raises :class:`translate.InvalidRequest` for a bad body and
    :class:`httpx.HTTPStatusError` if the chat server refuses, both before the
    first event; anything that goes wrong after that ends the stream with
    ``error`` + ``response.failed`` instead, as the Responses API does.
    """
    request = translate.responses_to_chat({**body, "stream": True})
    ids = translate.RandomIds()
    response = translate.new_response(request.echo, ids("resp"), translate.system_clock())
    stream = translate.ChatToResponses(response, ids, options=request.output)
    async with client.stream("POST", "chat/completions", json=request.chat) as upstream:
        if upstream.is_error:
            await upstream.aread()
            upstream.raise_for_status()
        for event in stream.start():
            yield event
        try:
            # Bytes go in as they arrive, split anywhere: the translator keeps
            # partial SSE lines itself, bounded, and emits each complete event.
            async for data in upstream.aiter_bytes():
                for event in stream.feed_bytes(data):
                    yield event
                if stream.saw_done:
                    break
            tail = stream.close()  # raises if the upstream stopped mid-answer
        except translate.CompatError as exc:
            tail = stream.fail(exc)
        except httpx.TransportError as exc:
            tail = stream.fail(translate.UpstreamError(f"chat server connection failed: {exc!r}"))
    for event in tail:
        yield event


def output_text(response: dict[str, Any]) -> str:
    return "".join(
        part.get("text", "")
        for item in response["output"]
        if item["type"] == "message"
        for part in item["content"]
    )


async def main(base_url: str, prompt: str, *, raw_sse: bool = False) -> None:
    async with httpx.AsyncClient(base_url=base_url.rstrip("/") + "/", timeout=60) as client:
        async for event in stream_response(client, {"model": "demo", "input": prompt}):
            if raw_sse:
                # The exact bytes a Responses server would send for this event.
                sys.stdout.write(translate.encode_event(event).decode())
            elif event["type"] == "response.output_text.delta":
                print(event["delta"], end="", flush=True)
            elif event["type"] in ("response.completed", "response.incomplete", "response.failed"):
                usage = event["response"]["usage"] or {}
                print(f"\n[{event['type']}, {usage.get('total_tokens', 0)} tokens]")
        whole = await create_response(client, {"model": "demo", "input": prompt})
        print(f"not streamed: {whole['status']}: {output_text(whole)}")


if __name__ == "__main__":
    args = sys.argv[1:]
    raw = "--sse" in args
    asyncio.run(
        main(
            os.environ.get("COMPAT_CHAT_URL", "http://127.0.0.1:8000/v1"),
            " ".join(arg for arg in args if arg != "--sse") or "hello from the translate library",
            raw_sse=raw,
        )
    )
