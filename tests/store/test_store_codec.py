"""Properties of the byte formats: the record codec and the RESP2 reply reader."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from compat_asgi.store import StoredResponse
from compat_asgi.store.codec import decode_record, encode_record
from compat_asgi.store.resp import Reply, _read_reply

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(
    response=st.dictionaries(st.text(), json_values, max_size=5),
    input_items=st.lists(st.dictionaries(st.text(), json_values, max_size=3), max_size=3),
    events=st.none() | st.binary(),
    owner=st.none() | st.text(),
)
def test_record_codec_round_trips(
    response: dict[str, Any], input_items: list[dict[str, Any]], events: bytes | None, owner: str | None
) -> None:
    record = StoredResponse("resp_1", owner, response, input_items, events, 1_700_000_000)
    assert decode_record(encode_record(record)) == record


def encode_reply(reply: Reply) -> bytes:
    if reply is None:
        return b"$-1\r\n"
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if isinstance(reply, str):
        return b"+" + reply.encode() + b"\r\n"
    if isinstance(reply, bytes):
        return b"$%d\r\n%s\r\n" % (len(reply), reply)
    return b"*%d\r\n" % len(reply) + b"".join(encode_reply(r) for r in reply)


replies: st.SearchStrategy[Reply] = st.recursive(
    st.none()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)))
    | st.binary(),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=12,
)


@given(reply=replies, data=st.data())
def test_reply_reader_at_any_split(reply: Reply, data: st.DataObject) -> None:
    wire = encode_reply(reply)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))

    async def scenario() -> Reply:
        reader = asyncio.StreamReader()

        async def feed() -> None:
            # Chunks arrive while the reader waits, as from a socket.
            start = 0
            for cut in [*cuts, len(wire)]:
                await asyncio.sleep(0)
                reader.feed_data(wire[start:cut])
                start = cut

        feeder = asyncio.create_task(feed())
        reply = await _read_reply(reader)
        await feeder
        reader.feed_data(b"+NEXT\r\n")
        assert await _read_reply(reader) == "NEXT"  # exactly one reply was consumed
        return reply

    assert asyncio.run(scenario()) == reply
