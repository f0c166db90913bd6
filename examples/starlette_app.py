"""An existing Starlette chat app gains the OpenAI Responses API.

The app below already serves ``POST /v1/chat/completions`` (a small echo bot
that streams word by word with ``StreamingResponse``) and a health route.
Adding ``CompatMiddleware`` to its middleware list makes ``POST /v1/responses``
work too, translated onto that same route in-process; nothing else changes.

    python examples/starlette_app.py                 # http://127.0.0.1:8000 (HOST/PORT to change)
    uvicorn examples.starlette_app:app --port 8000   # the same, from the repository root

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    print(client.responses.create(model="echo", input="hi").output_text)

Middleware order (Starlette's list is outermost first) and why:

1. ``CORSMiddleware`` outermost. CompatMiddleware answers ``/v1/responses``
   itself and only knows ``POST`` there, so a CORS middleware inside it never
   sees a browser's ``OPTIONS`` preflight (that would be a 405) and never adds
   ``Access-Control-Allow-Origin`` to translated answers.
2. ``GZipMiddleware`` next. Compression has to sit outside CompatMiddleware
   to compress what it produces (Response objects are JSON of a few KB).
   Starlette's GZip leaves ``text/event-stream`` alone, so event streams still
   flush event by event instead of waiting for a full compression block.
   Inside, it would never see the translated answers at all, only the
   app's own routes; CompatMiddleware reads the chat route's answers as plain
   SSE/JSON anyway (it asks for them uncompressed, undoes gzip, and refuses
   encodings it cannot undo with a clear 502).
3. ``CompatMiddleware`` innermost, right next to the routes it translates for.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from compat_asgi import CompatMiddleware

ALLOWED_ORIGINS = ["http://localhost:3000"]


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def chunk(completion_id: str, model: str, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    payload = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def echo_stream(completion_id: str, model: str, words: list[str], usage: dict[str, int] | None) -> AsyncIterator[bytes]:
    yield chunk(completion_id, model, {"role": "assistant", "content": ""})
    for i, word in enumerate(words):
        yield chunk(completion_id, model, {"content": word if i == 0 else " " + word})
    yield chunk(completion_id, model, {}, "stop")
    if usage is not None:
        head = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        yield b"data: " + orjson.dumps({**head, "choices": [], "usage": usage}) + b"\n\n"
    yield b"data: [DONE]\n\n"


async def chat_completions(request: Request) -> Response:
    body = await request.json()
    model = str(body.get("model", "echo"))
    words = f"Starlette echo: {last_user_text(body.get('messages', []))}".split()
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words), "total_tokens": prompt_tokens + len(words)}
    completion_id = f"chatcmpl-{time.monotonic_ns()}"
    if body.get("stream"):
        wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(
            echo_stream(completion_id, model, words, usage if wants_usage else None),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache"},
        )
    return JSONResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": " ".join(words)}, "finish_reason": "stop"}
            ],
            "usage": usage,
        }
    )


async def health(request: Request) -> Response:
    return JSONResponse({"ok": True})


app = Starlette(
    routes=[
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/health", health),
    ],
    middleware=[
        Middleware(
            CORSMiddleware,
            allow_origins=ALLOWED_ORIGINS,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type"],
        ),
        Middleware(GZipMiddleware, minimum_size=500),
        Middleware(CompatMiddleware),
    ],
)


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8000")))
