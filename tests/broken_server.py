"""A small Responses server, correct except for one fault chosen by the model.

``model="broken-<fault>"`` injects ``<fault>`` (see :data:`FAULTS`); any
other model, e.g. ``"broken-none"``, gets a correct answer to every scenario
of the conformance suite, so a failing row can only be the injected fault.
Standalone on purpose (not a wrapper over CompatMiddleware): the detector
tests must not move when the middleware does.

``/v1/chat/completions`` is the demo backend, minus ``[DONE]`` for
``broken-missing-done``. Responses created with ``store: true`` are kept in
memory for GET/DELETE ``/v1/responses/{id}`` and ``previous_response_id``.
A named function ``tool_choice`` calls that tool; a ``tool_choice`` of
``file_search`` or ``web_search`` with that hosted tool offered answers with
a completed ``file_search_call`` / ``web_search_call`` item, then a message.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from compat_asgi.demo import DemoChatApp

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

FAULTS = (
    "missing-seq",  # one event lacks sequence_number
    "reused-index",  # the second output item reuses output_index 0
    "missing-terminal",  # the stream just stops: no response.completed
    "wrong-item-id",  # output_text.delta names another item
    "truncated-completed",  # cut by max_output_tokens but reported completed
    "dropped-call",  # only the first of several function calls
    "missing-done",  # chat: no data: [DONE]
    "stall",  # sends what it has, then nothing until the client leaves
    "lost-delete",  # DELETE says deleted, GET still finds it
    # The public OpenResponses suite's cases, one fault each:
    "missing-key",  # the Response lacks the keys only OpenResponses requires (completed_at ...)
    "bad-delta-type",  # output_text.delta carries a number: both schemas refuse it
    "no-argument-events",  # a streamed call without function_call_arguments.delta/done
    "reject-image",  # 400 on input_image parts
    "reject-file",  # 400 on input_file parts
    "reject-phase",  # 400 on an assistant item's phase
    "ignore-chain",  # accepts a previous_response_id it never stored
    "compact-no-item",  # /responses/compact answers without a compaction item
    "ws-no-terminal",  # the WebSocket closes after the deltas, before response.completed
    "plain-reasoning",  # store: false reasoning item without encrypted_content (Codex needs it)
    "no-chain-echo",  # follows previous_response_id but answers previous_response_id: null
    "empty-output",  # a completed response with no output items
    "drop-call-id",  # function_call items without call_id
    "string-arguments",  # function_call arguments that are JSON, but a string rather than an object
    "reject-tool-output",  # 400 on function_call_output input items (the round trip's second turn)
    "no-search-results",  # a file_search_call without the results include asked for
)
#: Keys OpenResponses requires on every Response and the OpenAI SDK leaves optional.
OPENRESPONSES_ONLY = ("completed_at", "top_logprobs", "safety_identifier", "prompt_cache_key", "background")
CREATED = 1_700_000_000
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_JSON = [(b"content-type", b"application/json")]
_DONE = b"data: [DONE]\n\n"
_STRUCTURED = '{"city":"Paris","population":2100000}'


class BrokenServer:
    def __init__(self, fault: str | None = None) -> None:
        """``fault`` injects that fault whatever the model (a server to compare against others)."""
        assert fault is None or fault in FAULTS
        self.fault = fault
        self.chat = DemoChatApp()
        self.ids = itertools.count(1)
        self.store: dict[str, dict[str, Any]] = {}

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        body = await _read(receive)
        if path == "/v1/chat/completions":
            await self._chat(scope, body, receive, send)
        elif path == "/v1/responses" and method == "POST":
            await self._responses(body, receive, send)
        elif path == "/v1/responses/compact" and method == "POST":
            await self._compact(body, send)
        elif path.startswith("/v1/responses/"):
            await self._stored(method, path.removeprefix("/v1/responses/"), send)
        elif path == "/v1/models":
            await _json(send, 200, {"object": "list", "data": [{"id": "broken-none", "object": "model"}]})
        else:
            await _json(send, 404, _error(f"no route {method} {path}", None, "not_found"))

    async def _chat(self, scope: Message, body: bytes, receive: Receive, send: Send) -> None:
        drop_done = _model(body) == "broken-missing-done"
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def filtered(message: Message) -> None:
            if drop_done and message["type"] == "http.response.body" and message.get("body") == _DONE:
                message = {**message, "body": b""}
            await send(message)

        await self.chat(scope, replay, filtered)

    async def _stored(self, method: str, rid: str, send: Send) -> None:
        found = self.store.get(rid)
        if found is None or method not in ("GET", "DELETE"):
            await _json(send, 404, _error(f"No response with id '{rid}' found.", None, "not_found"))
        elif method == "GET":
            await _json(send, 200, found)
        else:
            if found["model"] != "broken-lost-delete":
                del self.store[rid]
            await _json(send, 200, {"id": rid, "object": "response", "deleted": True})

    async def _websocket(self, scope: Message, receive: Receive, send: Send) -> None:
        """Responses WebSocket mode: each response.create gets the stream's events as text frames."""
        if scope["path"] != "/v1/responses":
            await send({"type": "websocket.close", "code": 1008})
            return
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            request = orjson.loads(message.get("text") or message.get("bytes") or b"{}")
            if request.pop("type", None) != "response.create":
                continue
            model = request.get("model") if isinstance(request.get("model"), str) else "broken-none"
            fault = self.fault or model.removeprefix("broken-")
            _, events = self._answer(request, model, fault)
            if fault == "ws-no-terminal":
                events.pop()
            for event in events:
                await send({"type": "websocket.send", "text": orjson.dumps(event).decode()})
            if fault == "ws-no-terminal":
                await send({"type": "websocket.close", "code": 1011})
                return

    async def _compact(self, body: bytes, send: Send) -> None:
        request = orjson.loads(body)
        items = request.get("input") if isinstance(request.get("input"), list) else []
        kept = [i for i in items if isinstance(i, dict) and i.get("role") == "user"]
        output = [*kept]
        if "compact-no-item" not in (self.fault, str(request.get("model")).removeprefix("broken-")):
            output.append({"type": "compaction", "id": f"cmp_{next(self.ids)}", "encrypted_content": "c2VhbGVk"})
        await _json(send, 200, {"id": f"resp_{next(self.ids)}", "object": "response.compaction", "created_at": CREATED,
                                "output": output, "usage": _usage(1, 1)})

    async def _responses(self, body: bytes, receive: Receive, send: Send) -> None:
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            await _json(send, 400, _error("body is not JSON", None, "invalid_json"))
            return
        temperature = request.get("temperature")
        if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float))):
            await _json(send, 400, _error("Invalid type for 'temperature'.", "temperature", "invalid_type"))
            return
        model = request.get("model") if isinstance(request.get("model"), str) else "broken-none"
        fault = self.fault or model.removeprefix("broken-")
        previous = request.get("previous_response_id")
        if previous is not None and previous not in self.store and fault != "ignore-chain":
            await _json(send, 400, _error("Unknown previous_response_id.", "previous_response_id", "not_found"))
            return
        refused = _refused(fault, request.get("input"))
        if refused is not None:
            await _json(send, 400, _error(f"Unsupported: {refused}.", "input", "unsupported_value"))
            return
        final, events = self._answer(request, model, fault)
        if final["store"]:
            self.store[final["id"]] = final
        if fault == "stall":
            if request.get("stream"):
                await send({"type": "http.response.start", "status": 200, "headers": _SSE})
                await send({"type": "http.response.body", "body": _sse(events[0]), "more_body": True})
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        if not request.get("stream"):
            await _json(send, 200, final)
            return
        _inject(fault, events)
        await send({"type": "http.response.start", "status": 200, "headers": _SSE})
        for event in events:
            await send({"type": "http.response.body", "body": _sse(event), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _answer(self, request: dict[str, Any], model: str, fault: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The final response and the (correct) event stream that builds it."""
        n = next(self.ids)
        items = request.get("input")
        user = _user_text(items)
        tools = [t for t in request.get("tools") or () if isinstance(t, dict)]
        answered = isinstance(items, list) and any(isinstance(i, dict) and i.get("type") == "function_call_output" for i in items)
        called = [] if answered else [t for t in tools if isinstance(t.get("name"), str) and t["name"] in user]
        choice = request.get("tool_choice")
        if not answered and isinstance(choice, dict) and choice.get("type") == "function":
            called = [t for t in tools if t.get("type") == "function" and t.get("name") == choice.get("name")]
        hosted = _hosted_call(n, choice, tools, user, request.get("include") or (), fault)
        if request.get("parallel_tool_calls") is False or fault == "dropped-call":
            called = called[:1]
        limit = request.get("max_output_tokens")
        output: list[dict[str, Any]] = [] if hosted is None else [hosted]
        status, incomplete = "completed", None
        if called:
            for k, tool in enumerate(called):
                props = (tool.get("parameters") or {}).get("properties") or {}
                args = orjson.dumps({key: "Paris" for key in props} if fault != "string-arguments" else "Paris").decode()
                output.append({"type": "function_call", "id": f"fc_{n}_{k}", "call_id": f"call_{n}_{k}",
                               "name": tool["name"], "arguments": args, "status": "completed"})
                if fault == "drop-call-id":
                    del output[-1]["call_id"]
        else:
            fmt = (request.get("text") or {}).get("format") or {}
            text = _STRUCTURED if fmt.get("type") == "json_schema" else (
                "The tool answered." if answered else f"Hello! You said: {user} This is the broken test server.")
            words = text.split(" ")
            item_status = "completed"
            if isinstance(limit, int) and len(words) > limit:
                text = " ".join(words[:limit])
                if fault != "truncated-completed":
                    status, incomplete, item_status = "incomplete", {"reason": "max_output_tokens"}, "incomplete"
            output.append({"type": "message", "id": f"msg_{n}", "role": "assistant", "status": item_status,
                           "content": [{"type": "output_text", "text": text, "annotations": []}]})
        if fault == "empty-output":
            output.clear()
        if fault == "plain-reasoning" and request.get("store") is False:
            output.insert(0, {"type": "reasoning", "id": f"rs_{n}", "summary": [], "status": "completed"})
        out_tokens = sum(len(_pieces(i)) for i in output if i["type"] in ("message", "function_call"))
        in_tokens = max(1, len(user.split()))
        response = {
            "id": f"resp_{n}", "object": "response", "created_at": CREATED, "model": model,
            "status": "in_progress", "output": [], "error": None, "incomplete_details": None,
            "instructions": request.get("instructions"), "max_output_tokens": limit,
            "parallel_tool_calls": request.get("parallel_tool_calls", True), "tools": tools,
            "tool_choice": request.get("tool_choice", "auto"), "text": request.get("text") or {"format": {"type": "text"}},
            "store": request.get("store") is not False, "previous_response_id": request.get("previous_response_id"),
            "usage": None, "completed_at": None, "truncation": "disabled", "top_p": 1.0, "temperature": 1.0,
            "presence_penalty": 0.0, "frequency_penalty": 0.0, "top_logprobs": 0, "reasoning": None, "user": None,
            "max_tool_calls": None, "background": False, "service_tier": "default", "metadata": {},
            "safety_identifier": None, "prompt_cache_key": None,
        }
        if fault == "no-chain-echo":
            response["previous_response_id"] = None
        if fault == "missing-key":
            for key in OPENRESPONSES_ONLY:
                del response[key]
        final = {**response, "status": status, "incomplete_details": incomplete, "output": output,
                 "usage": _usage(in_tokens, out_tokens)}
        if "completed_at" in final:
            final["completed_at"] = CREATED + 1
        events = [{"type": "response.created", "response": response}, {"type": "response.in_progress", "response": response}]
        for oi, item in enumerate(output):
            events += _item_events(oi, item)
        events.append({"type": f"response.{status}", "response": final})
        for seq, event in enumerate(events):
            event["sequence_number"] = seq
        return final, copy.deepcopy(events)


def _item_events(oi: int, item: dict[str, Any]) -> list[dict[str, Any]]:
    at = {"output_index": oi, "item_id": item["id"]}
    if item["type"] not in ("message", "function_call"):
        return [
            {"type": "response.output_item.added", "output_index": oi, "item": {**item, "status": "in_progress"}},
            {"type": "response.output_item.done", "output_index": oi, "item": item},
        ]
    if item["type"] == "function_call":
        added = {**item, "arguments": "", "status": "in_progress"}
        deltas = [{"type": "response.function_call_arguments.delta", **at, "delta": p} for p in _pieces(item)]
        return [
            {"type": "response.output_item.added", "output_index": oi, "item": added},
            *deltas,
            {"type": "response.function_call_arguments.done", **at, "arguments": item["arguments"]},
            {"type": "response.output_item.done", "output_index": oi, "item": item},
        ]
    part = item["content"][0]
    at_part = {**at, "content_index": 0}
    return [
        {"type": "response.output_item.added", "output_index": oi, "item": {**item, "status": "in_progress", "content": []}},
        {"type": "response.content_part.added", **at_part, "part": {**part, "text": ""}},
        *({"type": "response.output_text.delta", **at_part, "delta": p, "logprobs": []} for p in _pieces(item)),
        {"type": "response.output_text.done", **at_part, "text": part["text"], "logprobs": []},
        {"type": "response.content_part.done", **at_part, "part": part},
        {"type": "response.output_item.done", "output_index": oi, "item": item},
    ]


def _pieces(item: dict[str, Any]) -> list[str]:
    if item["type"] == "function_call":
        args = item["arguments"]
        return [args[: len(args) // 2], args[len(args) // 2 :]]
    words = item["content"][0]["text"].split(" ")
    return words[:1] + [" " + w for w in words[1:]]


def _inject(fault: str, events: list[dict[str, Any]]) -> None:
    if fault == "missing-seq":
        del events[3]["sequence_number"]
    elif fault == "reused-index":
        for event in events:
            if event.get("output_index") == 1:
                event["output_index"] = 0
    elif fault == "missing-terminal":
        events.pop()
    elif fault == "wrong-item-id":
        for event in events:
            if event["type"] == "response.output_text.delta":
                event["item_id"] = "msg_wrong"
    elif fault == "bad-delta-type":
        for event in events:
            if event["type"] == "response.output_text.delta":
                event["delta"] = 7
                break
    elif fault == "no-argument-events":
        events[:] = [e for e in events if not e["type"].startswith("response.function_call_arguments.")]
        for seq, event in enumerate(events):
            event["sequence_number"] = seq


def _hosted_call(n: int, choice: Any, tools: list[dict[str, Any]], user: str, include: Any,
                 fault: str) -> dict[str, Any] | None:
    """The hosted tool call a forced ``file_search`` / ``web_search`` choice gets, with what ``include`` asked for."""
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in ("file_search", "web_search") or not any(t.get("type") == kind for t in tools):
        return None
    if kind == "file_search":
        call: dict[str, Any] = {"type": "file_search_call", "id": f"fs_{n}", "status": "completed", "queries": [user],
                                "results": None}
        if "file_search_call.results" in include and fault != "no-search-results":
            call["results"] = [{"file_id": "file_1", "filename": "notes.txt", "score": 0.5, "text": "A note.",
                                "attributes": {}}]
        return call
    action: dict[str, Any] = {"type": "search", "query": user}
    if "web_search_call.action.sources" in include:
        action["sources"] = [{"type": "url", "url": "https://example.com/cached"}]
    return {"type": "web_search_call", "id": f"ws_{n}", "status": "completed", "action": action}


def _refused(fault: str, items: Any) -> str | None:
    """What a ``reject-*`` fault refuses in ``input``, if the request has it."""
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict):
            continue
        if fault == "reject-tool-output" and item.get("type") == "function_call_output":
            return "function_call_output"
        if fault == "reject-phase" and "phase" in item:
            return "phase"
        content = item.get("content")
        for part in content if isinstance(content, list) else ():
            kind = part.get("type") if isinstance(part, dict) else None
            if (fault, kind) in (("reject-image", "input_image"), ("reject-file", "input_file")):
                return str(kind)
    return None


def _usage(inp: int, out: int) -> dict[str, Any]:
    return {"input_tokens": inp, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0}, "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": inp + out}


def _user_text(items: Any) -> str:
    if isinstance(items, str):
        return items
    for item in reversed(items if isinstance(items, list) else []):
        if isinstance(item, dict) and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            return " ".join(p.get("text", "") for p in content or () if isinstance(p, dict))
    return ""


def _model(body: bytes) -> Any:
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return request.get("model") if isinstance(request, dict) else None


def _error(message: str, param: str | None, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


def _sse(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


async def _read(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


async def _json(send: Send, status: int, body: Any) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _JSON})
    await send({"type": "http.response.body", "body": orjson.dumps(body)})
