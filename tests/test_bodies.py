"""Compressed request bodies: round trips, any chunking, zip bombs, broken streams."""

from __future__ import annotations

import asyncio
import gzip
import time
import tracemalloc
import zlib
from collections.abc import Callable

import orjson
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compat_asgi import bodies
from compat_asgi.asgi import ClientGone
from compat_asgi.bodies import (
    BodyDecoder,
    check_json_depth,
    decoder_for,
    json_too_deep,
    nesting_exceeds,
    read_decoded_body,
)
from compat_asgi.errors import InvalidRequest, RequestTooLarge, UnsupportedMediaType
from compat_asgi.types import Message, Receive

MiB = 1 << 20
LIMIT = MiB
BODY = b'{"model": "demo", "input": "' + b"hello, compressed world " * 2000 + b'"}'


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(write_checksum=True).compress(data)


CODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,
    "zstd": zstd,
}


def encode(data: bytes, encoding: str) -> bytes:
    """``data`` with the codings of a Content-Encoding list applied in order."""
    for token in encoding.split(","):
        name = token.strip().lower()
        if name and name != "identity":
            data = CODERS[name](data)
    return data


def decode(encoding: str, chunks: list[bytes], limit: int = LIMIT) -> bytes:
    decoder = BodyDecoder(encoding, limit)
    return b"".join(decoder.feed(chunk) for chunk in chunks) + decoder.close()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


ENCODINGS = ["gzip", "x-gzip", "deflate", "zstd", "gzip, zstd", "zstd, gzip", "deflate, identity", "GZip", "identity"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_round_trip_whole_and_byte_by_byte(encoding: str) -> None:
    encoded = encode(BODY, encoding)
    assert decode(encoding, [encoded]) == BODY
    assert decode(encoding, [encoded[i : i + 1] for i in range(len(encoded))]) == BODY


def test_raw_deflate_is_accepted_too() -> None:
    encoded = raw_deflate(BODY)
    assert decode("deflate", [encoded]) == BODY
    assert decode("deflate", [encoded[i : i + 1] for i in range(len(encoded))]) == BODY


def test_several_gzip_members_and_zstd_frames_are_one_body() -> None:
    assert decode("gzip", [gzip.compress(b"abc") + gzip.compress(b"def")]) == b"abcdef"
    frames = zstd(b"abc") + zstd(b"") + zstd(b"def")
    assert decode("zstd", [frames]) == b"abcdef"
    assert decode("zstd", [frames[i : i + 1] for i in range(len(frames))]) == b"abcdef"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd", "gzip, zstd"])
def test_no_bytes_at_all_is_an_empty_body(encoding: str) -> None:
    assert decode(encoding, []) == b""
    assert decode(encoding, [b"", b""]) == b""


payloads = st.one_of(
    st.binary(max_size=3000),
    st.builds(lambda unit, n: unit * n, st.binary(min_size=1, max_size=40), st.integers(1, 2000)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payload=payloads,
    encoding=st.sampled_from(["gzip", "deflate", "zstd", "gzip, zstd", "zstd, deflate", "raw-deflate"]),
    data=st.data(),
)
def test_any_chunking_decodes_identically(payload: bytes, encoding: str, data: st.DataObject) -> None:
    if encoding == "raw-deflate":
        encoding, encoded = "deflate", raw_deflate(payload)
    else:
        encoded = encode(payload, encoding)
    cuts = data.draw(st.lists(st.integers(0, len(encoded)), max_size=12))
    whole = decode(encoding, [encoded])
    assert whole == payload
    assert decode(encoding, split(encoded, cuts)) == whole
    assert decode(encoding, [encoded[i : i + 1] for i in range(len(encoded))]) == whole


@pytest.mark.parametrize("encoding", ["identity", "gzip", "deflate", "zstd", "gzip, zstd"])
def test_limit_is_on_the_decoded_size(encoding: str) -> None:
    payload = b"x" * 1000
    encoded = encode(payload, encoding)
    assert decode(encoding, [encoded], limit=1000) == payload
    with pytest.raises(RequestTooLarge) as caught:
        decode(encoding, [encoded], limit=999)
    assert caught.value.status == 413
    with pytest.raises(RequestTooLarge):
        decode(encoding, [encoded[i : i + 1] for i in range(len(encoded))], limit=999)


ZEROS = bytes(50 * MiB)


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    gzipped = gzip.compress(ZEROS, compresslevel=9)
    return {
        "gzip": gzipped,
        "deflate": zlib.compress(ZEROS, 9),
        "zstd": zstandard.ZstdCompressor(level=19).compress(ZEROS),
        # The inner stage is the bomb: zstd over a gzip body that inflates to 50 MiB.
        "gzip, zstd": zstandard.ZstdCompressor().compress(gzipped),
    }


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd", "gzip, zstd"])
@pytest.mark.parametrize("chunk", [None, 16 << 10])
def test_zip_bomb_is_refused_with_bounded_memory(bombs: dict[str, bytes], encoding: str, chunk: int | None) -> None:
    bomb = bombs[encoding]
    assert len(bomb) < 100 << 10  # small on the wire, 50 MiB decoded
    chunks = [bomb] if chunk is None else split(bomb, list(range(chunk, len(bomb), chunk)))
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(RequestTooLarge):
            decode(encoding, chunks, limit=1 * MiB)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Inflating 50 MiB of zeros whole would take far more of both.
    assert elapsed < 2.0
    assert peak < 8 * MiB, peak


def test_zstd_window_over_8mb_is_refused() -> None:
    # RFC 9659 caps a zstd content coding's window at 8 MB, which bounds the decoder's memory.
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=24)
    # Streamed, so the frame has no content size and must declare its window.
    compressor = zstandard.ZstdCompressor(compression_params=params).compressobj()
    big_window = compressor.compress(b"x" * 100) + compressor.flush()
    ok = zstandard.ZstdCompressionParameters.from_level(3, window_log=23)
    compressor = zstandard.ZstdCompressor(compression_params=ok).compressobj()
    assert decode("zstd", [compressor.compress(b"x" * 100) + compressor.flush()]) == b"x" * 100
    with pytest.raises(InvalidRequest) as caught:
        decode("zstd", [big_window])
    assert caught.value.code == "invalid_body_encoding"


def truncations(encoded: bytes) -> list[bytes]:
    return [encoded[:1], encoded[: len(encoded) // 2], encoded[:-1]]


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd", "gzip, zstd"])
def test_truncated_streams_are_invalid(encoding: str) -> None:
    for cut in truncations(encode(BODY, encoding)):
        for chunks in ([cut], [cut[i : i + 1] for i in range(len(cut))]):
            with pytest.raises(InvalidRequest) as caught:
                decode(encoding, chunks)
            assert caught.value.status == 400
            assert caught.value.code == "invalid_body_encoding"


def test_truncated_raw_deflate_is_invalid() -> None:
    for cut in truncations(raw_deflate(BODY)):
        with pytest.raises(InvalidRequest) as caught:
            decode("deflate", [cut])
        assert caught.value.code == "invalid_body_encoding"


def corruptions(encoded: bytes) -> list[bytes]:
    middle = len(encoded) // 2
    flipped = encoded[:middle] + bytes([encoded[middle] ^ 0xFF]) + encoded[middle + 1 :]
    last = encoded[:-1] + bytes([encoded[-1] ^ 0xFF])  # the checksum
    return [b"this was never compressed", flipped, last, encoded + b"trailing garbage"]


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd", "zstd, gzip"])
def test_corrupt_streams_are_invalid(encoding: str) -> None:
    for corrupt in corruptions(encode(BODY, encoding)):
        with pytest.raises(InvalidRequest) as caught:
            decode(encoding, [corrupt])
        assert caught.value.code == "invalid_body_encoding"
        assert caught.value.status == 400


def test_corruption_is_reported_by_feed_not_only_close() -> None:
    decoder = BodyDecoder("gzip", LIMIT)
    with pytest.raises(InvalidRequest):
        decoder.feed(b"\x1f\x8b\x08\x00garbage-garbage-garbage")


@pytest.mark.parametrize("encoding", ["br", "compress", "gzip, br", "x-compress", "snappy"])
def test_unknown_encodings_are_unsupported(encoding: str) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        BodyDecoder(encoding, LIMIT)
    error = caught.value
    assert error.status == 415
    assert error.param is None
    assert encoding.split(",")[-1].strip() in error.message
    assert "gzip" in error.message and "zstd" in error.message
    assert (b"accept-encoding", b"gzip, deflate, zstd") in error.headers


def test_zstd_without_the_extra_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bodies, "_zstd_available", lambda: False)
    for encoding in ("zstd", "gzip, zstd"):
        with pytest.raises(UnsupportedMediaType) as caught:
            BodyDecoder(encoding, LIMIT)
        assert "compat-asgi[zstd]" in caught.value.message
        assert (b"accept-encoding", b"gzip, deflate") in caught.value.headers
    assert decode("gzip", [gzip.compress(b"still fine")]) == b"still fine"


def test_decoder_for() -> None:
    assert decoder_for([], LIMIT) is None
    assert decoder_for([(b"content-type", b"application/json")], LIMIT) is None
    assert decoder_for([(b"content-encoding", b"identity")], LIMIT) is None
    assert decoder_for([(b"content-encoding", b" Identity ")], LIMIT) is None
    decoder = decoder_for([(b"content-encoding", b"gzip")], LIMIT)
    assert isinstance(decoder, BodyDecoder)
    assert decoder.feed(gzip.compress(b"x")) + decoder.close() == b"x"
    # Repeated header lines are one list, in order.
    stacked = decoder_for([(b"content-encoding", b"gzip"), (b"content-encoding", b"zstd")], LIMIT)
    assert stacked is not None
    assert stacked.feed(encode(b"y", "gzip, zstd")) + stacked.close() == b"y"
    with pytest.raises(UnsupportedMediaType):
        decoder_for([(b"content-encoding", b"br")], LIMIT)


def fake_receive(*messages: Message) -> Receive:
    pending = list(messages)

    async def receive() -> Message:
        return pending.pop(0)

    return receive


def body_messages(data: bytes, size: int) -> list[Message]:
    chunks = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
    return [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1} for i, chunk in enumerate(chunks)
    ]


@pytest.mark.parametrize("encoding", ["gzip", "zstd", "gzip, zstd"])
def test_read_decoded_body_over_several_messages(encoding: str) -> None:
    encoded = encode(BODY, encoding)
    messages = body_messages(encoded, 10)
    assert len(messages) > 3
    headers = [(b"content-type", b"application/json"), (b"content-encoding", encoding.encode())]
    assert asyncio.run(read_decoded_body(fake_receive(*messages), headers, LIMIT)) == BODY


def test_read_decoded_body_without_encoding_and_with_empty_messages() -> None:
    messages: list[Message] = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"", "more_body": True},
        {"type": "http.request", "body": b"cd"},
    ]
    assert asyncio.run(read_decoded_body(fake_receive(*messages), [], LIMIT)) == b"abcd"
    assert asyncio.run(read_decoded_body(fake_receive({"type": "http.request"}), [], LIMIT)) == b""


def test_read_decoded_body_refuses_a_bomb(bombs: dict[str, bytes]) -> None:
    messages = body_messages(bombs["zstd"], 512)
    headers = [(b"content-encoding", b"zstd")]
    with pytest.raises(RequestTooLarge):
        asyncio.run(read_decoded_body(fake_receive(*messages), headers, LIMIT))


def test_read_decoded_body_caps_the_encoded_size_too() -> None:
    # Empty gzip members: the encoded body grows while the decoded one stays empty.
    encoded = gzip.compress(b"") * 300
    assert len(encoded) > 4000
    headers = [(b"content-encoding", b"gzip")]
    assert asyncio.run(read_decoded_body(fake_receive(*body_messages(encoded, 1000)), headers, 10_000)) == b""
    with pytest.raises(RequestTooLarge) as caught:
        asyncio.run(read_decoded_body(fake_receive(*body_messages(encoded, 1000)), headers, 4000))
    assert not caught.value.message.startswith("Decoded")


def test_read_decoded_body_checks_content_length_before_reading() -> None:
    async def receive() -> Message:
        raise AssertionError("the body should not be read")

    headers = [(b"content-length", b"2000"), (b"content-encoding", b"gzip")]
    with pytest.raises(RequestTooLarge):
        asyncio.run(read_decoded_body(receive, headers, 1000))


def test_read_decoded_body_errors() -> None:
    encoded = gzip.compress(BODY)
    gone: list[Message] = [{"type": "http.request", "body": encoded[:10], "more_body": True}, {"type": "http.disconnect"}]
    with pytest.raises(ClientGone):
        asyncio.run(read_decoded_body(fake_receive(*gone), [(b"content-encoding", b"gzip")], LIMIT))
    cut = body_messages(encoded[:-4], 50)
    with pytest.raises(InvalidRequest):
        asyncio.run(read_decoded_body(fake_receive(*cut), [(b"content-encoding", b"gzip")], LIMIT))
    with pytest.raises(UnsupportedMediaType):
        asyncio.run(read_decoded_body(fake_receive(*cut), [(b"content-encoding", b"br")], LIMIT))


# -- JSON nesting depth ------------------------------------------------------------

_JSON_TEXT = st.text(alphabet=st.sampled_from('[]{}"\\ab\n\u2028'), max_size=8)
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | _JSON_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_JSON_TEXT, inner, max_size=3),
    max_leaves=30,
)


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


@given(_JSON_VALUES, st.integers(min_value=0, max_value=8))
@settings(max_examples=300, deadline=None)
def test_depth_by_bytes_and_by_walk_agree_with_the_real_depth(value: object, limit: int) -> None:
    """Brackets, quotes and backslashes inside strings never count as nesting."""
    body = orjson.dumps(value)
    expected = _depth(value) > limit
    assert json_too_deep(body, limit) is expected
    assert nesting_exceeds(value, limit) is expected


def test_depth_check_refuses_past_the_parser_and_leaves_non_json_alone() -> None:
    def unparseable() -> object:
        raise InvalidRequest("not JSON")

    with pytest.raises(InvalidRequest) as refused:
        check_json_depth(b"[" * 2000 + b"]" * 2000, 128, unparseable)
    assert refused.value.code == "json_too_deep"
    check_json_depth(b"--boundary\r\n" + b"[" * 2000, 128, unparseable)  # a multipart upload
    check_json_depth(b"[" * 128 + b"]" * 128, 128, lambda: orjson.loads(b"[" * 128 + b"]" * 128))
