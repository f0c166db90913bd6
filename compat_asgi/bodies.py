"""Decoding compressed request bodies (``Content-Encoding``), sans-io.

Coding-agent clients compress their large request bodies (Codex sends zstd,
others gzip). The body limit applies to the *decoded* size and is enforced
while decoding: every decompressor call is bounded by the room left under the
limit, so a small body that inflates without end (a zip bomb) is refused with
413 after at most ``limit`` plus about one block of output, never inflated whole.
"""

from __future__ import annotations

import array
import functools
import itertools
import zlib
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from compat_asgi.errors import InvalidRequest, RequestTooLarge, UnsupportedMediaType
from compat_asgi.types import Receive

__all__ = ["BodyDecoder", "decoder_for", "read_decoded_body", "json_too_deep", "nesting_exceeds", "check_json_depth"]

_ALIASES = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate", "zstd": "zstd", "identity": "identity"}
_GZIP_WBITS = 16 + zlib.MAX_WBITS
# RFC 9659: a zstd content coding must not need a window over 8 MB, so the
# decoder's memory stays bounded whatever window a frame header claims.
_ZSTD_MAX_WINDOW = 8 << 20
# The largest output one zstd block can produce (RFC 8878 Block_Maximum_Size).
_ZSTD_BLOCK = 128 << 10
# A zstd block with any output takes at least 4 input bytes (an RLE block), so
# feeding 4*n bytes yields at most n + 1 blocks (one may have begun earlier).
_ZSTD_MIN_BLOCK_INPUT = 4
# Each step yields little output, and zstandard allocates this buffer per call.
_ZSTD_WRITE_SIZE = 32 << 10


def _invalid(coding: str, reason: object) -> InvalidRequest:
    return InvalidRequest(
        f"Could not decode the request body as Content-Encoding {coding}: {reason}.",
        code="invalid_body_encoding",
    )


def _too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(f"Decoded request body exceeds the limit of {limit} bytes.")


@functools.cache
def _zstd_available() -> bool:
    # An optional extra: without it zstd bodies get 415, everything else works.
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True


def _supported() -> str:
    return "gzip, deflate, zstd" if _zstd_available() else "gzip, deflate"


def _unsupported(message: str) -> UnsupportedMediaType:
    # RFC 9110 section 15.5.16: a 415 for a content coding says which are accepted.
    return UnsupportedMediaType(message, headers=[(b"accept-encoding", _supported().encode())])


class _Stage(Protocol):
    def feed(self, data: bytes) -> bytes: ...

    def close(self) -> bytes: ...


class _Inflate:
    """gzip (any number of members) or deflate (zlib-wrapped or raw)."""

    __slots__ = ("_coding", "_limit", "_total", "_z", "_head", "_ended")

    def __init__(self, coding: str, limit: int) -> None:
        self._coding = coding
        self._limit = limit
        self._total = 0
        self._z: zlib._Decompress | None = None
        # deflate: the first bytes, held until there are two to tell zlib from raw.
        self._head = b""
        self._ended = False

    def _start(self, data: bytes) -> bytes | None:
        """Make the decompressor for the next stream; None while undecidable."""
        if self._coding == "gzip":
            self._z = zlib.decompressobj(_GZIP_WBITS)
            return data
        if self._ended:
            raise _invalid(self._coding, "data after the end of the stream")
        data = self._head + data
        if len(data) < 2:
            self._head = data
            return None
        self._head = b""
        cmf, flg = data[0], data[1]
        is_zlib = cmf & 0x0F == 8 and cmf >> 4 <= 7 and (cmf << 8 | flg) % 31 == 0
        # HTTP's deflate is zlib-wrapped, but some clients send raw deflate.
        self._z = zlib.decompressobj(zlib.MAX_WBITS if is_zlib else -zlib.MAX_WBITS)
        return data

    def feed(self, data: bytes) -> bytes:
        parts: list[bytes] = []
        try:
            while data:
                if self._z is None:
                    started = self._start(data)
                    if started is None:
                        break
                    data = started
                z = self._z
                assert z is not None
                # One byte past the room left: getting it proves the limit is exceeded.
                out = z.decompress(data, self._limit - self._total + 1)
                self._total += len(out)
                if self._total > self._limit:
                    raise _too_large(self._limit)
                parts.append(out)
                if z.eof:
                    # gzip allows several members back to back; deflate does not.
                    data = z.unused_data
                    self._z = None
                    self._ended = True
                else:
                    data = z.unconsumed_tail
        except zlib.error as exc:
            raise _invalid(self._coding, exc) from None
        return b"".join(parts)

    def close(self) -> bytes:
        if self._z is not None or self._head:
            raise _invalid(self._coding, "the stream is truncated")
        return b""


class _Unzstd:
    """zstd, any number of frames."""

    __slots__ = ("_limit", "_total", "_dctx", "_frame", "_error")

    def __init__(self, limit: int) -> None:
        import zstandard

        self._limit = limit
        self._total = 0
        self._dctx = zstandard.ZstdDecompressor(max_window_size=_ZSTD_MAX_WINDOW)
        self._frame: zstandard.ZstdDecompressionObj | None = None
        self._error = zstandard.ZstdError

    def feed(self, data: bytes) -> bytes:
        parts: list[bytes] = []
        pos = 0
        try:
            while pos < len(data):
                if self._frame is None:
                    # One object per frame: only a single-frame object reports
                    # eof, which is how close() tells a whole body from a cut one.
                    self._frame = self._dctx.decompressobj(write_size=_ZSTD_WRITE_SIZE)
                # zstandard's decompress has no max_length, so bound its output
                # through its input: at most the room left plus two blocks.
                blocks = (self._limit - self._total) // _ZSTD_BLOCK + 1
                piece = data[pos : pos + _ZSTD_MIN_BLOCK_INPUT * blocks]
                out = self._frame.decompress(piece)
                self._total += len(out)
                if self._total > self._limit:
                    raise _too_large(self._limit)
                parts.append(out)
                pos += len(piece)
                if self._frame.eof:
                    pos -= len(self._frame.unused_data)
                    self._frame = None
        except self._error as exc:
            raise _invalid("zstd", exc) from None
        return b"".join(parts)

    def close(self) -> bytes:
        if self._frame is not None:
            raise _invalid("zstd", "the stream is truncated")
        return b""


class BodyDecoder:
    """Incremental decoder for one request body's Content-Encoding.

    ``encoding`` is the header value: ``gzip`` (or ``x-gzip``), ``deflate``,
    ``zstd``, ``identity``, or a comma list of them in the order they were
    applied. ``feed`` returns the decoded bytes of each chunk and raises
    :class:`RequestTooLarge` as soon as the decoded total exceeds ``limit``;
    ``close`` ends the body. A corrupt or truncated stream raises
    :class:`InvalidRequest` (``invalid_body_encoding``). A body of no bytes at
    all decodes to no bytes whatever the coding, so bodiless requests that
    carry the header are not refused.
    """

    __slots__ = ("encoding", "limit", "_stages", "_total")

    def __init__(self, encoding: str, limit: int) -> None:
        self.encoding = encoding
        self.limit = limit
        codings: list[str] = []
        for token in encoding.split(","):
            name = token.strip().lower()
            if not name:
                continue
            coding = _ALIASES.get(name)
            if coding is None:
                raise _unsupported(
                    f"Content-Encoding {token.strip()!r} is not supported; "
                    f"use {_supported()} or identity."
                )
            if coding == "zstd" and not _zstd_available():
                raise _unsupported(
                    "Content-Encoding 'zstd' needs the zstandard package on the server: "
                    "pip install 'compat-asgi[zstd]'."
                )
            if coding != "identity":
                codings.append(coding)
        # Codings are listed in the order applied, so they come off in reverse.
        self._stages: list[_Stage] = [
            _Unzstd(limit) if coding == "zstd" else _Inflate(coding, limit) for coding in reversed(codings)
        ]
        self._total = 0

    def feed(self, data: bytes) -> bytes:
        for stage in self._stages:
            if not data:
                return b""
            data = stage.feed(data)
        return self._count(data)

    def close(self) -> bytes:
        data = b""
        for stage in self._stages:
            data = stage.feed(data) + stage.close()
        return self._count(data)

    def _count(self, data: bytes) -> bytes:
        # The stages bound their own output; this also covers identity.
        self._total += len(data)
        if self._total > self.limit:
            raise _too_large(self.limit)
        return data


def _content_encoding(headers: Iterable[tuple[bytes, bytes]]) -> str:
    # Repeated header lines are one comma list (RFC 9110 section 5.3).
    values = [value.decode("latin-1") for name, value in headers if name.lower() == b"content-encoding"]
    return ", ".join(values)


def _is_identity(encoding: str) -> bool:
    return all(token.strip().lower() in ("", "identity") for token in encoding.split(","))


def decoder_for(headers: Iterable[tuple[bytes, bytes]], limit: int) -> BodyDecoder | None:
    """The decoder for a request's ``Content-Encoding``, or None when the body is not encoded."""
    encoding = _content_encoding(headers)
    if _is_identity(encoding):
        return None
    return BodyDecoder(encoding, limit)


async def read_decoded_body(receive: Receive, headers: Iterable[tuple[bytes, bytes]], limit: int) -> bytes:
    """The request body, decoded, refused with 413 once either its encoded or its
    decoded size is known to exceed ``limit``."""
    headers = list(headers)
    for name, value in headers:
        if name.lower() == b"content-length" and value.isdigit() and int(value) > limit:
            raise RequestTooLarge(f"Request body exceeds the limit of {limit} bytes.")
    decoder = decoder_for(headers, limit)
    body = bytearray()
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            # Imported here: compat_asgi.asgi may import this module.
            from compat_asgi.asgi import ClientGone

            raise ClientGone()
        chunk: bytes = message.get("body", b"")
        received += len(chunk)
        if received > limit:
            raise RequestTooLarge(f"Request body exceeds the limit of {limit} bytes.")
        if decoder is None:
            body += chunk
        elif chunk:
            body += decoder.feed(chunk)
        if not message.get("more_body", False):
            if decoder is not None:
                body += decoder.close()
            return bytes(body)


# Keep only brackets, as +1 and -1 in signed bytes: their running sum is the depth.
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


def json_too_deep(body: bytes, limit: int) -> bool:
    """Whether the bytes of ``body`` (valid JSON or not) nest arrays/objects
    more than ``limit`` deep, without parsing and without recursion.

    Strings are cut out (escaped backslashes and quotes removed first, so
    every quote left delimits a string) and the depth is the highest running
    sum of the brackets left, all in C.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    outside = b"".join(body.replace(b"\\\\", b"").replace(b'\\"', b"").split(b'"')[::2])
    steps = array.array("b", outside.translate(_BRACKET_STEPS, _NOT_BRACKETS))
    return max(itertools.accumulate(steps), default=0) > limit


_IS_CONTAINER = (dict, list).__contains__
# Up to this many brackets a body is parsed (the handler reuses the parse) and
# its containers walked; past it, the byte scan is cheaper than a Python loop.
_WALK_BRACKETS = 4096


def nesting_exceeds(value: Any, limit: int) -> bool:
    """Whether parsed JSON ``value`` nests arrays/objects more than ``limit``
    deep: level by level, a Python step per container (never per scalar: the
    children are filtered in C), stopping at the first level past ``limit``."""
    level: list[Any] = [value] if type(value) in (dict, list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        deeper: list[Any] = []
        for node in level:
            children = node.values() if type(node) is dict else node
            deeper.extend(itertools.compress(children, map(_IS_CONTAINER, map(type, children))))
        level = deeper
    return False


def check_json_depth(body: bytes, limit: int, parsed: Callable[[], Any]) -> None:
    """Refuse (400) a JSON body nested deeper than ``limit``, before any work
    is done on it. ``parsed`` returns the parsed body (raising
    :class:`InvalidRequest` when it is not JSON). Most requests cost two
    counts; only bodies with more than ``limit`` brackets are looked into."""
    brackets = body.count(b"[") + body.count(b"{")
    if brackets <= limit or body.lstrip()[:1] not in (b"{", b"["):
        return
    value: Any = None
    if brackets <= _WALK_BRACKETS:
        try:
            value = parsed()
        except InvalidRequest:
            pass  # not JSON, or deeper than the parser goes (orjson: 1,024 levels)
    if value is not None:
        too_deep = nesting_exceeds(value, limit)
    else:
        too_deep = json_too_deep(body, limit)
    if not too_deep:
        return
    field = None
    if isinstance(value, dict):
        field = next((str(k) for k, v in value.items() if nesting_exceeds(v, limit - 1)), None)
    raise InvalidRequest(
        f"The JSON body nests arrays and objects more than {limit} levels deep.",
        param=field,
        code="json_too_deep",
    )
