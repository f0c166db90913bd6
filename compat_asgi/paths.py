"""Request paths on their way to an upstream URL: checked, never normalised.

A path is taken as the client sent it (ASGI ``raw_path``, still percent-encoded)
and refused with a 400 when any part of it could change meaning on the way:
dot-segments (``.``/``..``, raw or ``%2e``-encoded in any case) would climb out
of the upstream's base path once a server or httpx resolves them; encoded
``/``, ``\\``, ``#`` and ``?`` would become a separator, a fragment or a query
string upstream; control characters (raw or encoded) would forge log lines or
break the URL. Nothing is rewritten into something else: the upstream sees the
client's bytes or nothing. Pure: no I/O.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

from compat_asgi.errors import InvalidRequest, URITooLong
from compat_asgi.types import Scope

__all__ = ["MAX_PATH_BYTES", "checked_path", "api_path", "raw_route_path", "app_path"]

MAX_PATH_BYTES = 8 << 10  # longer request paths get 414 before any other work
# Raw bytes that have no business in a path: controls, space, DEL, and the
# characters that end a path or escape it (a raw "\" some servers treat as "/").
_BAD_RAW = re.compile(rb"[\x00-\x20\x7f\\#?]")
# A "%" not followed by two hex digits: its meaning depends on who decodes it.
_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
# Encoded controls, DEL, "\", "#", "?", and "/" (checked separately where allowed).
_BAD_ESCAPE = re.compile(rb"%(?:[01][0-9A-Fa-f]|7[Ff]|5[Cc]|23|3[Ff])")
_ENCODED_SLASH = re.compile(rb"%2[Ff]")
# Bytes outside RFC 3986 pchar (non-ASCII, '"', '<', '`', '{', ...): sent
# percent-encoded, as any HTTP client would, so the URL is what we checked.
_TO_ENCODE = re.compile(rb"[^A-Za-z0-9\-._~!$&'()*+,;=:@/%]")
# pchar plus "/" (RFC 3986 section 3.3); "%" is checked by the patterns above.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def _refuse(reason: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid request path: {reason}.", code="invalid_path")


def _check_segments(segments: list[bytes], what: str) -> None:
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if not segment:
            if index != last:  # a trailing "/" is fine; "//" is not
                raise _refuse(f"empty {what} segment ('//')")
            continue
        if segment.lower().replace(b"%2e", b".") in (b".", b".."):
            raise _refuse("dot-segments ('.' or '..', plain or percent-encoded) are not allowed")


def checked_path(raw: bytes, *, encoded_slash: bool = False) -> str:
    """``raw`` (a percent-encoded absolute path) as it may go into an upstream
    URL, or :class:`InvalidRequest` (:class:`URITooLong` past
    :data:`MAX_PATH_BYTES`). ``encoded_slash`` lets ``%2F`` through (an id
    that contains "/", as the OpenAI SDK encodes model ids); the pieces it
    separates are checked as segments too. Raw bytes outside RFC 3986's
    path characters (non-ASCII, '"', '`', ...) come out percent-encoded."""
    if len(raw) > MAX_PATH_BYTES:
        raise URITooLong(f"The request path is longer than {MAX_PATH_BYTES} bytes.")
    if not raw.startswith(b"/"):
        raise _refuse("it must start with '/'")
    if _BAD_RAW.search(raw):
        raise _refuse("control characters, spaces, '\\', '#' and '?' are not allowed in it")
    if _BAD_PERCENT.search(raw):
        raise _refuse("'%' must start a two-digit hex escape")
    if _BAD_ESCAPE.search(raw):
        raise _refuse("encoded control characters, '\\', '#' and '?' (%00-%1F, %7F, %5C, %23, %3F) are not allowed")
    segments = raw.split(b"/")[1:]
    _check_segments(segments, "path")
    if _ENCODED_SLASH.search(raw):
        if not encoded_slash:
            raise _refuse("an encoded '/' (%2F) is not allowed here")
        _check_segments(re.split(rb"/|%2[Ff]", raw)[1:], "id")
    if _TO_ENCODE.search(raw):
        raw = _TO_ENCODE.sub(lambda match: b"%%%02X" % match.group()[0], raw)
    return raw.decode("ascii")


def raw_route_path(scope: Scope) -> bytes:
    """The path below ``root_path`` as the client sent it (``raw_path``), or
    ``path`` re-encoded when the server gives no ``raw_path``."""
    raw = scope.get("raw_path")
    root: str = scope.get("root_path", "")
    if not isinstance(raw, (bytes, bytearray)) or not raw:
        raw = quote(scope["path"], safe=_PATH_SAFE).encode("ascii")
    else:
        raw = bytes(raw).partition(b"?")[0]  # a server may leave the query on raw_path
    root_raw = root.encode("utf-8")
    if root_raw and raw.startswith(root_raw):
        raw = raw[len(root_raw) :] or b"/"
    return raw


def api_path(scope: Scope, prefix: str) -> str:
    """The checked raw path below ``prefix`` (``"/responses"``, ``"/models/a%2Fb"``).

    Only a model id (``/models/{id}``) may contain an encoded "/". A prefix
    the client percent-encoded is refused rather than decoded, so that what
    is routed and what is forwarded are the same bytes.
    """
    raw = raw_route_path(scope)
    head = prefix.encode("ascii") + b"/"
    if not raw.startswith(head):
        raise _refuse(f"the API prefix '{prefix}/' must be sent unencoded")
    rest = raw[len(prefix) :]
    model_id = rest.startswith(b"/models/") and rest.count(b"/") == 2
    return checked_path(rest, encoded_slash=model_id)


def app_path(raw: str) -> str:
    """The decoded ``path`` of an ASGI scope whose ``raw_path`` is ``raw``."""
    return unquote(raw)
