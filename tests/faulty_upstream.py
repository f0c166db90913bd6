"""A chat-completions server that misbehaves on request: the model name picks the fault.

Served by a real uvicorn in the fault tests, so the middleware's HTTP
upstream meets each fault over a real socket.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from compat_asgi.types import Receive, Scope, Send

SSE = [(b"content-type", b"text/event-stream")]


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None) -> bytes:
    body = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(body) + b"\n\n"


def tool(index: int, call_id: str | None, name: str | None, args: str) -> bytes:
    call: dict[str, Any] = {"index": index, "function": {"arguments": args}}
    if call_id:
        call.update(id=call_id, type="function")
        call["function"]["name"] = name
    return chunk({"tool_calls": [call]})


GOOD = chunk({"role": "assistant", "content": ""}) + chunk({"content": "Hello"}) + chunk({"content": " world"})
END = chunk(finish="stop") + b"data: [DONE]\n\n"


class FaultyUpstream:
    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.cancel_times: list[float] = []
        self.requests: list[dict[str, Any]] = []  # every chat request body, in order

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = orjson.loads((await receive())["body"])
        self.requests.append(request)
        fault = request["model"]

        async def start(status: int = 200, headers: list[tuple[bytes, bytes]] = SSE) -> None:
            await send({"type": "http.response.start", "status": status, "headers": headers})

        async def body(data: bytes, more: bool = True) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": more})

        if fault == "slow-headers":
            await asyncio.sleep(1.5)
        elif fault == "slow-first-byte":
            await start()
            await asyncio.sleep(1.5)
        elif fault == "slow-mid":
            await start()
            await body(GOOD)
            await asyncio.sleep(1.5)
        elif fault == "long-line":
            await start()
            await body(GOOD)
            for _ in range(64):
                await body(b"data: " + b"x" * 65536)
        elif fault == "bad-json":
            await start()
            await body(GOOD)
            await asyncio.sleep(0.05)
            await body(b"data: {this is not json}\n\n" + END)
        elif fault == "close-mid-event":
            await start()
            await body(GOOD + b'data: {"choices": [{"index": 0, "del')
        elif fault == "no-done":
            await start()
            await body(GOOD + chunk(finish="stop"))
        elif fault == "no-finish":
            await start()
            await body(GOOD)
        elif fault == "trickle":
            await start()
            for i, byte in enumerate(GOOD + END):
                await body(bytes([byte]))
                if i % 50 == 0:
                    await asyncio.sleep(0)
        elif fault == "dup-index":
            await start()
            await body(tool(0, "call_a", "a", '{"x":1}') + tool(0, "call_b", "b", '{"y":2}') + chunk(finish="tool_calls") + b"data: [DONE]\n\n")
        elif fault == "out-of-order":
            await start()
            await body(tool(1, "call_b", "b", "{") + tool(0, "call_a", "a", "{") + tool(1, None, None, "}") + tool(0, None, None, "}") + chunk(finish="tool_calls"))
        elif fault == "error-first":
            await start()
            await body(b'data: {"error": {"message": "model overloaded", "code": "overloaded"}}\n\n')
        elif fault == "error-mid":
            await start()
            await body(GOOD)
            await asyncio.sleep(0.05)
            await body(b'data: {"error": {"message": "model crashed", "code": "crash"}}\n\n')
        elif fault == "endless":
            # Generates until the client (the middleware) goes away, which an
            # ASGI app learns from receive(): record when that happened.
            await start()
            gone = asyncio.ensure_future(receive())
            while not gone.done():
                await body(chunk({"content": "x "}))
                await asyncio.sleep(0.01)
            self.cancel_times.append(asyncio.get_running_loop().time())
            self.cancelled.set()
            return
        elif fault.startswith("status-"):
            status = int(fault.split("-")[1])
            await start(status, [(b"content-type", b"text/plain"), (b"retry-after", b"3")])
            await body(b"backend says no", more=False)
            return
        else:
            await start()
            await body(GOOD)
        await body(b"", more=False)
