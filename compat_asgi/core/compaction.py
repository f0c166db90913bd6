"""Compaction: a conversation replaced by the model's own summary of it.

``POST /responses/compact`` (and ``context_management`` on create) asks the
backend to summarise the conversation; the summary travels back to the
client sealed in a ``compaction`` item's ``encrypted_content`` (an HMAC seal,
like reasoning: the client cannot forge one), and when the client sends that
item again its summary is restored into the chat history where the item
stands.
"""

from __future__ import annotations

from typing import Any

import orjson

from compat_asgi.core.reasoning import ReasoningSeal

__all__ = [
    "SUMMARY_INSTRUCTION",
    "BYTES_PER_TOKEN",
    "seal_summary",
    "open_summary",
    "summary_message",
    "summary_request",
    "compacted_output",
    "estimate_tokens",
]

SUMMARY_INSTRUCTION = (
    "Summarise the conversation so far for your own later use: it will replace the "
    "conversation in your context. Keep every fact, decision, name, number, open task, "
    "tool call and tool result that later turns may need, and what the user asked for. "
    "Write only the summary."
)
# The usual rule of thumb for English text with BPE tokenizers; used only to
# decide when to compact, never reported as a count.
BYTES_PER_TOKEN = 4
# Sealed with the reasoning key, so the text is marked: a reasoning blob sent
# as a compaction (or the reverse) is not taken for one.
_MARK = "compaction\n"
_RESTORED = "Summary of the earlier conversation:\n"


def seal_summary(seal: ReasoningSeal, summary: str) -> str:
    return seal.seal(_MARK + summary)


def open_summary(seal: ReasoningSeal | None, blob: str) -> str | None:
    """The sealed summary, or None when the blob is not a compaction of this server's."""
    text = seal.open(blob) if seal is not None else None
    if text is None or not text.startswith(_MARK):
        return None
    return text[len(_MARK) :]


def summary_message(summary: str) -> dict[str, Any]:
    """The chat message a compaction item becomes: the model's own words about
    the turns it replaces, so an assistant turn."""
    return {"role": "assistant", "content": _RESTORED + summary}


def summary_request(chat: dict[str, Any]) -> dict[str, Any]:
    """The chat request that asks the backend to summarise ``chat``'s messages
    (tools stay offered, so templates render the tool calls in the history)."""
    request = {key: value for key, value in chat.items() if key in ("model", "messages", "tools")}
    request["messages"] = [*chat["messages"], {"role": "user", "content": SUMMARY_INSTRUCTION}]
    request["stream"] = False
    return request


def compacted_output(items: list[dict[str, Any]], compaction: dict[str, Any]) -> list[dict[str, Any]]:
    """What a compaction returns: every user message of the conversation, as it
    was, then the one compaction item standing for everything else."""
    users = [
        {**item, "status": item.get("status", "completed")}
        for item in items
        if item.get("type") == "message" and item.get("role") == "user"
    ]
    return [*users, compaction]


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    """A rough size of chat messages: their JSON bytes / ``BYTES_PER_TOKEN``."""
    return len(orjson.dumps(messages)) // BYTES_PER_TOKEN
