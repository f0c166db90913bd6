"""Reasoning that survives a stateless round trip, and ``<think>`` extraction.

A chat backend forgets its reasoning between requests, and a client with
``store: false`` keeps no server state. So, when the client asks for
``include: ["reasoning.encrypted_content"]``, each reasoning item carries a
sealed copy of its text; when the client sends the item back, the text is
restored into the chat history. The seal is an HMAC: a client can read its
own reasoning (it has it in the item anyway) but cannot forge one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import zlib

__all__ = ["ReasoningSeal", "ThinkSplitter", "split_think"]

_VERSION = "cmpt1"
_MAC_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ReasoningSeal:
    """Seals reasoning text into an ``encrypted_content`` blob and opens it again.

    Use the same ``key`` on every worker that may see the next turn; without
    one a random key is made, valid for this process only.
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key else os.urandom(32)

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, _VERSION.encode() + payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def seal(self, text: str) -> str:
        payload = zlib.compress(text.encode(), 6)
        return f"{_VERSION}.{_b64(payload)}.{_b64(self._mac(payload))}"

    def open(self, blob: str) -> str | None:
        """The sealed text, or None when the blob is not one of ours or was altered."""
        version, _, rest = blob.partition(".")
        body, _, mac = rest.partition(".")
        if version != _VERSION or not body or not mac:
            return None
        try:
            payload, tag = _unb64(body), _unb64(mac)
        except ValueError:
            return None
        if not hmac.compare_digest(tag, self._mac(payload)):
            return None
        try:
            return zlib.decompress(payload).decode()
        except (zlib.error, UnicodeDecodeError):
            return None


_OPEN = "<think>"
_CLOSE = "</think>"


class ThinkSplitter:
    """Splits streamed text that starts with ``<think>...</think>`` into
    (reasoning, answer) pieces, whatever the chunk boundaries.

    Only a think block at the very start (after whitespace) is reasoning: a
    ``<think>`` later in an answer is the answer's own text.
    """

    __slots__ = ("_state", "_held")

    def __init__(self) -> None:
        self._state = "start"  # start -> think -> answer
        self._held = ""

    def feed(self, text: str) -> tuple[str, str]:
        text = self._held + text
        self._held = ""
        if self._state == "start":
            stripped = text.lstrip()
            if stripped.startswith(_OPEN):
                self._state = "think"
                text = stripped[len(_OPEN) :]
            elif _OPEN.startswith(stripped):
                self._held = text  # could still become "<think>"
                return "", ""
            else:
                self._state = "answer"
                return "", text
        if self._state == "think":
            end = text.find(_CLOSE)
            if end >= 0:
                self._state = "answer"
                return text[:end], text[end + len(_CLOSE) :].lstrip()
            keep = _partial_suffix(text, _CLOSE)
            self._held = text[len(text) - keep :] if keep else ""
            return text[: len(text) - keep], ""
        return "", text

    def close(self) -> tuple[str, str]:
        """End of text: whatever was held back is flushed where it belongs."""
        held, self._held = self._held, ""
        if self._state == "think":
            return held, ""
        return "", held


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


def split_think(text: str) -> tuple[str, str]:
    """(reasoning, answer) of a whole text, as :class:`ThinkSplitter` would stream it."""
    splitter = ThinkSplitter()
    reasoning, answer = splitter.feed(text)
    more_reasoning, more_answer = splitter.close()
    return reasoning + more_reasoning, answer + more_answer
