"""A FastAPI chat-completions backend gains ``/v1/responses`` with one line.

The app is an ordinary FastAPI service: a typed ``POST /v1/chat/completions``
(here an echo bot honouring ``stream``, ``stream_options.include_usage`` and
``max_tokens``) plus its own routes. ``app.add_middleware(CompatMiddleware)``
makes it answer ``POST /v1/responses`` as well, translating onto that route
in-process (no HTTP hop, streaming stays streaming). FastAPI's docs, other
routes and its lifespan are untouched.

    python examples/fastapi_app.py                  # http://127.0.0.1:8000 (HOST/PORT to change)
    uvicorn examples.fastapi_app:app --port 8000    # the same, from the repository root

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    with client.responses.stream(model="echo", input="hello") as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                print(event.delta, end="", flush=True)
"""

import os
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import orjson
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from compat_asgi import CompatMiddleware


class ChatMessage(BaseModel):
    # Chat clients send fields this bot ignores (name, tool_calls, ...).
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)


app = FastAPI(title="echo chat backend")


def answer_words(request: ChatRequest) -> list[str]:
    said = ""
    for message in reversed(request.messages):
        if message.role == "user":
            content = message.content
            if isinstance(content, list):
                content = " ".join(str(part.get("text", "")) for part in content)
            said = content or ""
            break
    return f"FastAPI echo: {said}".split()


def chunk_bytes(head: dict[str, Any], delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    return b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n"


async def sse(head: dict[str, Any], words: list[str], finish_reason: str, usage: dict[str, int] | None) -> AsyncIterator[bytes]:
    yield chunk_bytes(head, {"role": "assistant", "content": ""})
    for i, word in enumerate(words):
        yield chunk_bytes(head, {"content": word if i == 0 else " " + word})
    yield chunk_bytes(head, {}, finish_reason)
    if usage is not None:
        yield b"data: " + orjson.dumps({**head, "choices": [], "usage": usage}) + b"\n\n"
    yield b"data: [DONE]\n\n"


@app.post("/v1/chat/completions")
async def chat_completions(request: ChatRequest) -> Response:
    words = answer_words(request)
    finish_reason = "stop"
    if request.max_tokens is not None and len(words) > request.max_tokens:
        words, finish_reason = words[: request.max_tokens], "length"
    prompt_tokens = sum(len(str(message.content or "").split()) for message in request.messages)
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words), "total_tokens": prompt_tokens + len(words)}
    head = {"id": f"chatcmpl-{time.monotonic_ns()}", "created": int(time.time()), "model": request.model}
    if request.stream:
        include_usage = request.stream_options is not None and request.stream_options.include_usage
        return StreamingResponse(
            sse({**head, "object": "chat.completion.chunk"}, words, finish_reason, usage if include_usage else None),
            media_type="text/event-stream",
        )
    message = {"role": "assistant", "content": " ".join(words)}
    return JSONResponse(
        {
            **head,
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": usage,
        }
    )


@app.get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}


# Everything under /v1 that CompatMiddleware does not translate (here: the
# chat route itself) still reaches the FastAPI routes above unchanged.
app.add_middleware(CompatMiddleware)


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8000")))
