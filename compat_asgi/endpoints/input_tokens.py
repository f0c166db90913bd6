"""``POST /responses/input_tokens``: how many tokens a create request's input
is, counted by the backend itself, never estimated.

The request is translated exactly as ``POST /responses`` would translate it
(instructions, stored history, tools), then counted by the first of these
the upstream has:

1. vLLM's ``POST /tokenize`` with chat ``messages`` (and ``tools``): it
   applies the model's chat template and answers ``{"count": N}``;
2. llama.cpp's ``POST /apply-template`` (the prompt its chat template makes
   of the request) then ``POST /tokenize`` of that prompt, with the special
   tokens its chat endpoint adds;
3. any chat backend: ``usage.prompt_tokens`` of the same chat request with
   ``max_tokens: 1``, not streamed (costs one generated token).

The method that last worked is tried first for that upstream, so a backend
without a tokenizer endpoint is probed once, not on every count.
"""

from __future__ import annotations

from typing import Any

from compat_asgi.asgi import Responder, parse_upstream_json, raise_for_status
from compat_asgi.core.validation import check_keys
from compat_asgi.endpoints import Call, post_json
from compat_asgi.endpoints.responses import CHAT_PATH, ResponsesOverChat
from compat_asgi.endpoints.routes import Handler, Route
from compat_asgi.errors import CompatError, UpstreamProtocolError
from compat_asgi.settings import Settings

__all__ = ["InputTokens"]

# The body of ``client.responses.input_tokens.count``: the create fields that shape the prompt.
_KNOWN_KEYS = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "previous_response_id",
        "conversation",
        "reasoning",
        "text",
        "truncation",
        "personality",
    }
)
# Accepted, but no chat backend's prompt depends on them.
_NOT_FORWARDED = ("personality",)

_VLLM = "vllm"
_LLAMA_CPP = "llama.cpp"
_CHAT = "chat"


class InputTokens:
    def __init__(self, settings: Settings, responses: ResponsesOverChat, passthrough: Handler) -> None:
        self.settings = settings
        self.responses = responses
        self.passthrough = passthrough
        # upstream target name -> the counting method that worked there
        self._method: dict[str, str] = {}

    def routes(self) -> list[Route]:
        return [Route("POST", "/responses/input_tokens", self.count)]

    async def count(self, call: Call, responder: Responder) -> None:
        if call.target.api != "chat":
            call.mode = "passthrough"  # a Responses upstream counts for itself
            await self.passthrough(call, responder)
            return
        call.mode = "translated"
        body = check_keys(call.json(), _KNOWN_KEYS, {})
        create = {key: value for key, value in body.items() if key not in _NOT_FORWARDED}
        if create.get("input") is None:
            create["input"] = []  # counting instructions or tools alone is allowed
        translated, _ = await self.responses._translate(create, call)
        chat = call.target.adapt(translated.chat, None)
        tokens = await self._count(call, chat)
        await responder.send_json(200, {"object": "response.input_tokens", "input_tokens": tokens})

    async def _count(self, call: Call, chat: dict[str, Any]) -> int:
        name = call.target.name
        known = self._method.get(name)
        methods: tuple[str, ...] = (_VLLM, _LLAMA_CPP, _CHAT)
        if known is not None:
            methods = (known, *(method for method in methods if method != known))
        for method in methods:
            tokens = await self._try(method, call, chat)
            if tokens is not None:
                self._method[name] = method
                return tokens
        raise UpstreamProtocolError("the upstream did not report a token count")  # unreachable: chat raises

    async def _try(self, method: str, call: Call, chat: dict[str, Any]) -> int | None:
        """The count by ``method``; None when the upstream has no such endpoint."""
        template: dict[str, Any] = {key: chat[key] for key in ("messages", "tools") if key in chat}
        if method == _VLLM:
            answer = await self._post(call, "/tokenize", {"model": chat["model"], **template}, probe=True)
            count = answer.get("count") if answer is not None else None
            return count if isinstance(count, int) and _is_count(count) else None
        if method == _LLAMA_CPP:
            answer = await self._post(call, "/apply-template", template, probe=True)
            prompt = answer.get("prompt") if answer is not None else None
            if not isinstance(prompt, str):
                return None
            # add_special: the chat endpoint tokenizes its prompt with BOS and the like.
            tokenized = await self._post(call, "/tokenize", {"content": prompt, "add_special": True}, probe=False)
            tokens = tokenized.get("tokens") if tokenized is not None else None
            return len(tokens) if isinstance(tokens, list) else None
        one_token = {key: value for key, value in chat.items() if key not in ("stream", "stream_options")}
        one_token.pop("max_completion_tokens", None)
        one_token["max_tokens"] = 1
        completion = await self._post(call, CHAT_PATH, one_token, probe=False)
        usage = completion.get("usage") if completion is not None else None
        count = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        if not isinstance(count, int) or not _is_count(count):
            raise UpstreamProtocolError("the upstream's chat completion reported no usage.prompt_tokens to count with")
        return count

    async def _post(self, call: Call, path: str, payload: dict[str, Any], *, probe: bool) -> dict[str, Any] | None:
        """The upstream's JSON object answer. A probe of an endpoint the
        upstream may lack (404, or a 4xx/5xx from a server whose endpoint of
        that name means something else) answers None; otherwise an upstream
        error is the client's error, as for a create."""
        upstream = await post_json(call, self.settings, path, payload)
        try:
            if upstream.status != 200:
                if probe:
                    return None
                await raise_for_status(upstream)
            try:
                answer = parse_upstream_json(await upstream.read(self.settings.max_upstream_body_size))
            except CompatError:
                if probe:
                    return None
                raise
        finally:
            await upstream.aclose()
        return answer if isinstance(answer, dict) else None


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
